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
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp, low=-10, high=10)
    top = run_forward(make_layer('type: "BNLL"', xp=xp), bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    np.testing.assert_allclose(to_host(top[0].data), np.log(1 + np.exp(x)), rtol=1e-12)


def test_extreme_inputs_stay_finite_and_accurate():
    bottom = Blob((4,), dtype=np.float64)
    bottom.data[...] = [-800.0, -40.0, 40.0, 800.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = make_layer('type: "BNLL"')
        top = run_forward(layer, [bottom])
        top[0].diff[...] = 1.0
        layer.backward(top, [True], [bottom])
    np.testing.assert_allclose(top[0].data, [0.0, np.exp(-40.0), 40.0, 800.0], rtol=1e-12)
    # dy/dx = sigmoid(x)
    np.testing.assert_allclose(bottom.diff, [0.0, np.exp(-40.0), 1.0, 1.0], rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    check_layer_gradients(make_layer('type: "BNLL"', xp=xp),
                          make_blobs([(2, 3, 3, 4)], xp=xp, low=-4, high=4))


def test_matches_torch_softplus():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(50,)], low=-30, high=30)
    top = run_forward(make_layer('type: "BNLL"'), bottom)
    want = torch.nn.functional.softplus(torch.from_numpy(bottom[0].data), threshold=1000)
    np.testing.assert_allclose(top[0].data, want.numpy(), rtol=1e-12)
