import math

import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
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


def _pool(text, xp=np, name="pool"):
    return make_layer(f'name: "{name}" type: "Pooling" pooling_param {{ {text} }}', xp=xp)


def naive_pool(x, mode, k, s, p, floor=False):
    """Caffe's loops: ceil size with pad clipping, AVE divisor before clamping, first max wins."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p

    def size(L, kk, ss, pp):
        o = (L + 2 * pp - kk) // ss + 1 if floor else int(math.ceil((L + 2 * pp - kk) / ss)) + 1
        if pp > 0 and (o - 1) * ss >= L + pp:
            o -= 1
        return o
    Ph, Pw = size(H, kh, sh, ph), size(W, kw, sw, pw)
    y = np.zeros((N, C, Ph, Pw))
    for n in range(N):
        for c in range(C):
            for i in range(Ph):
                for j in range(Pw):
                    hs, ws = i * sh - ph, j * sw - pw
                    he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
                    div = (he - hs) * (we - ws)
                    hs2, ws2, he2, we2 = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                    win = x[n, c, hs2:he2, ws2:we2]
                    y[n, c, i, j] = win.max() if mode == "MAX" else win.sum() / div
    return y


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,k,s,p", [
    ("pool: MAX kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),
    ("pool: AVE kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),
    ("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2", (3, 2), (1, 2), (0, 0)),
    ("pool: AVE kernel_size: 2 pad_h: 1 pad_w: 0 stride: 2", (2, 2), (2, 2), (1, 0)),
])
def test_forward_matches_caffe_loops(xp, text, k, s, p):
    bottom = make_blobs([(2, 2, 7, 6)], xp=xp)
    top = run_forward(_pool(text, xp), bottom)
    want = naive_pool(to_host(bottom[0].data), text.split()[1], k, s, p)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12)


def test_known_answers_from_caffe_tests():
    # TestForwardSquare: k2 s1 on 3x5, two channels
    plane = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], float)
    bottom = make_blobs([(1, 2, 3, 5)])
    bottom[0].data[...] = plane
    layer = _pool("pool: MAX kernel_size: 2 stride: 1")
    top = run_forward(layer, bottom, n_top=2)
    np.testing.assert_array_equal(top[0].data[0, 1], [[9, 5, 5, 8], [9, 5, 5, 8]])
    np.testing.assert_array_equal(top[1].data[0, 0], [[5, 2, 2, 9], [5, 12, 12, 9]])
    # TestForwardMaxPadded
    b2 = make_blobs([(1, 1, 3, 3)])
    b2[0].data[...] = np.array([[1, 2, 4], [2, 3, 2], [4, 2, 1]], float)
    t2 = run_forward(_pool("pool: MAX kernel_size: 3 stride: 2 pad: 2"), b2)
    np.testing.assert_array_equal(t2[0].data[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])
    # TestForwardAve: all-2 input, k3 s1 p1 => corners 8/9, edges 4/3, centre 2
    b3 = make_blobs([(1, 1, 3, 3)])
    b3[0].data[...] = 2.0
    t3 = run_forward(_pool("pool: AVE kernel_size: 3 stride: 1 pad: 1"), b3)
    np.testing.assert_allclose(t3[0].data[0, 0],
                               [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3], [8 / 9, 4 / 3, 8 / 9]])


def test_setup_shapes():
    assert run_forward(_pool("kernel_size: 3 stride: 2"), make_blobs([(2, 3, 6, 5)]))[0].shape \
        == (2, 3, 3, 2)
    assert run_forward(_pool("kernel_size: 3 stride: 2 pad: 1"),
                       make_blobs([(2, 3, 6, 5)]))[0].shape == (2, 3, 4, 3)
    assert run_forward(_pool("pool: AVE global_pooling: true"),
                       make_blobs([(2, 3, 6, 5)]))[0].shape == (2, 3, 1, 1)
    # CIFAR pool1: ceil gives 16 from 32 (floor would give 15); FLOOR mode gives 15
    assert run_forward(_pool("kernel_size: 3 stride: 2"), make_blobs([(1, 1, 32, 32)]))[0].shape \
        == (1, 1, 16, 16)
    assert run_forward(_pool("kernel_size: 3 stride: 2 round_mode: FLOOR"),
                       make_blobs([(1, 1, 32, 32)]))[0].shape == (1, 1, 15, 15)


def test_cifar_pool2_overhang_divisor():
    # AVE k3 s2 on 16x16: the last window covers 2 rows/cols, divisor 2*3 (corner 2*2), not 9
    bottom = make_blobs([(1, 1, 16, 16)])
    bottom[0].data[...] = 1.0
    top = run_forward(_pool("pool: AVE kernel_size: 3 stride: 2"), bottom)
    assert top[0].shape == (1, 1, 8, 8)
    assert top[0].data[0, 0, 0, 0] == 1.0 and top[0].data[0, 0, 7, 7] == 1.0


def test_global_and_floor_match_references():
    bottom = make_blobs([(2, 3, 5, 4)])
    t = run_forward(_pool("pool: AVE global_pooling: true"), bottom)
    np.testing.assert_allclose(t[0].data[..., 0, 0], bottom[0].data.mean(axis=(2, 3)))
    t = run_forward(_pool("pool: MAX global_pooling: true"), bottom)
    np.testing.assert_allclose(t[0].data[..., 0, 0], bottom[0].data.max(axis=(2, 3)))
    b = make_blobs([(1, 2, 8, 7)])
    t = run_forward(_pool("pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR"), b)
    np.testing.assert_allclose(t[0].data, naive_pool(b[0].data, "AVE", (3, 3), (2, 2), (0, 0),
                                                     floor=True))


def test_matches_torch_max_pool_ceil():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(2, 3, 9, 9)])
    top = run_forward(_pool("pool: MAX kernel_size: 3 stride: 2"), bottom)
    want = torch.nn.functional.max_pool2d(torch.from_numpy(bottom[0].data), 3, 2,
                                          ceil_mode=True).numpy()
    np.testing.assert_allclose(top[0].data, want)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text", [
    "pool: AVE kernel_size: 3 stride: 2 pad: 1",
    "pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR",
    "pool: AVE global_pooling: true",
])
def test_ave_gradients(xp, text):
    check_layer_gradients(_pool(text, xp), make_blobs([(2, 2, 6, 5)], xp=xp), threshold=1e-2)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text", ["pool: MAX kernel_size: 3 stride: 2 pad: 1",
                                  "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR"])
def test_max_gradients(xp, text):
    # distinct values so no window has a tie (the max is then locally differentiable)
    rng = np.random.default_rng(3)
    bottom = make_blobs([(1, 2, 5, 5)], xp=xp)
    bottom[0].data[...] = xp.asarray(rng.permutation(50).reshape(1, 2, 5, 5) * 0.1)
    check_layer_gradients(_pool(text, xp), bottom, step=1e-4, threshold=1e-2)


@pytest.mark.parametrize("text,shape,msg", [
    ("kernel_size: 5", (1, 1, 3, 3), "larger than the padded input"),
    ("pool: STOCHASTIC kernel_size: 2", (1, 1, 3, 3), "STOCHASTIC"),
    ("kernel_size: 2 pad: 2", (1, 1, 3, 3), "smaller than the kernel"),
    ("global_pooling: true kernel_size: 2", (1, 1, 3, 3), "global_pooling"),
    ("stride: 2", (1, 1, 3, 3), "kernel_size"),
])
def test_errors_name_the_layer(text, shape, msg):
    with pytest.raises(NetError, match=msg) as exc:
        run_forward(_pool(text, name="poolZ"), make_blobs([shape]))
    assert "poolZ" in str(exc.value)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,shape", [
    ("pool: MAX kernel_size: 3 stride: 2", (2, 3, 11, 9)),
    ("pool: MAX kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (2, 3, 10, 10)),
    ("pool: MAX kernel_size: 2 stride: 3", (1, 2, 8, 7)),
    ("pool: MAX global_pooling: true", (2, 2, 5, 6)),
    ("pool: MAX global_pooling: true", (1, 2, 20, 20)),   # 400 positions: a 16-bit window mask
])
def test_window_mask_kept_by_the_layer_gives_caffes_mask_and_gradient(xp, text, shape):
    """The layer keeps the argmax as its position in the window (a small integer type); its mask
    top and its backward must be exactly those of Caffe's flat int32 mask."""
    from poseidon_cli.ops import pooling as pool_ops
    rng = np.random.default_rng(3)
    # few distinct values: ties everywhere, so "the first maximum wins" is exercised
    x = rng.integers(0, 4, size=shape).astype(np.float64)
    layer = _pool(text, xp)
    bottom = make_blobs([shape], xp=xp)
    bottom[0].data[...] = xp.asarray(x)
    top = run_forward(layer, bottom, n_top=2)
    assert layer._mask.dtype.itemsize < 4 or shape[2] * shape[3] >= 32767
    kw = layer._kw()
    y, flat = pool_ops.pool2d_forward(xp.asarray(x), pool_ops.MAX, **kw)
    P, Q = top[0].shape[2:]
    np.testing.assert_array_equal(to_host(top[0].data), to_host(y)[:, :, :P, :Q])
    np.testing.assert_array_equal(to_host(top[1].data), to_host(flat)[:, :, :P, :Q])
    dy = rng.normal(size=top[0].shape)
    top[0].diff[...] = xp.asarray(dy)
    layer.backward(top, [True], bottom)
    full = xp.zeros(y.shape)
    full[:, :, :P, :Q] = xp.asarray(dy)
    want = pool_ops.pool2d_backward(full, flat, shape, pool_ops.MAX, **kw)
    np.testing.assert_array_equal(to_host(bottom[0].diff), to_host(want))
