"""ops/threads: batch splitting, error propagation, nesting; threaded conv/pool equal serial runs
and independent references (arrays large enough that the ops really split)."""
import threading

import numpy as np
import pytest

from poseidon_cli.ops import conv as cv
from poseidon_cli.ops import pooling as pl
from poseidon_cli.ops import threads


@pytest.fixture
def two_threads():
    old = threads.num_threads()
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(old)


def test_split_covers_range_evenly():
    assert threads.split(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert threads.split(2, 4) == [(0, 1), (1, 2)]
    assert threads.split(5, 1) == [(0, 5)]


def test_parallel_for_uses_several_threads_and_keeps_order(two_threads):
    seen = set()

    def fn(a, b):
        seen.add(threading.get_ident())
        return (a, b)
    assert threads.parallel_for(9, fn) == [(0, 5), (5, 9)]
    assert len(seen) == 2
    # below the cost threshold: one call on the caller's thread
    assert threads.parallel_for(9, fn, cost=10) == [(0, 9)]


def test_parallel_for_propagates_worker_errors(two_threads):
    def fn(a, b):
        if a > 0:
            raise KeyError("worker slice")
        return a
    with pytest.raises(KeyError, match="worker slice"):
        threads.parallel_for(4, fn)


def test_nested_calls_run_serially_in_workers(two_threads):
    inner = []

    def fn(a, b):
        inner.append(threads.parallel_for(b - a, lambda c, d: (c, d)))
        return a
    threads.parallel_for(4, fn)
    assert sorted(map(len, inner)) == [1, 2]   # the worker's nested call did not split


def _naive_max_pool(x, k, s):
    N, C, H, W = x.shape
    P = pl.pool_out_size(H, k, 0, s)
    Q = pl.pool_out_size(W, k, 0, s)
    y = np.empty((N, C, P, Q), x.dtype)
    m = np.empty((N, C, P, Q), np.int64)
    for p in range(P):
        for q in range(Q):
            h0, w0 = p * s, q * s
            win = x[:, :, h0:min(h0 + k, H), w0:min(w0 + k, W)]
            flat = win.reshape(N, C, -1)
            a = flat.argmax(-1)       # numpy: first maximum in row-major order, as Caffe
            y[:, :, p, q] = flat.max(-1)
            m[:, :, p, q] = (h0 + a // win.shape[3]) * W + w0 + a % win.shape[3]
    return y, m


@pytest.mark.parametrize("k,s", [(3, 2), (2, 2)])
def test_threaded_max_pool_matches_naive_and_serial(two_threads, k, s):
    rng = np.random.default_rng(3)
    # quantised values: plenty of ties inside windows exercise the first-max rule
    x = rng.integers(0, 4, (6, 16, 17, 17)).astype(np.float32)
    assert x.nbytes > 1 << 16   # large enough to be split
    y, mask = pl.pool2d_forward(x, "MAX", k, s, 0)
    ry, rm = _naive_max_pool(x, k, s)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(mask, rm)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = pl.pool2d_backward(dy, mask, x.shape, "MAX", k, s, 0)
    planes = 6 * 16
    ref = np.zeros((planes, 17 * 17))
    for r, (mm, dd) in enumerate(zip(rm.reshape(planes, -1), dy.reshape(planes, -1))):
        np.add.at(ref[r], mm, dd)
    np.testing.assert_allclose(dx.reshape(planes, -1), ref, rtol=1e-6, atol=1e-6)
    threads.set_num_threads(1)
    y1, m1 = pl.pool2d_forward(x, "MAX", k, s, 0)
    np.testing.assert_array_equal(y1, y)
    np.testing.assert_array_equal(m1, mask)
    np.testing.assert_array_equal(pl.pool2d_backward(dy, mask, x.shape, "MAX", k, s, 0), dx)


@pytest.mark.parametrize("C,k,pad,stride", [(16, 3, 1, 1), (2, 5, 2, 1), (16, 3, 1, 2)])
def test_threaded_conv_matches_serial(two_threads, C, k, pad, stride):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((7, C, 20, 20)).astype(np.float32)
    w = rng.standard_normal((12, C, k, k)).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    y = cv.conv2d_forward(x, w, b, stride, pad)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = cv.conv2d_backward(x, w, dy, stride, pad)
    threads.set_num_threads(1)
    y1 = cv.conv2d_forward(x, w, b, stride, pad)
    want = cv.conv2d_backward(x, w, dy, stride, pad)
    np.testing.assert_allclose(y, y1, rtol=1e-5, atol=1e-4)
    for a, r in zip(got, want):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-3)


def test_openblas_is_single_threaded_once_ops_ran():
    """The pool supplies the parallelism; a multi-threaded OpenBLAS next to it would nest."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    threads.parallel_for(4, lambda a, b: None)
    blas = [i for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]
    if not blas:
        pytest.skip("numpy is not linked to OpenBLAS here")
    assert all(i["num_threads"] == 1 for i in blas)
