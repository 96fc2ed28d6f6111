"""bench/profiles: the shipped GPU profiles fit their nets and follow from derive.py's sources."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROFILES = ROOT / "bench" / "profiles"
sys.path.insert(0, str(PROFILES))

import derive  # noqa: E402

from poseidon_cli import emulate  # noqa: E402
from poseidon_cli.net import Net  # noqa: E402

SHIPPED = sorted(PROFILES.glob("*.json"))
DAY = 86400.0


def test_every_listed_profile_is_shipped():
    names = {p.name for p in SHIPPED}
    assert {"alexnet_b256_k20.json", "alexnet_b256_a100.json", "googlenet_b32_k20.json",
            "googlenet_b32_a100.json"} <= names
    readme = (PROFILES / "README.md").read_text()
    for name in names:
        assert name in readme, f"{name} is not described in bench/profiles/README.md"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_profile_parses_and_sums(path):
    doc = json.loads(path.read_text())
    prof = emulate.parse_profile(doc, where=path.name)
    assert prof.iteration_ms == pytest.approx(doc["iteration_ms"], abs=0.01)
    assert doc["source"] and doc["derivation"]
    assert doc["images_per_s"] == pytest.approx(prof.batch / prof.iteration_ms * 1e3, rel=1e-3)


def test_k20_totals_are_the_published_run_times():
    # AlexNet: 6 days (midpoint of 5-7) for BVLC's 450,000 iterations
    alex = emulate.load_profile(PROFILES / "alexnet_b256_k20.json")
    assert alex.iteration_ms == pytest.approx(6 * DAY / 450000 * 1e3, abs=0.01)
    # GoogLeNet: 17.5 days (midpoint of 15-20) for the 2,400,000-iteration quick_solver schedule
    goog = emulate.load_profile(PROFILES / "googlenet_b32_k20.json")
    assert goog.iteration_ms == pytest.approx(17.5 * DAY / 2400000 * 1e3, abs=0.01)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_profile_fits_its_conformance_net(path, conformance_dir):
    prof = emulate.load_profile(path)
    net = Net(emulate.stand_in_param(str(conformance_dir / prof.extra["model"])), "TRAIN")
    emulate.apply(net, emulate.Emulation(prof))     # raises if batch or names do not fit
    assert sum(p.count for p in net.learnable_params) == prof.extra["params"]
    if "alexnet" in path.name:
        # published: fc6+fc7+fc8 = 37.75M + 16.78M + 4.10M of ~61M parameters
        assert prof.extra["params"] == 60965224


TINY = """
name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "fc" top: "loss" }
"""


def test_cost_model_by_hand(tmp_path):
    p = tmp_path / "t.prototxt"
    p.write_text(TINY)
    net = Net(str(p), "TRAIN")
    rows = {r[0]: r for r in derive.layer_costs(net)}
    # conv: top 2x4x3x3 = 72 outputs, fan-in 3*3*3 = 27: 2*72*27 FLOPs; its bottom is the data
    # (no gradient), so backward is the weight gradient only
    assert rows["conv"][2:4] == (2 * 72 * 27, 2 * 72 * 27)
    # fc: 2 rows x 7 outputs, fan-in 36; backward: weight and bottom gradients
    assert rows["fc"][2:4] == (2 * 14 * 36, 2 * 2 * 14 * 36)
    # relu in place: 72 elements read and written once forward, twice that backward
    assert rows["relu"][4:6] == (4 * 72, 2 * 4 * 72)
    assert "data" in rows and rows["data"][2:] == (0, 0, 0, 0)


def test_derive_reproduces_the_shipped_profiles(tmp_path, conformance_dir):
    r = subprocess.run([sys.executable, str(PROFILES / "derive.py"), "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for path in SHIPPED:
        assert json.loads((tmp_path / path.name).read_text()) == json.loads(path.read_text())
