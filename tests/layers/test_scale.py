"""Scale: closed forms (learned gamma, bottom[1] factor, bias_term), gradients, in-place, errors."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.layers import TEST
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


def test_default_filler_is_one_and_bias_zero():
    layer = make_layer('type: "Scale" scale_param { bias_term: true }')
    b = make_blobs([(2, 3, 4)])
    top = run_forward(layer, b)
    assert [bl.shape for bl in layer.blobs] == [(3,), (3,)]
    assert (layer.blobs[0].data == 1).all() and (layer.blobs[1].data == 0).all()
    np.testing.assert_array_equal(top[0].data, b[0].data)
    assert layer.param_propagate_down == [True, True]


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("axis,num_axes,pshape", [(1, 1, (3,)), (1, 2, (3, 4)), (0, -1, (2, 3, 4, 5)),
                                                  (-2, 1, (4,)), (2, 0, ())])
def test_learned_scale_and_bias_closed_form(xp, axis, num_axes, pshape):
    rng = np.random.default_rng(0)
    spec = f'type: "Scale" scale_param {{ axis: {axis} num_axes: {num_axes} bias_term: true }}'
    layer = make_layer(spec, xp=xp)
    b = make_blobs([(2, 3, 4, 5)], rng, xp=xp)
    top = [Blob(xp=xp, dtype=np.float64)]
    layer.setup(b, top)
    assert layer.blobs[0].shape == pshape
    g = rng.normal(size=pshape)
    beta = rng.normal(size=pshape)
    layer.blobs[0].data[...] = xp.asarray(g)
    layer.blobs[1].data[...] = xp.asarray(beta)
    layer.forward(b, top)
    start = axis % 4 if pshape else 0
    bshape = (1,) * start + pshape + (1,) * (4 - start - len(pshape))
    expected = H(b[0].data) * g.reshape(bshape) + beta.reshape(bshape)
    np.testing.assert_allclose(H(top[0].data), expected, rtol=1e-12)
    check_layer_gradients(make_layer(spec, xp=xp), make_blobs([(2, 3, 2, 2)], rng, xp=xp)
                          if num_axes != -1 else make_blobs([(2, 3, 4, 5)], rng, xp=xp),
                          max_checks_per_blob=30)


@pytest.mark.parametrize("xp", XPS)
def test_scale_from_bottom(xp):
    rng = np.random.default_rng(1)
    b = make_blobs([(2, 3, 4), (3, 4)], rng, xp=xp)
    layer = make_layer('type: "Scale" scale_param { bias_term: true }', xp=xp)
    top = run_forward(layer, b)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3, 4)  # only the bias is learned
    np.testing.assert_allclose(H(top[0].data), H(b[0].data) * H(b[1].data)[None], rtol=1e-12)
    check_layer_gradients(make_layer('type: "Scale" scale_param { bias_term: true }', xp=xp), b)
    scalar = make_blobs([(2, 3), ()], rng, xp=xp)
    top = run_forward(make_layer('type: "Scale"', xp=xp), scalar)
    np.testing.assert_allclose(H(top[0].data), H(scalar[0].data) * float(H(scalar[1].data)))


def test_bottom_scale_gradient_by_hand():
    layer = make_layer('type: "Scale"')
    b = make_blobs([(2, 3), (3,)])
    top = run_forward(layer, b)
    dy = np.arange(6.0).reshape(2, 3)
    top[0].diff[...] = dy
    layer.backward(top, [True, True], b)
    np.testing.assert_allclose(b[0].diff, dy * b[1].data[None])
    np.testing.assert_allclose(b[1].diff, (dy * b[0].data).sum(axis=0))


def test_in_place_keeps_input_for_gamma_gradient():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4))
    dy = rng.normal(size=x.shape)

    def init(layer):
        layer.blobs[0].data[...] = [0.5, -2.0, 3.0]
    runs = run_both_ways('type: "Scale" scale_param { bias_term: true }', x, dy, init)
    grads = [(r["bottom_diff"], *r["param_diffs"]) for r in runs]
    for a, c in zip(*grads):
        np.testing.assert_allclose(c, a, rtol=1e-12)
    np.testing.assert_allclose(grads[1][1], (dy * x).sum(axis=(0, 2)))


def test_gradients_accumulate():
    layer = make_layer('type: "Scale"')
    b = make_blobs([(2, 3)])
    top = run_forward(layer, b)
    top[0].diff[...] = 1.0
    layer.backward(top, [False], b)
    once = layer.blobs[0].diff.copy()
    layer.backward(top, [False], b)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once)


def test_errors():
    with pytest.raises(NetError, match=r"sc.*scale shape \(4,\) does not match.*\(2, 3\)"):
        make_layer('name: "sc" type: "Scale"').setup(make_blobs([(2, 3), (4,)]), [Blob()])
    with pytest.raises(NetError, match="sc.*exceeds"):
        make_layer('name: "sc" type: "Scale" scale_param { num_axes: 3 }').setup(
            make_blobs([(2, 3)]), [Blob()])
    with pytest.raises(NetError, match="sc.*out of range"):
        make_layer('name: "sc" type: "Scale" scale_param { axis: 4 }').setup(
            make_blobs([(2, 3)]), [Blob()])


def test_conformance_resnet_scale(conformance_dir):
    from poseidon_cli.config import load_net_param
    net = load_net_param(conformance_dir / "resnet/ResNet-50-deploy.prototxt")
    p = next(l for l in net.layer if l.name == "scale_conv1")
    layer = make_layer(p, phase=TEST)
    b = make_blobs([(1, 64, 2, 2)])
    layer.setup(b, b)
    assert [bl.shape for bl in layer.blobs] == [(64,), (64,)]
