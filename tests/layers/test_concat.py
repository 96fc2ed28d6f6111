"""Concat: shapes, forward/backward against slicing by hand, legacy concat_dim, errors."""
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
@pytest.mark.parametrize("spec,axis", [("", 1), ("concat_param { axis: -1 }", 3),
                                       ("concat_param { axis: 0 }", 0),
                                       ("concat_param { axis: 2 concat_dim: 0 }", 0)])
def test_forward_and_backward_match_hand_slicing(xp, spec, axis):
    rng = np.random.default_rng(3)
    shapes = []
    for extra in (1, 3, 2):
        s = [2, 3, 4, 5]
        s[axis] = extra
        shapes.append(tuple(s))
    bottom = make_blobs(shapes, rng, xp=xp)
    layer = make_layer(f'type: "Concat" {spec}', xp=xp)
    top = run_forward(layer, bottom)
    expected_shape = list(shapes[0])
    expected_shape[axis] = 6
    assert top[0].shape == tuple(expected_shape)
    y = backend.to_host(top[0].data)
    start = 0
    for b in bottom:
        n = b.shape[axis]
        for k in range(n):
            assert np.array_equal(np.take(y, start + k, axis=axis),
                                  np.take(backend.to_host(b.data), k, axis=axis))
        start += n
    dy = rng.normal(size=top[0].shape)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True, False, True], bottom)
    assert np.array_equal(backend.to_host(bottom[0].diff), np.take(dy, range(0, 1), axis=axis))
    assert not backend.to_host(bottom[1].diff).any()  # not propagated: untouched zeros
    assert np.array_equal(backend.to_host(bottom[2].diff), np.take(dy, range(4, 6), axis=axis))


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    bottom = make_blobs([(2, 3, 2), (2, 1, 2)], np.random.default_rng(1), xp=xp)
    check_layer_gradients(make_layer('type: "Concat"', xp=xp), bottom, threshold=1e-2)


def test_single_bottom_aliases_input():
    bottom = make_blobs([(2, 3)])
    layer = make_layer('type: "Concat"')
    top = run_forward(layer, bottom)
    assert np.array_equal(top[0].data, bottom[0].data)
    bottom[0].data[0, 0] = 42
    assert top[0].data[0, 0] == 42


def test_mismatched_dims_name_layer_and_shapes():
    bottom = make_blobs([(2, 3, 4), (2, 3, 5)])
    layer = make_layer('name: "cat" type: "Concat"')
    with pytest.raises(NetError, match=r"cat.*\(2, 3, 5\).*\(2, 3, 4\)"):
        layer.setup(bottom, [Blob()])


def test_rank_mismatch_and_bad_axis():
    with pytest.raises(NetError, match="shape"):
        make_layer('type: "Concat"').setup(make_blobs([(2, 3), (2, 3, 1)]), [Blob()])
    with pytest.raises(NetError, match="axis 3 is out of range"):
        make_layer('type: "Concat" concat_param { axis: 3 }').setup(
            make_blobs([(2, 3), (2, 3)]), [Blob()])


def test_googlenet_inception_concat(conformance_dir):
    from poseidon_cli.config import load_net_param
    net = load_net_param(conformance_dir / "bvlc/models/bvlc_googlenet/deploy.prototxt")
    concats = [l for l in net.layer if l.type == "Concat"]
    assert concats
    p = concats[0]
    bottom = make_blobs([(1, c, 4, 4) for c in (64, 128, 32, 32)][:len(p.bottom)])
    top = run_forward(make_layer(p), bottom)
    assert top[0].shape == (1, sum(b.shape[1] for b in bottom), 4, 4)
