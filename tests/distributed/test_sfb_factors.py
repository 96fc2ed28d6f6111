"""What SFB asks of the engine: InnerProduct's sufficient factors and Net.set_external_gradient."""
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.net import Net

NET = """
name: "f"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 3 dim: 2 dim: 2 dim: 2 } } }
layer { name: "tin" type: "Input" top: "t" input_param { shape { dim: 3 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 }
                        bias_filler { type: "gaussian" std: 1 } %s } }
layer { name: "ip2" type: "InnerProduct" bottom: "y" top: "z"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "z" bottom: "t" top: "loss" }
"""


def build(extra=""):
    net = Net(text_format.Parse(NET % extra, caffe_pb2.NetParameter()), seed=3)
    rng = np.random.default_rng(0)
    net.blobs["x"].data[...] = rng.normal(size=net.blobs["x"].shape)
    net.blobs["t"].data[...] = rng.normal(size=net.blobs["t"].shape)
    return net


@pytest.mark.parametrize("transpose", [False, True])
def test_factors_give_the_weight_gradient_the_layer_computes(transpose):
    net = build("transpose: true" if transpose else "")
    li = net.layer_names.index("ip")
    net.clear_param_diffs()
    net.forward_backward()
    dy, x = net.layers[li].sufficient_factors(net.bottom_vecs[li], net.top_vecs[li])
    assert dy.shape == (3, 4) and x.shape == (3, 8)   # batch rows x N, batch rows x K
    # independent reference: dW[n, k] = sum over batch rows of dy[m, n] * x[m, k], as loops
    ref = np.zeros((4, 8))
    for m in range(3):
        for n in range(4):
            for k in range(8):
                ref[n, k] += float(dy[m, n]) * float(x[m, k])
    got = net.layers[li].blobs[0].diff
    np.testing.assert_allclose(got.T if transpose else got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(x, net.blobs["x"].data.reshape(3, 8))


def test_external_gradient_switches_off_the_diff_and_its_clearing():
    net = build()
    li = net.layer_names.index("ip")
    k = net.learnable_param_names.index("ip/0")
    net.set_external_gradient(k)
    assert net.layers[li].param_propagate_down[0] is False
    assert net.layers[li].param_propagate_down[1] is True         # the bias keeps its gradient
    w = net.layers[li].blobs[0]
    w.diff[...] = 7.0                                              # a marker nobody may touch
    net.clear_param_diffs()
    net.forward_backward()
    assert (w.diff == 7.0).all()
    assert np.abs(net.layers[li].blobs[1].diff).sum() > 0          # bias gradient still computed
    assert np.abs(net.layers[net.layer_names.index("ip2")].blobs[0].diff).sum() > 0  # others too
    assert k in net.params_without_diff
