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


@pytest.mark.parametrize("xp", _backends())
@pytest.mark.parametrize("k", [1, 2, 3])
def test_forward_copies_and_backward_sums(xp, k):
    bottom = make_blobs([(2, 3, 4)], xp=xp)
    layer = make_layer('type: "Split"', xp=xp)
    top = run_forward(layer, bottom, n_top=k)
    for t in top:
        assert t.shape == (2, 3, 4)
        np.testing.assert_array_equal(to_host(t.data), to_host(bottom[0].data))
    # tops are independent copies: writing one (an in-place layer on a branch) leaves the rest
    top[0].data[...] = 7
    if k > 1:
        np.testing.assert_array_equal(to_host(top[1].data), to_host(bottom[0].data))
    rng = np.random.default_rng(0)
    diffs = [rng.normal(size=(2, 3, 4)) for _ in range(k)]
    for t, d in zip(top, diffs):
        t.diff[...] = xp.asarray(d)
    bottom[0].diff[...] = 99   # must be overwritten, not accumulated
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(to_host(bottom[0].diff), sum(diffs), rtol=1e-12)


def test_gradients():
    check_layer_gradients(make_layer('type: "Split"'), make_blobs([(2, 3)]), n_top=3,
                          threshold=1e-2)
