import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
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
def test_forward(xp):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp)
    top = run_forward(make_layer('type: "AbsVal"', xp=xp), bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    np.testing.assert_array_equal(to_host(top[0].data), np.where(x < 0, -x, x))


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    check_layer_gradients(make_layer('type: "AbsVal"', xp=xp), make_blobs([(2, 3, 3, 4)], xp=xp),
                          kink=0, kink_range=0.01)


def test_backward_sign_and_zero():
    layer = make_layer('type: "AbsVal"')
    bottom = Blob((3,), dtype=np.float64)
    bottom.data[...] = [-2.0, 0.0, 3.0]
    top = run_forward(layer, [bottom])
    top[0].diff[...] = 5.0
    layer.backward(top, [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, [-5.0, 0.0, 5.0])
