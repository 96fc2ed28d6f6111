"""The SFB/PS cost model against hand-computed cases, the per-net plan, and its table."""
import pathlib

import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.distributed import sfb
from poseidon_cli.net import Net

CONFORMANCE = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance"

# AlexNet's fully connected weights (N_out x K_in) at batch 256
FC6, FC7, FC8 = (4096, 9216), (4096, 4096), (1000, 4096)


def test_byte_formulas_by_hand():
    # fc7 at P1 = P2 = 8: PS 2*4096*4096*(8+8-2)/8 floats, SFB 2*256*7*(4096+4096) floats
    assert sfb.ps_bytes(4096, 4096, 8, 8) == 234_881_024
    assert sfb.sfb_bytes(4096, 4096, 256, 8) == 117_440_512
    # fc6 at 32: PS 75,497,472 * 62/32 floats; SFB 512 * 31 * 13,312 floats
    assert sfb.ps_bytes(4096, 9216, 32, 32) == 585_105_408
    assert sfb.sfb_bytes(4096, 9216, 256, 32) == 845_152_256
    # P2 != P1: 1 shard serving 4 workers: 2*M*N*(4+1-2)/1
    assert sfb.ps_bytes(10, 20, 4, 1) == 2 * 10 * 20 * 3 * 4
    # one worker moves nothing by SFB
    assert sfb.sfb_bytes(4096, 4096, 256, 1) == 0


@pytest.mark.parametrize("workers,expect", [
    (2, ("sfb", "sfb", "sfb")),
    # crossovers P* = 2MN/(K(M+N)): fc6 22.2, fc7 16, fc8 6.3
    (8, ("sfb", "sfb", "ps")),
    (32, ("ps", "ps", "ps")),
])
def test_alexnet_fc_layers_at_batch_256(workers, expect):
    got = tuple(sfb.choose(m, n, 256, workers, workers) for m, n in (FC6, FC7, FC8))
    assert got == expect


def test_ties_and_forced_modes():
    # fc7 at P = 16 is exactly the crossover: equal bytes -> PS (SFB only when strictly fewer)
    assert sfb.sfb_bytes(4096, 4096, 256, 16) == sfb.ps_bytes(4096, 4096, 16, 16)
    assert sfb.choose(4096, 4096, 256, 16, 16) == "ps"
    assert sfb.choose(4096, 4096, 256, 17, 17) == "ps"
    assert sfb.choose(4096, 4096, 256, 15, 15) == "sfb"
    assert sfb.choose(1000, 4096, 256, 32, 32, "on") == "sfb"
    assert sfb.choose(4096, 4096, 256, 2, 2, "off") == "ps"
    assert sfb.choose(4096, 4096, 256, 1, 1, "on") == "ps"  # nobody to broadcast to
    with pytest.raises(ValueError, match="auto, on, off"):
        sfb.choose(4, 4, 1, 2, 2, "maybe")


def test_tiny_layers_never_choose_sfb():
    # a side no larger than the batch: SFB moves at least as much for every cluster size
    for m, n, k in [(10, 500, 64), (10, 4096, 256), (64, 1024, 100), (1000, 4096, 1000)]:
        for p1 in range(2, 65):
            for p2 in {1, 2, p1}:
                assert sfb.choose(m, n, k, p1, p2) == "ps", (m, n, k, p1, p2)
    # a weight under 256 KiB stays on the PS even where it would save bytes (10 x 144 at batch 4)
    assert sfb.sfb_bytes(10, 144, 4, 2) < sfb.ps_bytes(10, 144, 2, 2)
    assert sfb.choose(10, 144, 4, 2, 2) == "ps"
    assert sfb.choose(10, 144, 4, 2, 2, "on") == "sfb"


MLP = """
name: "mlp"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 32 dim: 1024 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "x" top: "fc1" inner_product_param { num_output: 2048 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 1024 } }
layer { name: "fc2t" type: "InnerProduct" bottom: "fc2" top: "fc2t"
  inner_product_param { num_output: 1024 transpose: true } }
layer { name: "fc3" type: "InnerProduct" bottom: "fc2t" top: "fc3" param { name: "shared" } inner_product_param { num_output: 1024 } }
layer { name: "fc4" type: "InnerProduct" bottom: "fc3" top: "fc4" param { name: "shared" } inner_product_param { num_output: 1024 } }
layer { name: "frozen" type: "InnerProduct" bottom: "fc4" top: "frozen" param { lr_mult: 0 }
  inner_product_param { num_output: 1024 } }
layer { name: "fc5" type: "InnerProduct" bottom: "frozen" top: "fc5" inner_product_param { num_output: 10 } }
"""


def _net(text):
    param = caffe_pb2.NetParameter()
    text_format.Parse(text, param)
    return Net(param)


def test_plan_uses_the_real_batch_and_refuses_what_sfb_cannot_do():
    net = _net(MLP)
    plans = sfb.plan_layers(net, 4, 4, "auto")
    by = {p.layer: p for p in plans}
    assert "frozen" not in by  # lr_mult 0: not communicated at all
    assert by["fc1"].shape == (2048, 1024) and by["fc1"].batch == 32
    assert by["fc1"].ps_bytes == 2 * 2048 * 1024 * 6 // 4 * 4
    assert by["fc1"].sfb_bytes == 2 * 32 * 3 * (2048 + 1024) * 4
    assert by["fc1"].scheme == "sfb" and by["fc2"].scheme == "sfb"
    assert by["fc2t"].scheme == "ps" and "transpose" in by["fc2t"].note
    assert by["fc3"].scheme == "ps" and "shared" in by["fc3"].note
    assert by["fc5"].scheme == "ps" and by["fc5"].note == "tiny weight"
    on = {p.layer: p.scheme for p in sfb.plan_layers(net, 4, 4, "on")}
    assert on["fc5"] == "sfb" and on["fc2t"] == "ps"
    assert all(p.scheme == "ps" for p in sfb.plan_layers(net, 4, 4, "off"))
    assert all(p.scheme == "ps" for p in sfb.plan_layers(net, 4, 4, "on", iter_size=2))
    assert all(p.scheme == "ps" for p in sfb.plan_layers(net, 1, 1, "on"))
    lines = sfb.format_table(plans, 4, 4, "auto")
    assert "P1=4 workers, P2=4 shards" in lines[0]
    row = next(l for l in lines if l.strip().startswith("fc1 "))
    assert "2048 x 1024" in row and "SFB" in row and "32" in row
    assert "PS (transpose: true)" in next(l for l in lines if l.strip().startswith("fc2t "))


def test_reference_nets_small_fc_layers_stay_on_ps():
    base = CONFORMANCE / "bvlc" / "examples"
    if not base.exists():
        pytest.skip("no shared/conformance folder")
    from poseidon_cli.config import load_net_param
    # CIFAR-10 quick: ip1 64 x 1024 and ip2 10 x 64 at batch 100; LeNet ip2 10 x 500 at batch 64
    for path, layers in [("cifar10/cifar10_quick_train_test.prototxt", ("ip1", "ip2")),
                         ("mnist/lenet_train_test.prototxt", ("ip2",))]:
        param = load_net_param(str(base / path))
        shapes = {l.name: l for l in param.layer}
        batch = next(l.data_param.batch_size for l in param.layer
                     if l.type == "Data" and any(r.phase == 0 for r in l.include))
        for name in layers:
            n_out = shapes[name].inner_product_param.num_output
            k_in = {"ip1": 64 * 4 * 4, "ip2": 64 if "cifar" in path else 500}[name]
            for p in range(2, 65):
                assert sfb.choose(n_out, k_in, batch, p, p) == "ps", (path, name, p)
