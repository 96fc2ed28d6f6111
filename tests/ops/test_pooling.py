"""Pooling ops: Caffe's known-answer cases (BVLC ``test_pooling_layer.cpp``), a naive Caffe-rule loop,
torch for ceil-mode MAX, finite differences for AVE/MAX backward."""
import math

import numpy as np
import pytest

from poseidon_cli.ops import pooling as pl

from .conftest import host, numeric_grad


def naive_pool(x, mode, k, s, p):
    """Direct transcription of Caffe's pooling loops (ceil + clip, divisor before clamping)."""
    N, C, H, W = x.shape
    P = [int(math.ceil((d + 2 * p - k) / s)) + 1 for d in (H, W)]
    for a, d in enumerate((H, W)):
        if p > 0 and (P[a] - 1) * s >= d + p:
            P[a] -= 1
    y = np.zeros((N, C, P[0], P[1]))
    mask = np.full((N, C, P[0], P[1]), -1)
    for n in range(N):
        for c in range(C):
            for ph in range(P[0]):
                for pw in range(P[1]):
                    hs, ws = ph * s - p, pw * s - p
                    he, we = min(hs + k, H + p), min(ws + k, W + p)
                    if mode == "AVE":
                        div = (he - hs) * (we - ws)
                        hs2, ws2, he2, we2 = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
                        y[n, c, ph, pw] = x[n, c, hs2:he2, ws2:we2].sum() / div
                    else:
                        hs2, ws2, he2, we2 = max(hs, 0), max(ws, 0), min(hs + k, H), min(ws + k, W)
                        best = -np.inf
                        for h in range(hs2, he2):
                            for w in range(ws2, we2):
                                if x[n, c, h, w] > best:
                                    best, mask[n, c, ph, pw] = x[n, c, h, w], h * W + w
                        y[n, c, ph, pw] = best
    return y, mask


def test_forward_square_known_answer(xp):
    plane = np.array([[1, 2, 5, 2, 3], [9, 4, 1, 4, 8], [1, 2, 5, 2, 3]], np.float32)
    x = xp.asarray(np.stack([plane, plane])[None])  # 1 x 2 x 3 x 5
    y, mask = pl.pool2d_forward(x, "MAX", 2, 1, 0)
    for c in range(2):
        np.testing.assert_array_equal(host(y)[0, c], [[9, 5, 5, 8], [9, 5, 5, 8]])
        np.testing.assert_array_equal(host(mask)[0, c], [[5, 2, 2, 9], [5, 12, 12, 9]])


def test_forward_max_padded_known_answer(xp):
    x = xp.asarray(np.array([[1, 2, 4], [2, 3, 2], [4, 2, 1]], np.float32)[None, None])
    y, _ = pl.pool2d_forward(x, "MAX", 3, 2, 2)
    np.testing.assert_array_equal(host(y)[0, 0], [[1, 4, 4], [4, 4, 4], [4, 4, 1]])


def test_forward_ave_known_answer(xp):
    y, mask = pl.pool2d_forward(xp.full((1, 1, 3, 3), 2.0), "AVE", 3, 1, 1)
    assert mask is None
    np.testing.assert_allclose(host(y)[0, 0], [[8 / 9, 4 / 3, 8 / 9], [4 / 3, 2, 4 / 3],
                                               [8 / 9, 4 / 3, 8 / 9]], rtol=1e-12)


def test_setup_sizes():
    assert (pl.pool_out_size(6, 3, 0, 2), pl.pool_out_size(5, 3, 0, 2)) == (3, 2)
    assert (pl.pool_out_size(6, 3, 1, 2), pl.pool_out_size(5, 3, 1, 2)) == (4, 3)
    assert pl.pool_out_size(32, 3, 0, 2) == 16  # CIFAR pool1 (floor would give 15)
    assert pl.pool_out_size(112, 3, 0, 2) == 56  # GoogLeNet pool1
    x = np.zeros((2, 3, 6, 5))
    assert pl.pool2d_forward(x, "MAX", 3, 2, 0)[0].shape == (2, 3, 3, 2)
    assert pl.pool2d_forward(x, "AVE", 3, 2, 1)[0].shape == (2, 3, 4, 3)
    assert pl.pool2d_forward(x, "MAX", global_pooling=True)[0].shape == (2, 3, 1, 1)


def test_global_pooling_values(xp):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    ym, m = pl.pool2d_forward(xp.asarray(x), "MAX", global_pooling=True)
    ya, _ = pl.pool2d_forward(xp.asarray(x), "AVE", global_pooling=True)
    np.testing.assert_allclose(host(ym)[..., 0, 0], x.max(axis=(2, 3)))
    np.testing.assert_allclose(host(ya)[..., 0, 0], x.mean(axis=(2, 3)))
    np.testing.assert_array_equal(host(m)[..., 0, 0], x.reshape(2, 3, -1).argmax(-1))
    with pytest.raises(ValueError):
        pl.pool2d_forward(x, "MAX", global_pooling=True, pad=1)


def test_cifar_pool2_divisor(xp):
    """k3 s2 on 16x16 -> 8x8; the last row/col windows overhang: divide by 6, the corner by 4."""
    x = np.random.default_rng(1).standard_normal((1, 2, 16, 16))
    y, _ = pl.pool2d_forward(xp.asarray(x), "AVE", 3, 2, 0)
    y = host(y)
    assert y.shape == (1, 2, 8, 8)
    np.testing.assert_allclose(y[0, :, 7, 0], x[0, :, 14:16, 0:3].sum(axis=(1, 2)) / 6)
    np.testing.assert_allclose(y[0, :, 0, 7], x[0, :, 0:3, 14:16].sum(axis=(1, 2)) / 6)
    np.testing.assert_allclose(y[0, :, 7, 7], x[0, :, 14:16, 14:16].sum(axis=(1, 2)) / 4)
    np.testing.assert_allclose(y[0, :, 3, 3], x[0, :, 6:9, 6:9].sum(axis=(1, 2)) / 9)


GEOMS = [(3, 2, 0), (3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 3, 2), (5, 3, 2), (2, 1, 1)]


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p", GEOMS)
def test_forward_matches_naive_caffe_loop(mode, k, s, p, xp):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 8))
    x[0, 0, 1:3, 1:3] = 0.5  # ties: the first maximum in row-major order must win
    y, mask = pl.pool2d_forward(xp.asarray(x), mode, k, s, p)
    ry, rmask = naive_pool(x, mode, k, s, p)
    np.testing.assert_allclose(host(y), ry, rtol=1e-12)
    if mode == "MAX":
        np.testing.assert_array_equal(host(mask), rmask)


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p", GEOMS)
def test_backward_matches_finite_differences(mode, k, s, p):
    rng = np.random.default_rng(3)
    x = rng.permutation(2 * 2 * 7 * 8).reshape(2, 2, 7, 8) / 10.0  # distinct: MAX is smooth
    y, mask = pl.pool2d_forward(x, mode, k, s, p)
    proj = rng.standard_normal(y.shape)
    dx = pl.pool2d_backward(proj, mask, x.shape, mode, k, s, p)
    num = numeric_grad(lambda v: pl.pool2d_forward(v, mode, k, s, p)[0], x.copy(), proj, h=1e-4)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-7)


def test_max_backward_routes_to_first_max_and_accumulates(xp):
    x = xp.asarray(np.array([[1, 9, 9], [9, 2, 9], [9, 9, 3]], float)[None, None])
    y, mask = pl.pool2d_forward(x, "MAX", 2, 1, 0)
    np.testing.assert_array_equal(host(mask)[0, 0], [[1, 1], [3, 5]])
    dx = pl.pool2d_backward(xp.ones((1, 1, 2, 2)), mask, x.shape, "MAX", 2, 1, 0)
    np.testing.assert_array_equal(host(dx)[0, 0], [[0, 2, 0], [1, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("k,s,p", [(3, 2, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_matches_torch_ceil_mode(k, s, p, xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 9, 10))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, k, s, p, ceil_mode=True)
    dy = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.tensor(dy))
    y, mask = pl.pool2d_forward(xp.asarray(x), "MAX", k, s, p)
    dx = pl.pool2d_backward(xp.asarray(dy), mask, x.shape, "MAX", k, s, p)
    np.testing.assert_allclose(host(y), ty.detach().numpy())
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), atol=1e-12)


def test_ave_matches_torch_without_padding(xp):
    """Without padding torch's ceil-mode divisor also excludes the overhang."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(5).standard_normal((2, 3, 16, 16))
    ty = torch.nn.functional.avg_pool2d(torch.tensor(x), 3, 2, 0, ceil_mode=True)
    y, _ = pl.pool2d_forward(xp.asarray(x), "AVE", 3, 2, 0)
    np.testing.assert_allclose(host(y), ty.numpy(), rtol=1e-12)


def test_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError):
        pl.pool2d_forward(x, "STOCHASTIC", 2, 2)
    with pytest.raises(ValueError):
        pl.pool2d_forward(x, "MAX", 7, 1)
    with pytest.raises(ValueError):
        pl.pool2d_forward(x, "MAX", 2, 1, 2)
    with pytest.raises(ValueError):
        pl.pool2d_backward(np.zeros((1, 1, 2, 2)), None, x.shape, "MAX", 2, 2)


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
def test_cache_chunks_and_threads_match_naive_loop(mode, monkeypatch):
    """The CPU path walks each thread's batch slice in cache-sized chunks: with a chunk of two
    images, two threads and an odd batch (slices 4+3, chunks 2+2, 2+1), forward values, the MAX
    mask and the backward must equal the naive loop's, image by image."""
    from poseidon_cli.ops import threads
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, 3, 9, 9))
    x[:, :, 2:4, 2:4] = 0.25   # ties inside windows
    monkeypatch.setattr(pl, "_CHUNK_BYTES", 2 * x[0].nbytes)
    old = threads.num_threads()
    threads.set_num_threads(2)
    try:
        y, mask = pl.pool2d_forward(x, mode, 3, 2, 1)
        proj = rng.standard_normal(y.shape)
        dx = pl.pool2d_backward(proj, mask, x.shape, mode, 3, 2, 1)
    finally:
        threads.set_num_threads(old)
    ry, rmask = naive_pool(x, mode, 3, 2, 1)
    np.testing.assert_allclose(y, ry, rtol=1e-12)
    # backward reference from the naive forward's routing: MAX to the mask, AVE spread / divisor
    rdx = np.zeros_like(x)
    N, C, P, Q = ry.shape
    for n in range(N):
        for c in range(C):
            for i in range(P):
                for j in range(Q):
                    if mode == "MAX":
                        h, w = divmod(int(rmask[n, c, i, j]), 9)
                        rdx[n, c, h, w] += proj[n, c, i, j]
                    else:
                        hs, ws = i * 2 - 1, j * 2 - 1
                        he, we = min(hs + 3, 10), min(ws + 3, 10)
                        div = (he - hs) * (we - ws)
                        rdx[n, c, max(hs, 0):min(he, 9), max(ws, 0):min(we, 9)] += \
                            proj[n, c, i, j] / div
    if mode == "MAX":
        np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_allclose(dx, rdx, rtol=1e-12, atol=1e-15)
