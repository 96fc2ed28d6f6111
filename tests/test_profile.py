"""profile: `poseidon time --json` writes a per-layer profile that read_profile gives back, and a
malformed file is one error naming the file and the field."""
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from poseidon_cli import profile
from poseidon_cli.cli import main
from poseidon_cli.errors import ConfigError
from poseidon_cli.timing import time_net

NET = '''
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label"
        data_param { source: "%s/nowhere_mnist_lmdb" batch_size: 4 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''

# learnable elements, counted by hand: conv 2 filters of 1x5x5 + 2 biases; ip reads the
# 2x12x12 pooled map (28-5+1 = 24, halved) into 10 outputs + 10 biases
PARAMS = {"data": 0, "conv": 2 * 25 + 2, "pool": 0, "ip": 10 * 2 * 12 * 12 + 10, "loss": 0}


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET % tmp_path)
    return path


def test_time_json_round_trip(model, tmp_path):
    out = tmp_path / "prof" / "tiny.json"
    text = io.StringIO()
    assert time_net(str(model), iterations=2, xp=np, out=text, json_path=str(out)) == 0
    assert f"wrote profile {out}" in text.getvalue()
    prof = profile.read_profile(out)
    assert prof.net == "tiny" and prof.batch == 4 and prof.phase == "TRAIN"
    assert prof.iterations == 2 and prof.model == str(model)
    assert prof.device.startswith("CPU: ")
    assert [lt.name for lt in prof.layers] == list(PARAMS)
    assert [lt.type for lt in prof.layers] == ["Input", "Convolution", "Pooling", "InnerProduct",
                                               "SoftmaxWithLoss"]
    assert {lt.name: lt.param_count for lt in prof.layers} == PARAMS
    # the printed report and the file carry the same per-layer numbers
    for lt in prof.layers:
        assert f"{lt.name}\tforward: {lt.forward_ms:.5g} ms." in text.getvalue()
        assert f"{lt.name}\tbackward: {lt.backward_ms:.5g} ms." in text.getvalue()
    # the whole pass encloses its layers' intervals
    assert prof.forward_ms >= sum(lt.forward_ms for lt in prof.layers) * (1 - 1e-9)
    assert prof.backward_ms >= sum(lt.backward_ms for lt in prof.layers) * (1 - 1e-9)
    raw = json.loads(out.read_text())
    assert raw["format"] == "poseidon-profile" and raw["version"] == 1
    assert not (tmp_path / "prof" / "tiny.json.tmp").exists()


def test_cli_time_json(model, tmp_path):
    out = tmp_path / "cli.json"
    r = CliRunner().invoke(main, ["time", "--model", str(model), "--iterations", "1", "--cpu",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert profile.read_profile(out).layer("ip").param_count == PARAMS["ip"]


def _valid():
    return {"format": "poseidon-profile", "version": 1, "net": "n", "batch": 2,
            "device": "CPU: test", "layers": [
                {"name": "a", "type": "Input", "forward_ms": 0.5, "backward_ms": 0.0},
                {"name": "b", "type": "ReLU", "forward_ms": 1.0, "backward_ms": 2.0}]}


def test_optional_totals_default_to_the_layer_sums(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_valid()))
    prof = profile.read_profile(path)
    assert (prof.forward_ms, prof.backward_ms, prof.total_ms) == (1.5, 2.0, 3.5)
    assert prof.layer("b").param_count == 0
    with pytest.raises(KeyError):
        prof.layer("c")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="caffe"), "field 'format' must be 'poseidon-profile'"),
    (lambda d: d.update(version=2), "profile version 2 is not supported"),
    (lambda d: d.pop("batch"), "missing field 'batch'"),
    (lambda d: d.update(batch=0), "field 'batch' must be at least 1"),
    (lambda d: d.update(layers=[]), "field 'layers' must be a non-empty list"),
    (lambda d: d["layers"][1].update(backward_ms=-1), "layers[1]: field 'backward_ms' must be"),
    (lambda d: d["layers"][0].update(forward_ms="1"), "layers[0]: field 'forward_ms' must be"),
    (lambda d: d["layers"][1].pop("type"), "layers[1]: missing field 'type'"),
    (lambda d: d["layers"][1].update(name="a"), "layer name 'a' appears twice"),
    (lambda d: d.update(device=""), "field 'device' must be a non-empty string"),
])
def test_malformed_profiles_name_file_and_field(tmp_path, edit, message):
    d = _valid()
    edit(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError) as exc:
        profile.read_profile(path)
    assert message in str(exc.value) and str(path) in str(exc.value)
    assert "\n" not in exc.value.one_line()


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "poseidon-profile",\n "version": 1,,}')
    with pytest.raises(ConfigError, match=r"bad\.json: line 2: not JSON"):
        profile.read_profile(path)
    with pytest.raises(ConfigError, match=r"no such profile .*poseidon time --model NET --json"):
        profile.read_profile(tmp_path / "none.json")


def test_write_refuses_an_invalid_profile_and_leaves_no_file(tmp_path):
    bad = profile.Profile(net="n", batch=0, device="CPU: x",
                          layers=[profile.LayerTime("a", "Input", 0.0, 0.0)])
    with pytest.raises(ConfigError, match="batch"):
        profile.write_profile(tmp_path / "p.json", bad)
    assert list(tmp_path.iterdir()) == []


def test_totals_left_out_are_the_layer_sums(tmp_path):
    p = profile.Profile(net="n", batch=1, device="CPU: x", layers=[
        profile.LayerTime("a", "ReLU", 1.25, 0.5), profile.LayerTime("b", "ReLU", 2.0, 0.25)])
    prof = profile.read_profile(profile.write_profile(tmp_path / "p.json", p))
    assert (prof.forward_ms, prof.backward_ms, prof.total_ms) == (3.25, 0.75, 4.0)
