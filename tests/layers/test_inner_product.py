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


def _ip(extra="", xp=np):
    return make_layer('type: "InnerProduct" inner_product_param { num_output: 5 '
                      'weight_filler { type: "gaussian" std: 1 } '
                      f'bias_filler {{ type: "uniform" min: -1 max: 1 }} {extra} }}', xp=xp)


@pytest.mark.parametrize("xp", XPS)
def test_forward_matches_loops(xp):
    bottom = make_blobs([(2, 3, 2, 2)], xp=xp)
    layer = _ip(xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 5)
    assert layer.blobs[0].shape == (5, 12) and layer.blobs[1].shape == (5,)
    x = to_host(bottom[0].data)
    w = to_host(layer.blobs[0].data)
    b = to_host(layer.blobs[1].data)
    want = np.zeros((2, 5))
    for n in range(2):
        for o in range(5):
            s = b[o]
            for c in range(3):
                for h in range(2):
                    for ww in range(2):
                        s += x[n, c, h, ww] * w[o, (c * 2 + h) * 2 + ww]   # C,H,W flatten order
            want[n, o] = s
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12)


def test_axis_and_transpose_shapes_and_values():
    bottom = make_blobs([(2, 3, 4)])
    layer = _ip("axis: 2 transpose: true")
    top = run_forward(layer, bottom)
    assert layer.blobs[0].shape == (4, 5)
    assert top[0].shape == (2, 3, 5)
    want = bottom[0].data @ layer.blobs[0].data + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)
    neg = _ip("axis: -1")
    assert run_forward(neg, bottom)[0].shape == (2, 3, 5)


def test_matches_torch_linear():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(4, 7)])
    layer = _ip()
    top = run_forward(layer, bottom)
    want = torch.nn.functional.linear(torch.from_numpy(bottom[0].data),
                                      torch.from_numpy(layer.blobs[0].data),
                                      torch.from_numpy(layer.blobs[1].data)).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("extra", ["", "transpose: true", "bias_term: false", "axis: 2"])
def test_gradients(xp, extra):
    check_layer_gradients(_ip(extra, xp), make_blobs([(2, 3, 2, 2)], xp=xp))


def test_param_diffs_accumulate():
    bottom = make_blobs([(3, 4)])
    layer = _ip()
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    once = layer.blobs[0].diff.copy()
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)
    np.testing.assert_allclose(once, np.ones((5, 3)) @ bottom[0].data)


def test_wrong_input_size_after_setup_is_an_error():
    layer = make_layer('name: "fc" type: "InnerProduct" inner_product_param { num_output: 2 }')
    bottom = make_blobs([(2, 6)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((2, 7))
    with pytest.raises(NetError, match=r"fc.*\(2, 7\).*K=6"):
        layer.reshape(bottom, top)
    with pytest.raises(NetError, match="num_output"):
        run_forward(make_layer('type: "InnerProduct"'), make_blobs([(2, 6)]))


@pytest.mark.parametrize("extra", ["", "transpose: true"])
def test_weight_gradient_in_scratch_blocks_accumulates(monkeypatch, extra):
    """A scratch block smaller than dW (2 rows of 12 inputs here, 5 outputs: 3 blocks, the last
    one short) gives the same accumulated gradient as one product."""
    from poseidon_cli.layers import inner_product
    monkeypatch.setattr(inner_product, "_SCRATCH_ELEMS", 24)
    bottom = make_blobs([(3, 3, 2, 2)])
    layer = _ip(extra)
    top = run_forward(layer, bottom)
    dy = np.random.default_rng(5).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    before = np.random.default_rng(6).standard_normal(layer.blobs[0].shape)
    layer.blobs[0].diff[...] = before
    layer.backward(top, [False], bottom)
    x = bottom[0].data.reshape(3, 12)
    want = before + (x.T @ dy if extra else dy.T @ x)
    np.testing.assert_allclose(layer.blobs[0].diff, want, rtol=1e-6, atol=1e-6)
