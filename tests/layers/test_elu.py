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
@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_forward_closed_form(xp, alpha):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp, low=-3, high=3)
    top = run_forward(make_layer(f'type: "ELU" elu_param {{ alpha: {alpha} }}', xp=xp), bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    want = np.where(x > 0, x, float(np.float32(alpha)) * (np.exp(x) - 1))
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12)


def test_matches_torch_elu():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(40,)], low=-3, high=3)
    top = run_forward(make_layer('type: "ELU" elu_param { alpha: 0.5 }'), bottom)
    want = torch.nn.functional.elu(torch.from_numpy(bottom[0].data), alpha=0.5).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("alpha", [1.0, 0.3, -0.5])
def test_gradient(xp, alpha):
    layer = make_layer(f'type: "ELU" elu_param {{ alpha: {alpha} }}', xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 3, 4)], xp=xp), kink=0, kink_range=0.01)


def test_gradient_at_zero_uses_negative_branch():
    layer = make_layer('type: "ELU" elu_param { alpha: 0.5 }')
    bottom = Blob((2,), dtype=np.float64)
    top = run_forward(layer, [bottom])  # x = 0 everywhere
    top[0].diff[...] = 2.0
    layer.backward(top, [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, [1.0, 1.0])  # dy * (y + alpha) = 2 * 0.5
