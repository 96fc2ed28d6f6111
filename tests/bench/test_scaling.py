"""bench/scaling.py pieces that run without root: the skip message and the start-up byte model."""
from __future__ import annotations

import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import netns  # noqa: E402
import scaling  # noqa: E402

from poseidon_cli.plan import LayerSpec, ParamSpec  # noqa: E402


def test_skips_with_a_clear_message_without_namespaces(monkeypatch, capsys):
    def unavailable():
        raise netns.NetnsUnavailable("network namespaces need root (run as root, e.g. sudo)")
    monkeypatch.setattr(netns, "check_available", unavailable)
    assert scaling.main(["--nodes", "1,2"]) == 0
    assert capsys.readouterr().out.strip() == (
        "bench/scaling.py skipped: network namespaces need root (run as root, e.g. sudo)")


def test_startup_bytes_by_hand():
    # 4 nodes: each PS parameter is pulled once, every shard serving 3 of 4 workers its quarter:
    # per node 3/4 of the tensor in and 3/4 out; an SFB weight (and its SGD history) goes from
    # worker 0 to 3 peers, 2 * 3 * size over 4 nodes.
    layers = [LayerSpec("conv", 1, 1, [ParamSpec((100,))]),
              LayerSpec("fc", 1, 1, [ParamSpec((4096, 4096), ip=(4096, 4096, 32))])]
    conv = 2 * 100 * 4 * 3 / 4
    fc = 2 * 2 * 4096 * 4096 * 4 * 3 / 4
    assert scaling.startup_bytes(layers, 4, "on") == pytest.approx(conv + fc)
    assert scaling.startup_bytes(layers, 4, "off") == pytest.approx(conv + fc / 2)


def test_cluster_runs_display_no_iteration(tmp_path):
    # A display iteration averages the loss over every worker, a barrier at that clock: with
    # display 1 the s=2 runs of the straggler row ran like s=0 (issue 18). The single-node
    # check of emulate_check.py keeps its per-iteration display lines.
    from poseidon_cli import config
    solver = scaling.cluster_solver(tmp_path, tmp_path / "net.prototxt", 7)
    param = config.load_solver_param(str(solver))
    assert param.display == 0 and param.max_iter == 7
    (tmp_path / "single").mkdir()
    single = scaling.write_solver(tmp_path / "single", tmp_path / "net.prototxt", 7)
    assert config.load_solver_param(str(single)).display == 1
