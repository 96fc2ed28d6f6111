"""Slice: slice points and equal splits against numpy indexing, gradients, errors."""
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


@pytest.mark.parametrize("xp", XPS)
def test_slice_points_forward_backward(xp):
    rng = np.random.default_rng(0)
    bottom = make_blobs([(2, 6, 3)], rng, xp=xp)
    layer = make_layer('type: "Slice" slice_param { axis: -2 slice_point: 1 slice_point: 4 }', xp=xp)
    top = run_forward(layer, bottom, n_top=3)
    x = backend.to_host(bottom[0].data)
    assert [t.shape for t in top] == [(2, 1, 3), (2, 3, 3), (2, 2, 3)]
    for t, (a, b) in zip(top, [(0, 1), (1, 4), (4, 6)]):
        assert np.array_equal(backend.to_host(t.data), x[:, a:b, :])
    dys = [rng.normal(size=t.shape) for t in top]
    for t, d in zip(top, dys):
        t.diff[...] = xp.asarray(d)
    layer.backward(top, [True], bottom)
    assert np.array_equal(backend.to_host(bottom[0].diff), np.concatenate(dys, axis=1))


@pytest.mark.parametrize("xp", XPS)
def test_equal_split_with_legacy_slice_dim_and_gradient(xp):
    bottom = make_blobs([(4, 3)], np.random.default_rng(1), xp=xp)
    layer = make_layer('type: "Slice" slice_param { slice_dim: 0 }', xp=xp)
    top = run_forward(layer, bottom, n_top=2)
    assert [t.shape for t in top] == [(2, 3), (2, 3)]
    assert np.array_equal(backend.to_host(top[1].data), backend.to_host(bottom[0].data)[2:])
    check_layer_gradients(make_layer('type: "Slice"', xp=xp),
                          make_blobs([(2, 4, 2)], xp=xp), n_top=2, threshold=1e-2)


@pytest.mark.parametrize("spec,n_top,match", [
    ('slice_param { slice_point: 2 }', 3, "1 slice_point.*3 tops"),
    ('slice_param { slice_point: 3 slice_point: 2 }', 3, "strictly increasing"),
    ('slice_param { slice_point: 6 }', 2, "inside"),
    ('', 4, "not divisible"),
    ('slice_param { axis: 5 }', 2, "out of range"),
])
def test_errors(spec, n_top, match):
    layer = make_layer(f'name: "sl" type: "Slice" {spec}')
    with pytest.raises(NetError, match=f"sl.*{match}"):
        layer.setup(make_blobs([(2, 6)]), [Blob() for _ in range(n_top)])
