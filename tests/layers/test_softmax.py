import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


def naive_softmax(x, axis):
    """Loop over every position outside ``axis``; plain exp/sum without max subtraction."""
    x = np.moveaxis(x, axis, -1)
    y = np.empty_like(x)
    for idx in np.ndindex(x.shape[:-1]):
        e = np.exp(x[idx])
        y[idx] = e / e.sum()
    return np.moveaxis(y, -1, axis)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_forward_against_naive(xp, axis):
    bottom = make_blobs([(2, 5, 3, 4)], xp=xp, low=-3, high=3)
    layer = make_layer(f'type: "Softmax" softmax_param {{ axis: {axis} }}', xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 5, 3, 4)
    y = to_host(top[0].data)
    np.testing.assert_allclose(y, naive_softmax(to_host(bottom[0].data), axis), rtol=1e-13)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, rtol=1e-13)


def test_large_scores_do_not_overflow():
    bottom = Blob((1, 3), dtype=np.float64)
    bottom.data[...] = [[1000.0, 1001.0, 999.0]]
    top = run_forward(make_layer('type: "Softmax"'), [bottom])
    e = np.exp([-1.0, 0.0, -2.0])
    np.testing.assert_allclose(top[0].data[0], e / e.sum(), rtol=1e-14)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(3, 7, 2, 2)], low=-5, high=5)
    top = run_forward(make_layer('type: "Softmax"'), bottom)
    want = torch.softmax(torch.from_numpy(bottom[0].data), dim=1).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-13)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("axis", [1, 3])
def test_gradient(xp, axis):
    layer = make_layer(f'type: "Softmax" softmax_param {{ axis: {axis} }}', xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 4, 2, 3)], xp=xp, low=-2, high=2))


def test_axis_out_of_range_is_a_net_error():
    with pytest.raises(NetError, match="axis 4"):
        run_forward(make_layer('type: "Softmax" softmax_param { axis: 4 }'),
                    make_blobs([(2, 3, 4, 5)]))
