import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


@pytest.mark.parametrize("xp", XPS)
def test_forward_closed_form(xp):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp, low=-30, high=30)
    top = run_forward(make_layer('type: "TanH"', xp=xp), bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    # (e^2x - 1) / (e^2x + 1), written the long way as the reference
    want = np.where(x > 0, (1 - np.exp(-2 * x)) / (1 + np.exp(-2 * x)),
                    (np.exp(2 * x) - 1) / (np.exp(2 * x) + 1))
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    bottom = make_blobs([(2, 3, 3, 4)], xp=xp, low=-2, high=2)
    check_layer_gradients(make_layer('type: "TanH"', xp=xp), bottom)


def test_backward_closed_form():
    bottom = make_blobs([(7,)], low=-2, high=2)
    layer = make_layer('type: "TanH"')
    top = run_forward(layer, bottom)
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, 3.0 / np.cosh(bottom[0].data) ** 2, rtol=1e-12)
