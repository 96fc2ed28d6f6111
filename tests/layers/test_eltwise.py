"""Eltwise: SUM with coeff, PROD (both gradients), MAX with Caffe's tie rule; gradients; errors."""
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
H = backend.to_host


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("coeff", [None, [1, -0.5, 2.0], [3.0, 1.0, 1.0]])
def test_sum(xp, coeff):
    spec = "" if coeff is None else " ".join(f"coeff: {c}" for c in coeff)
    layer = make_layer(f'type: "Eltwise" eltwise_param {{ {spec} }}', xp=xp)
    bottom = make_blobs([(2, 3, 4)] * 3, np.random.default_rng(0), xp=xp)
    top = run_forward(layer, bottom)
    c = coeff or [1, 1, 1]
    x = [H(b.data) for b in bottom]
    np.testing.assert_allclose(H(top[0].data), c[0] * x[0] + c[1] * x[1] + c[2] * x[2], rtol=1e-12)
    check_layer_gradients(make_layer(f'type: "Eltwise" eltwise_param {{ {spec} }}', xp=xp),
                          bottom)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("stable", ["true", "false"])
def test_prod(xp, stable):
    spec = f'type: "Eltwise" eltwise_param {{ operation: PROD stable_prod_grad: {stable} }}'
    bottom = make_blobs([(2, 3)] * 3, np.random.default_rng(1), xp=xp, low=0.2, high=1.5)
    top = run_forward(make_layer(spec, xp=xp), bottom)
    x = [H(b.data) for b in bottom]
    np.testing.assert_allclose(H(top[0].data), x[0] * x[1] * x[2], rtol=1e-12)
    check_layer_gradients(make_layer(spec, xp=xp), bottom)


def test_stable_prod_grad_handles_zero_input():
    layer = make_layer('type: "Eltwise" eltwise_param { operation: PROD }')
    bottom = make_blobs([(3,), (3,)])
    bottom[0].data[...] = [0.0, 2.0, 3.0]
    bottom[1].data[...] = [5.0, 0.0, 7.0]
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    assert np.array_equal(bottom[0].diff, [5.0, 0.0, 7.0])
    assert np.array_equal(bottom[1].diff, [0.0, 2.0, 3.0])


@pytest.mark.parametrize("xp", XPS)
def test_max_forward_backward(xp):
    rng = np.random.default_rng(2)
    bottom = make_blobs([(2, 5)] * 3, rng, xp=xp)
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }', xp=xp)
    top = run_forward(layer, bottom)
    x = np.stack([H(b.data) for b in bottom])
    np.testing.assert_array_equal(H(top[0].data), x.max(axis=0))
    dy = rng.normal(size=(2, 5))
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True, True, True], bottom)
    for i, b in enumerate(bottom):
        expected = np.where(x.argmax(axis=0) == i, dy, 0.0)
        np.testing.assert_array_equal(H(b.diff), expected)
    check_layer_gradients(make_layer('type: "Eltwise" eltwise_param { operation: MAX }', xp=xp),
                          bottom, step=1e-4, threshold=1e-2)


def test_max_ties_follow_caffe():
    layer = make_layer('type: "Eltwise" eltwise_param { operation: MAX }')
    bottom = make_blobs([(2,)] * 3)
    bottom[0].data[...] = [1.0, 0.0]
    bottom[1].data[...] = [1.0, 2.0]   # tie 0/1 -> bottom 1 (Caffe: 0 wins only if strictly >)
    bottom[2].data[...] = [1.0, 2.0]   # later tie -> the earlier winner keeps it
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True] * 3, bottom)
    assert np.array_equal(bottom[0].diff, [0, 0])
    assert np.array_equal(bottom[1].diff, [1, 1])
    assert np.array_equal(bottom[2].diff, [0, 0])


@pytest.mark.parametrize("spec,shapes,match", [
    ("", [(2, 3), (3, 2)], r"bottom\[1\] has shape \(3, 2\)"),
    ("eltwise_param { coeff: 1 }", [(2,), (2,)], "1 eltwise_param.coeff.*2 bottoms"),
    ("eltwise_param { operation: PROD coeff: 1 coeff: 1 }", [(2,), (2,)], "only allowed"),
])
def test_errors(spec, shapes, match):
    with pytest.raises(NetError, match=f"el.*{match}"):
        make_layer(f'name: "el" type: "Eltwise" {spec}').setup(make_blobs(shapes), [Blob()])


def test_float32_is_kept():
    top = run_forward(make_layer('type: "Eltwise" eltwise_param { coeff: 0.5 coeff: 2 }'),
                      make_blobs([(3,), (3,)], dtype=np.float32))
    assert top[0].data.dtype == np.float32
