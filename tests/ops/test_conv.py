"""Convolution/deconvolution ops against a naive loop, torch.nn.functional, and finite differences."""
import numpy as np
import pytest

from poseidon_cli.ops import conv as cv

from .conftest import host, numeric_grad

# (N, C, H, W, O, k, stride, pad, dilation, group)
CASES = [
    (2, 3, 7, 6, 4, (3, 2), 1, 0, 1, 1),
    (3, 8, 9, 9, 6, 3, 2, 1, 1, 2),          # strided, grouped
    (2, 8, 10, 11, 8, 3, 1, 2, 2, 4),        # dilated, grouped
    (2, 6, 5, 5, 4, 1, 1, 0, 1, 2),          # 1x1 pointwise path
    (2, 6, 9, 8, 4, 1, 2, 0, 1, 1),          # 1x1 strided (column path)
    (2, 12, 13, 13, 6, (5, 3), (2, 3), (3, 1), (1, 2), 3),
    (3, 2, 7, 7, 4, 3, 1, 4, 1, 1),          # pad > dilation*(k-1): col2im backward
    (5, 10, 8, 8, 6, 5, 1, 2, 1, 1),         # "same" conv, NHWC columns, several chunks
]


def naive_conv(x, w, b, stride, pad, dilation, group):
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    sh, sw = cv._pair(stride, "s")
    ph, pw = cv._pair(pad, "p")
    dh, dw = cv._pair(dilation, "d")
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    Og = O // group
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            gi = o // Og
            for ho in range(Ho):
                for wo in range(Wo):
                    s = 0.0 if b is None else b[o]
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                hh = ho * sh - ph + i * dh
                                ww = wo * sw - pw + j * dw
                                if 0 <= hh < H and 0 <= ww < W:
                                    s += w[o, c, i, j] * x[n, gi * Cg + c, hh, ww]
                    y[n, o, ho, wo] = s
    return y


def _kpair(k):
    return k if isinstance(k, tuple) else (k, k)


def _make(case, rng):
    N, C, H, W, O, k, s, p, d, g = case
    kh, kw = _kpair(k)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((O, C // g, kh, kw))
    b = rng.standard_normal(O)
    return x, w, b, s, p, d, g


@pytest.mark.parametrize("case", CASES)
def test_forward_matches_naive_loop(case, xp):
    x, w, b, s, p, d, g = _make(case, np.random.default_rng(0))
    y = cv.conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), s, p, d, g)
    np.testing.assert_allclose(host(y), naive_conv(x, w, b, s, p, d, g), rtol=1e-10, atol=1e-10)
    y0 = cv.conv2d_forward(xp.asarray(x), xp.asarray(w), None, s, p, d, g)
    np.testing.assert_allclose(host(y0), naive_conv(x, w, None, s, p, d, g), atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_forward_and_backward_match_torch(case, xp):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x, w, b, s, p, d, g = _make(case, rng)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d, groups=g)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    y = cv.conv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), s, p, d, g)
    dx, dw, db = cv.conv2d_backward(xp.asarray(x), xp.asarray(w), xp.asarray(dy), s, p, d, g)
    for ours, ref in [(y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)]:
        np.testing.assert_allclose(host(ours), ref.detach().numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES[:4])
def test_backward_matches_finite_differences(case):
    rng = np.random.default_rng(2)
    x, w, b, s, p, d, g = _make(case, rng)
    y = cv.conv2d_forward(x, w, b, s, p, d, g)
    proj = rng.standard_normal(y.shape)
    dx, dw, db = cv.conv2d_backward(x, w, proj, s, p, d, g)
    np.testing.assert_allclose(dx, numeric_grad(lambda v: cv.conv2d_forward(v, w, b, s, p, d, g),
                                                x.copy(), proj), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, numeric_grad(lambda v: cv.conv2d_forward(x, v, b, s, p, d, g),
                                                w.copy(), proj), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, numeric_grad(lambda v: cv.conv2d_forward(x, w, v, s, p, d, g),
                                                b.copy(), proj), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["flip", "col2im"])
def test_backward_data_methods_agree(method, xp):
    rng = np.random.default_rng(3)
    x, w, b, s, p, d, g = _make((2, 6, 9, 9, 4, 3, 1, 1, 2, 2), rng)
    dy = rng.standard_normal((2, 4, 7, 7))
    ref = naive_backward_data(dy, w, x.shape, p, d, g)
    got = cv.conv2d_backward_data(xp.asarray(dy), xp.asarray(w), x.shape, s, p, d, g, method)
    np.testing.assert_allclose(host(got), ref, atol=1e-10)


def naive_backward_data(dy, w, x_shape, pad, dilation, group):
    """Stride-1 adjoint by explicit scatter (independent of both implementations)."""
    dx = np.zeros(x_shape)
    N, C, H, W = x_shape
    O, Cg, kh, kw = w.shape
    Og = O // group
    for n in range(N):
        for o in range(O):
            gi = o // Og
            for ho in range(dy.shape[2]):
                for wo in range(dy.shape[3]):
                    for c in range(Cg):
                        for i in range(kh):
                            for j in range(kw):
                                hh, ww = ho - pad + i * dilation, wo - pad + j * dilation
                                if 0 <= hh < H and 0 <= ww < W:
                                    dx[n, gi * Cg + c, hh, ww] += w[o, c, i, j] * dy[n, o, ho, wo]
    return dx


def test_flip_method_rejects_strides():
    with pytest.raises(ValueError):
        cv.conv2d_backward_data(np.zeros((1, 2, 3, 3)), np.zeros((2, 2, 3, 3)), (1, 2, 7, 7),
                                stride=2, method="flip")


def test_float32_in_float32_out_and_chunking(xp):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, 16, 5, 5)).astype(np.float32)
    ref = cv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, 1, 2)
    old = cv._CHUNK_BYTES
    try:
        cv._CHUNK_BYTES = 1  # one image per chunk
        y = cv.conv2d_forward(xp.asarray(x), xp.asarray(w), None, 1, 2)
    finally:
        cv._CHUNK_BYTES = old
    assert y.dtype == np.float32
    np.testing.assert_allclose(host(y), ref, rtol=1e-4, atol=1e-4)


def test_sobel_is_separable():
    """Caffe's TestSobelConvolution: 3x3 Sobel == 3x1 [1,2,1] then 1x3 [-1,0,1]."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 1, 8, 9))
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float).reshape(1, 1, 3, 3)
    a = cv.conv2d_forward(x, np.array([1, 2, 1.]).reshape(1, 1, 3, 1), None)
    b = cv.conv2d_forward(a, np.array([-1, 0, 1.]).reshape(1, 1, 1, 3), None)
    np.testing.assert_allclose(cv.conv2d_forward(x, sobel, None), b, atol=1e-12)


def test_out_size_and_errors():
    assert cv.conv_out_size(28, 5) == 24
    assert cv.conv_out_size(32, 5, 2) == 32
    assert cv.conv_out_size(227, 11, 0, 4) == 55
    assert cv.conv_out_size(10, 3, 0, 1, 2) == 6
    assert cv.conv_out_size(8, 3, 0, 3) == 2  # floor
    assert cv.deconv_out_size(4, 4, 1, 2) == 8
    with pytest.raises(ValueError):
        cv.conv_out_size(3, 5)
    with pytest.raises(ValueError):
        cv.conv2d_forward(np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3, 3)), None, group=2)
    with pytest.raises(ValueError):
        cv.conv2d_forward(np.zeros((1, 4, 5, 5)), np.zeros((4, 3, 3, 3)), None)
    with pytest.raises(ValueError):
        cv.conv2d_backward(np.zeros((1, 3, 5, 5)), np.zeros((4, 3, 3, 3)), np.zeros((1, 4, 2, 2)))


DECONV_CASES = [(2, 4, 5, 6, 6, 3, 2, 1, 1, 2), (2, 3, 4, 4, 2, 4, 2, 1, 1, 1),
                (1, 4, 5, 5, 4, 3, 1, 1, 2, 1)]


@pytest.mark.parametrize("case", DECONV_CASES)
def test_deconv_matches_torch(case, xp):
    torch = pytest.importorskip("torch")
    N, C, H, W, O, k, s, p, d, g = case
    rng = np.random.default_rng(6)
    x, w, b = (rng.standard_normal(sh) for sh in [(N, C, H, W), (C, O // g, k, k), (O,)])
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv_transpose2d(tx, tw, tb, stride=s, padding=p, dilation=d,
                                              groups=g)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    y = cv.deconv2d_forward(xp.asarray(x), xp.asarray(w), xp.asarray(b), s, p, d, g)
    dx, dw, db = cv.deconv2d_backward(xp.asarray(x), xp.asarray(w), xp.asarray(dy), s, p, d, g)
    for ours, ref in [(y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)]:
        np.testing.assert_allclose(host(ours), ref.detach().numpy(), rtol=1e-9, atol=1e-9)


def test_deconv_is_adjoint_of_conv():
    """<conv(x), z> == <x, deconv(z)> with the same weight (no bias)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 9, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    y = cv.conv2d_forward(x, w, None, 2, 1, 1, 2)
    z = rng.standard_normal(y.shape)
    xz = cv.deconv2d_forward(z, w, None, 2, 1, 1, 2)
    assert xz.shape == x.shape
    assert abs((y * z).sum() - (x * xz).sum()) < 1e-9


@pytest.mark.parametrize("group", [1, 2])
def test_pointwise_on_two_threads_matches_torch(group):
    """The 1x1 path's per-image GEMMs split over the pool (inputs large enough to be split)."""
    torch = pytest.importorskip("torch")
    from poseidon_cli.ops import threads
    rng = np.random.default_rng(4)
    x, w, b, s, p, d, g = _make((5, 8, 16, 16, 6, 1, 1, 0, 1, group), rng)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = torch.nn.functional.conv2d(tx, tw, tb, groups=g)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    before = threads.num_threads()
    threads.set_num_threads(2)
    try:
        y = cv.conv2d_forward(x, w, b, s, p, d, g)
        dx, dw, db = cv.conv2d_backward(x, w, dy, s, p, d, g)
    finally:
        threads.set_num_threads(before)
    for ours, ref in [(y, ty), (dx, tx.grad), (dw, tw.grad), (db, tb.grad)]:
        np.testing.assert_allclose(ours, ref.detach().numpy(), rtol=1e-9, atol=1e-9)
