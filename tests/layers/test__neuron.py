"""Contract tests shared by every element-wise layer (layers/_neuron.py and its users):
top shape after setup, input dtype kept, and in-place use (top is bottom) giving exactly the
out-of-place forward output, bottom gradient and parameter gradient."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.layers import TEST, TRAIN
from poseidon_cli.layers._neuron import is_in_place
from poseidon_cli.testing import make_blobs, make_layer


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()

# (spec, phase, input range); Threshold has no backward and is checked for forward only.
SPECS = [
    ('type: "ReLU"', TRAIN, (-1, 1)),
    ('type: "ReLU" relu_param { negative_slope: 0.2 }', TRAIN, (-1, 1)),
    ('type: "ReLU" relu_param { negative_slope: -0.5 }', TRAIN, (-1, 1)),
    ('type: "PReLU"', TRAIN, (-1, 1)),
    ('type: "PReLU" prelu_param { channel_shared: true filler { value: -0.7 } }', TRAIN, (-1, 1)),
    ('type: "Sigmoid"', TRAIN, (-3, 3)),
    ('type: "TanH"', TRAIN, (-3, 3)),
    ('type: "AbsVal"', TRAIN, (-1, 1)),
    ('type: "Power" power_param { power: 3 scale: 0.5 shift: 0.2 }', TRAIN, (-1, 1)),
    ('type: "Power" power_param { power: 2 scale: -2 }', TRAIN, (-1, 1)),
    ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: 1 }', TRAIN, (-1, 1)),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 0.5 }', TRAIN, (0.1, 2)),
    ('type: "BNLL"', TRAIN, (-4, 4)),
    ('type: "ELU" elu_param { alpha: 0.5 }', TRAIN, (-2, 2)),
    ('type: "ELU" elu_param { alpha: -0.5 }', TRAIN, (-2, 2)),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', TRAIN, (-1, 1)),
    ('type: "Dropout"', TEST, (-1, 1)),
    ('type: "Softmax"', TRAIN, (-2, 2)),
]
SHAPE = (2, 3, 4, 5)


def _run(spec, phase, xp, x, dy, in_place, dtype=np.float64):
    layer = make_layer(spec, phase=phase, xp=xp, seed=7, dtype=dtype)
    bottom = Blob(SHAPE, xp=xp, dtype=dtype)
    bottom.data[...] = xp.asarray(x.astype(dtype))
    top = bottom if in_place else Blob((), xp=xp, dtype=dtype)
    layer.setup([bottom], [top])
    assert top.shape == SHAPE
    layer.forward([bottom], [top])
    y = to_host(top.data).copy()
    top.diff[...] = xp.asarray(dy.astype(dtype))
    layer.backward([top], [True], [bottom])
    dx = to_host(bottom.diff).copy()
    dparams = [to_host(b.diff).copy() for b in layer.blobs]
    return y, dx, dparams


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("spec,phase,rng_range", SPECS, ids=[s[0] + f"-{s[1]}" for s in SPECS])
def test_in_place_matches_out_of_place(spec, phase, rng_range, xp):
    rng = np.random.default_rng(3)
    x = rng.uniform(*rng_range, size=SHAPE)
    dy = rng.uniform(-1, 1, size=SHAPE)
    y0, dx0, dp0 = _run(spec, phase, xp, x, dy, in_place=False)
    y1, dx1, dp1 = _run(spec, phase, xp, x, dy, in_place=True)
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-12, atol=1e-12)
    for a, b in zip(dp1, dp0):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # the layer really computed something: forward differs from the identity for most layers
    assert np.isfinite(y0).all() and np.isfinite(dx0).all()


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("spec,phase,rng_range", SPECS + [('type: "Threshold"', TRAIN, (-1, 1))],
                         ids=[s[0] for s in SPECS] + ["Threshold"])
def test_float32_stays_float32(spec, phase, rng_range, xp):
    layer = make_layer(spec, phase=phase, xp=xp, dtype=np.float32)
    bottom = make_blobs([SHAPE], np.random.default_rng(0), dtype=np.float32, xp=xp,
                        low=rng_range[0], high=rng_range[1])
    top = [Blob((), xp=xp, dtype=np.float32)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    assert top[0].shape == SHAPE


def test_is_in_place_detects_shared_data():
    a = Blob((2, 3), dtype=np.float64)
    b = Blob((2, 3), dtype=np.float64)
    assert is_in_place([a], [a])
    assert not is_in_place([a], [b])
    b.share_data(a)
    assert is_in_place([a], [b])


def test_neuron_layer_arity_is_checked():
    from poseidon_cli.errors import NetError
    layer = make_layer('type: "ReLU"')
    a, b = make_blobs([(2, 3), (2, 3)])
    with pytest.raises(NetError, match="ReLU"):
        layer.setup([a, b], [Blob()])


NET_TEXT = """
name: "inplace"
force_backward: true
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 6 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "prelu" type: "PReLU" bottom: "ip1" top: "ip1" }
layer { name: "tanh" type: "TanH" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }
"""


def test_in_place_chain_inside_a_net_has_correct_gradients():
    """PReLU and TanH run in place on one blob inside a Net; the loss gradient w.r.t. the input
    and the PReLU slopes must still match finite differences."""
    from google.protobuf import text_format

    from poseidon_cli._proto import caffe_pb2
    from poseidon_cli.net import Net

    param = text_format.Parse(NET_TEXT, caffe_pb2.NetParameter())
    net = Net(param, TRAIN, seed=5, dtype=np.float64)
    rng = np.random.default_rng(8)
    data = rng.uniform(-1, 1, (4, 6))
    label = np.array([0.0, 2.0, 1.0, 2.0])

    def loss_at(x):
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = label
        return net.forward_prefilled()

    loss_at(data)
    net.clear_param_diffs()
    net.backward_all()
    grad = net.blobs["data"].diff.copy()
    slope_grad = net.params["prelu"][0].diff.copy()
    assert np.abs(grad).max() > 0 and np.abs(slope_grad).max() > 0
    h = 1e-5
    numeric = np.zeros_like(data)
    for idx in np.ndindex(data.shape):
        d = np.zeros_like(data)
        d[idx] = h
        numeric[idx] = (loss_at(data + d) - loss_at(data - d)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    slopes = net.params["prelu"][0].data
    numeric_slope = np.zeros_like(slopes)
    for c in range(slopes.size):
        slopes[c] += h
        plus = loss_at(data)
        slopes[c] -= 2 * h
        minus = loss_at(data)
        slopes[c] += h
        numeric_slope[c] = (plus - minus) / (2 * h)
    np.testing.assert_allclose(slope_grad, numeric_slope, rtol=1e-6, atol=1e-9)
