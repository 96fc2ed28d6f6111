"""ArgMax: Caffe's top layouts (flat, out_max_val, axis), top_k order against sorting by hand."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_blobs, make_layer, run_forward


def _xps():
    out = [pytest.param(np, id="numpy")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        out.append(pytest.param(cp, id="cupy", marks=pytest.mark.gpu))
    return out


XPS = _xps()
H = backend.to_host


def ranked(v, k):
    """Indices of the k largest entries, by hand: larger value first, larger index on ties."""
    order = sorted(range(len(v)), key=lambda j: (v[j], j), reverse=True)
    return order[:k]


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("k", [1, 3])
def test_flat_indices_and_values(xp, k):
    b = make_blobs([(4, 2, 3, 2)], np.random.default_rng(0), xp=xp)
    top = run_forward(make_layer(f'type: "ArgMax" argmax_param {{ top_k: {k} }}', xp=xp), b)
    assert top[0].shape == (4, 1, k, 1)
    x = H(b[0].data).reshape(4, -1)
    for n in range(4):
        assert list(H(top[0].data)[n].ravel()) == ranked(x[n], k)
    top = run_forward(make_layer(f'type: "ArgMax" argmax_param {{ top_k: {k} out_max_val: true }}',
                                 xp=xp), b)
    assert top[0].shape == (4, 2, k, 1)
    y = H(top[0].data)
    for n in range(4):
        idx = ranked(x[n], k)
        assert list(y[n, 0].ravel()) == idx
        np.testing.assert_array_equal(y[n, 1].ravel(), x[n][idx])


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("out_max_val", ["true", "false"])
def test_axis(xp, out_max_val):
    b = make_blobs([(2, 5, 3)], np.random.default_rng(1), xp=xp)
    layer = make_layer(f'type: "ArgMax" argmax_param {{ axis: 1 top_k: 2 '
                       f'out_max_val: {out_max_val} }}', xp=xp)
    top = run_forward(layer, b)
    assert top[0].shape == (2, 2, 3)
    x, y = H(b[0].data), H(top[0].data)
    for n in range(2):
        for w in range(3):
            idx = ranked(x[n, :, w], 2)
            expected = x[n, idx, w] if out_max_val == "true" else idx
            np.testing.assert_array_equal(y[n, :, w], expected)


def test_ties_put_larger_index_first():
    b = make_blobs([(1, 4)])
    b[0].data[...] = [2.0, 5.0, 5.0, 1.0]
    top = run_forward(make_layer('type: "ArgMax"'), b)
    assert top[0].data.ravel().tolist() == [2.0]
    top = run_forward(make_layer('type: "ArgMax" argmax_param { top_k: 3 }'), b)
    assert top[0].data.ravel().tolist() == [2.0, 1.0, 0.0]


def test_two_axis_bottom_pads_top_to_three_axes():
    top = run_forward(make_layer('type: "ArgMax"'), make_blobs([(5, 10)]))
    assert top[0].shape == (5, 1, 1)


def test_errors():
    with pytest.raises(NetError, match="am.*top_k 5 exceeds"):
        make_layer('name: "am" type: "ArgMax" argmax_param { top_k: 5 }').setup(
            make_blobs([(2, 4)]), [Blob()])
    with pytest.raises(NetError, match="am.*top_k must be at least 1"):
        make_layer('name: "am" type: "ArgMax" argmax_param { top_k: 0 }').setup(
            make_blobs([(2, 4)]), [Blob()])
    with pytest.raises(NetError, match="am.*out of range"):
        make_layer('name: "am" type: "ArgMax" argmax_param { axis: 2 }').setup(
            make_blobs([(2, 4)]), [Blob()])
