"""MVN: per-row normalisation with eps added to the std (Caffe), across_channels, gradients."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import (check_layer_gradients, make_blobs, make_layer, run_both_ways,
                                  run_forward)


def _xps():
    out = [pytest.param(np, id="numpy")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        out.append(pytest.param(cp, id="cupy", marks=pytest.mark.gpu))
    return out


XPS = _xps()
H = backend.to_host


def reference(x, across, normalize, eps):
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        groups = [slice(None)] if across else [c for c in range(x.shape[1])]
        for g in groups:
            v = x[n, g]
            c = v - v.mean()
            y[n, g] = c / (np.sqrt((c ** 2).mean()) + eps) if normalize else c
    return y


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("across", ["true", "false"])
@pytest.mark.parametrize("normalize", ["true", "false"])
def test_forward_and_gradient(xp, across, normalize):
    spec = (f'type: "MVN" mvn_param {{ across_channels: {across} '
            f'normalize_variance: {normalize} }}')
    b = make_blobs([(2, 3, 2, 3)], np.random.default_rng(0), xp=xp, low=-2, high=4)
    top = run_forward(make_layer(spec, xp=xp), b)
    expected = reference(H(b[0].data), across == "true", normalize == "true", float(np.float32(1e-9)))
    np.testing.assert_allclose(H(top[0].data), expected, rtol=1e-10, atol=1e-12)
    y = H(top[0].data).reshape(2, -1) if across == "true" else H(top[0].data).reshape(6, -1)
    assert np.abs(y.mean(axis=1)).max() < 1e-12  # BVLC TestForward: mean 0 (and var 1)
    if normalize == "true":
        np.testing.assert_allclose(y.var(axis=1), 1.0, rtol=1e-6)
    check_layer_gradients(make_layer(spec, xp=xp), b)


def test_eps_is_added_to_the_std_not_the_variance():
    b = make_blobs([(1, 1, 4)])
    b[0].data[...] = [1.0, 3.0, 1.0, 3.0]  # mean 2, std 1
    top = run_forward(make_layer('type: "MVN" mvn_param { eps: 0.5 }'), b)
    np.testing.assert_allclose(top[0].data.ravel(), [-1 / 1.5, 1 / 1.5, -1 / 1.5, 1 / 1.5])


def test_gradient_with_large_eps_and_in_place():
    check_layer_gradients(make_layer('type: "MVN" mvn_param { eps: 0.3 }'),
                          make_blobs([(2, 2, 5)], np.random.default_rng(2)))
    rng = np.random.default_rng(3)
    x, dy = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    out = []
    for in_place in (False, True):
        layer = make_layer('type: "MVN"')
        b = make_blobs([x.shape])
        b[0].data[...] = x
        top = b if in_place else [Blob(dtype=np.float64)]
        layer.setup(b, top)
        layer.forward(b, top)
        y = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], b)
        out.append((y, b[0].diff.copy()))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-12)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-10, atol=1e-12)


def test_constant_rows_give_zero_output_and_gradient():
    b = make_blobs([(1, 2, 3)])
    b[0].data[...] = 4.0
    layer = make_layer('type: "MVN"')
    top = run_forward(layer, b)
    assert not top[0].data.any()
    top[0].diff[...] = 1.0
    layer.backward(top, [True], b)
    assert np.isfinite(b[0].diff).all() and not b[0].diff.any()


def test_one_axis_bottom_is_an_error():
    with pytest.raises(NetError, match="mv.*at least 2 axes"):
        make_layer('name: "mv" type: "MVN"').setup(make_blobs([(5,)]), [Blob()])


@pytest.mark.parametrize("normalize", ["true", "false"])
def test_in_place_matches_out_of_place(normalize):
    spec = f'type: "MVN" mvn_param {{ normalize_variance: {normalize} }}'
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 5))
    dy = rng.normal(size=x.shape)
    out, inp = run_both_ways(spec, x, dy)
    np.testing.assert_allclose(out["top"], reference(x, False, normalize == "true", 1e-9),
                               rtol=1e-12)
    np.testing.assert_allclose(inp["top"], out["top"], rtol=1e-12)
    np.testing.assert_allclose(inp["bottom_diff"], out["bottom_diff"], rtol=1e-12, atol=1e-14)
