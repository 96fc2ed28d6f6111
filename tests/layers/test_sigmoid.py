import warnings

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
def test_forward_closed_form(xp):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp, low=-6, high=6)
    top = run_forward(make_layer('type: "Sigmoid"', xp=xp), bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    np.testing.assert_allclose(to_host(top[0].data), 1 / (1 + np.exp(-x)), rtol=1e-13)


def test_extreme_inputs_do_not_overflow():
    bottom = Blob((4,), dtype=np.float64)
    bottom.data[...] = [-1000.0, -40.0, 40.0, 1000.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top = run_forward(make_layer('type: "Sigmoid"'), [bottom])
    np.testing.assert_allclose(top[0].data, [0.0, np.exp(-40.0), 1.0, 1.0], atol=1e-17)


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    bottom = make_blobs([(2, 3, 3, 4)], xp=xp, low=-3, high=3)
    check_layer_gradients(make_layer('type: "Sigmoid"', xp=xp), bottom)


def test_backward_closed_form():
    bottom = make_blobs([(10,)], low=-3, high=3)
    layer = make_layer('type: "Sigmoid"')
    top = run_forward(layer, bottom)
    top[0].diff[...] = np.arange(10.0)
    layer.backward(top, [True], bottom)
    s = 1 / (1 + np.exp(-bottom[0].data))
    np.testing.assert_allclose(bottom[0].diff, np.arange(10.0) * s * (1 - s), rtol=1e-12)
