"""``poseidon plan``: the predictor against timelines and byte counts worked out by hand."""
import json
import subprocess
import sys

import numpy as np
import pytest

from poseidon_cli import plan
from poseidon_cli.errors import ConfigError
from poseidon_cli.plan import LayerSpec, ParamSpec, simulate

# Two layers A (first) and B, 1 ms forward and 1 ms backward each, one parameter of 250 floats.
# With 2 nodes the PS moves 2*250*(2+2-2)/2*4 = 2000 bytes per node per iteration, 1000 each way:
# at 800 kbit/s that is 8000 bits / 8e5 = 10 ms on the link per layer.
RATE = 8e5


def two_layers():
    return [LayerSpec("A", 1.0, 1.0, [ParamSpec((250,))]),
            LayerSpec("B", 1.0, 1.0, [ParamSpec((250,))])]


def test_one_node_is_the_profile_sum():
    p = simulate(two_layers(), 1, RATE, batch=32)
    assert p.iteration_s == pytest.approx(0.004)
    assert p.speedup == pytest.approx(1.0)
    assert p.images_per_s == pytest.approx(32 / 0.004)
    assert p.bytes_per_node == 0


def test_bsp_waits_for_the_first_layer_whose_gradient_leaves_last():
    # Iteration i: fwd A, fwd B, bwd B (t), bwd A; B's update queues at t (10 ms), A's behind it
    # (10 ms). The next fwd A waits for A's update: period = 10 + 10 + fwd A + fwd B + bwd B.
    p = simulate(two_layers(), 2, RATE, staleness=0)
    assert p.iteration_s == pytest.approx(0.023)
    assert p.bytes_per_node == 2 * 2000
    assert p.speedup == pytest.approx(2 * 0.004 / 0.023)


def test_staleness_one_lets_the_link_run_flat_out():
    # 4 ms compute, 20 ms of link per iteration: with one clock of slack the link is the bound.
    p = simulate(two_layers(), 2, RATE, staleness=1)
    assert p.iteration_s == pytest.approx(0.020)


def test_without_overlap_communication_follows_the_whole_backward():
    p = simulate(two_layers(), 2, RATE, staleness=0, overlap=False)
    assert p.iteration_s == pytest.approx(0.004 + 0.020)


def test_fast_links_give_linear_speedup():
    for n in (2, 4, 8, 16):
        p = simulate(two_layers(), n, 1e15)
        assert p.speedup == pytest.approx(n, rel=1e-6)


def test_latency_adds_per_layer_message():
    p = simulate(two_layers(), 2, RATE, staleness=0, latency_s=0.001)
    assert p.iteration_s == pytest.approx(0.025)


def test_alexnet_fc6_bytes_by_hand():
    fc6 = LayerSpec("fc6", 1.0, 2.0, [ParamSpec((4096, 9216), ip=(4096, 9216, 256)),
                                      ParamSpec((4096,))])
    b, schemes = plan.layer_bytes(fc6, 8, "auto")
    sfb = 2 * 256 * 7 * (4096 + 9216) * 4          # K rows of M+N to and from 7 peers
    bias_ps = 2 * 4096 * 14 / 8 * 4               # 2 * count * (P1 + P2 - 2) / P2 floats
    assert schemes == ["sfb", "ps"]
    assert b == sfb + bias_ps
    b_off, schemes_off = plan.layer_bytes(fc6, 8, "off")
    assert schemes_off == ["ps", "ps"]
    assert b_off == 2 * 4096 * 9216 * 14 / 8 * 4 + bias_ps


def test_sfb_layer_pays_the_rebuild_before_its_forward():
    # fc: 2 ms backward, half of it the weight gradient; rebuilding from 2 workers' factors = 2 ms
    layers = [LayerSpec("fc", 1.0, 2.0, [ParamSpec((512, 512), ip=(512, 512, 4))])]
    p = simulate(layers, 2, 1e15, staleness=0, svb="on")
    assert p.sfb_layers == ["fc"]
    assert p.iteration_s == pytest.approx(0.003 + 0.002)
    assert simulate(layers, 2, 1e15, svb="off").iteration_s == pytest.approx(0.003, rel=1e-4)


def test_bsp_with_jitter_waits_for_the_slowest_worker():
    layers = two_layers()
    p0 = simulate(layers, 8, 1e15, staleness=0, jitter=0.2, iterations=600, warmup=10, seed=3)
    rng = np.random.default_rng(99)                # independent Monte Carlo of E[max of 8]
    expect = np.exp(rng.normal(-0.02, 0.2, (200000, 8))).max(axis=1).mean()
    assert p0.iteration_s / 0.004 == pytest.approx(expect, rel=0.03)
    # unbounded staleness: nobody waits, each worker runs at its own mean pace of 1
    pinf = simulate(layers, 8, 1e15, staleness=10000, jitter=0.2, iterations=600, seed=3)
    assert pinf.iteration_s / 0.004 == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("text, bits", [("40gbit", 4e10), ("10Gbit", 1e10), ("1g", 1e9),
                                        ("800mbit", 8e8), ("10mbps", 8e7), (2.5e9, 2.5e9),
                                        ("40GbE", 4e10)])
def test_parse_rate(text, bits):
    assert plan.parse_rate(text) == pytest.approx(bits)


def test_bad_inputs_are_user_errors():
    with pytest.raises(ConfigError, match="--link 'fast'"):
        plan.parse_rate("fast")
    with pytest.raises(ConfigError, match="staleness -1"):
        simulate(two_layers(), 2, RATE, staleness=-1)
    with pytest.raises(ConfigError, match="--nodes"):
        plan.parse_list("1,x", "nodes")


NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 10 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
        inner_product_param { num_output: 300 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
        inner_product_param { num_output: 2 } }
"""


def test_layers_from_net_and_cli(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET)
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"batch": 4, "layers": [
        {"name": "fc1", "forward_ms": 1, "backward_ms": 2},
        {"name": "fc2", "forward_ms": 1, "backward_ms": 1}]}))
    from poseidon_cli import emulate
    from poseidon_cli.net import Net
    layers = plan.layers_from_net(Net(str(model), "TRAIN"), emulate.load_profile(prof))
    assert [l.name for l in layers] == ["data", "fc1", "fc2"]
    assert [(p.shape, p.ip) for p in layers[1].params] == [((300, 10), (300, 10, 4)), ((300,), None)]
    out = tmp_path / "plan.json"
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "plan", "--profile", str(prof),
                        "--model", str(model), "--nodes", "1,2", "--link", "1gbit",
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["nodes"] for row in rows] == [1, 2]
    assert rows[0]["speedup"] == pytest.approx(1.0)
    # 2 nodes: every weight on the PS (tiny), 2 * count * 2 / 2 * 4 bytes each
    count = 300 * 10 + 300 + 2 * 300 + 2
    assert rows[1]["bytes_per_node"] == 8 * count
    assert "predicted" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "plan", "--profile",
                          str(tmp_path / "none.json"), "--model", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("poseidon: error: ")
    assert "none.json: no such profile" in bad.stderr
