"""Bias: learned or bottom[1] offsets against broadcasting by hand, gradients, in-place, errors."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _xps():
    out = [pytest.param(np, id="numpy")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        out.append(pytest.param(cp, id="cupy", marks=pytest.mark.gpu))
    return out


XPS = _xps()
H = backend.to_host


@pytest.mark.parametrize("xp", XPS)
def test_learned_bias(xp):
    layer = make_layer('type: "Bias" bias_param { filler { type: "constant" value: 0.25 } }', xp=xp)
    b = make_blobs([(2, 3, 4)], np.random.default_rng(0), xp=xp)
    top = run_forward(layer, b)
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_allclose(H(top[0].data), H(b[0].data) + 0.25)
    layer.blobs[0].data[...] = xp.asarray([1.0, 2.0, 3.0])
    layer.forward(b, top)
    x = H(b[0].data)
    for c in range(3):
        np.testing.assert_allclose(H(top[0].data)[:, c], x[:, c] + c + 1)
    check_layer_gradients(make_layer('type: "Bias"', xp=xp), b)


@pytest.mark.parametrize("xp", XPS)
def test_bias_from_bottom(xp):
    rng = np.random.default_rng(1)
    b = make_blobs([(2, 3, 4), (4,)], rng, xp=xp)
    layer = make_layer('type: "Bias" bias_param { axis: -1 }', xp=xp)
    top = run_forward(layer, b)
    assert layer.blobs == []
    np.testing.assert_allclose(H(top[0].data), H(b[0].data) + H(b[1].data))
    dy = rng.normal(size=(2, 3, 4))
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True, True], b)
    np.testing.assert_array_equal(H(b[0].diff), dy)
    np.testing.assert_allclose(H(b[1].diff), dy.sum(axis=(0, 1)))
    check_layer_gradients(make_layer('type: "Bias" bias_param { axis: -1 }', xp=xp), b)


def test_in_place_and_default_zero():
    layer = make_layer('type: "Bias" bias_param { num_axes: 2 }')
    b = make_blobs([(2, 3, 4)])
    x = b[0].data.copy()
    layer.setup(b, b)
    assert layer.blobs[0].shape == (3, 4) and not layer.blobs[0].data.any()
    layer.blobs[0].data[...] = 1.0
    layer.forward(b, b)
    np.testing.assert_allclose(b[0].data, x + 1)
    b[0].diff[...] = 2.0
    layer.backward(b, [True], b)
    assert (b[0].diff == 2.0).all() and (layer.blobs[0].diff == 4.0).all()


def test_errors():
    with pytest.raises(NetError, match=r"bi.*bias shape \(3,\) does not match"):
        make_layer('name: "bi" type: "Bias" bias_param { axis: 0 }').setup(
            make_blobs([(2, 3), (3,)]), [Blob()])
    with pytest.raises(NetError, match="bi.*num_axes -2"):
        make_layer('name: "bi" type: "Bias" bias_param { num_axes: -2 }').setup(
            make_blobs([(2, 3)]), [Blob()])
