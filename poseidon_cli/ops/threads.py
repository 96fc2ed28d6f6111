"""A small shared CPU thread pool that splits array work over the batch axis.

NumPy releases the GIL inside ufunc loops, copies and BLAS calls on large arrays, so contiguous
batch slices handed to separate threads run in parallel, the way torch's intra-op threads do.

Size: ``POSEIDON_NUM_THREADS`` when set, else ``os.cpu_count()``; ``set_num_threads(n)`` changes
it at run time (1 = everything, BLAS included, runs serially on the caller's thread).

BLAS nesting: on the first ``parallel_for`` over NumPy arrays, numpy's OpenBLAS is set to ONE
thread for the whole process (through ``threadpoolctl`` when it is importable, else by calling
the set-threads entry of each loaded OpenBLAS), whatever the pool size. Every GEMM the
engine issues then sits inside one batch slice, so the parallelism comes from this pool only.
Why process-wide and not around each call: OpenBLAS worker threads busy-wait for a while after
every call, so a multi-threaded BLAS anywhere next to this pool competes with it for the cores
(on a loaded host a convolution ran several times slower with two OpenBLAS threads than with one;
README, Performance, has the measurement).

Calls nest safely: ``parallel_for`` inside a pool worker runs serially in that worker.
Only NumPy arrays are split; callers pass ``xp`` so the CuPy path runs as one call.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

_lock = threading.Lock()
_pool = None
_pool_size = 0
_num_threads = None
_blas_limited = False
_local = threading.local()


def _env_threads():
    v = os.environ.get("POSEIDON_NUM_THREADS", "").strip()
    if v:
        try:
            return max(1, int(v))
        except ValueError:
            pass
    return max(1, os.cpu_count() or 1)


def num_threads():
    """Threads the pool splits work over."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _env_threads()
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads from now on (``None``: back to the environment / cpu count)."""
    global _num_threads
    _num_threads = _env_threads() if n is None else max(1, int(n))


def _limit_blas():
    """Switch numpy's BLAS to one thread, once (see the module docstring)."""
    global _blas_limited
    if _blas_limited:
        return
    _blas_limited = True
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(1, user_api="blas")
        return
    except Exception:   # threadpoolctl missing: look for a loaded OpenBLAS ourselves
        pass
    _limit_openblas_ctypes()


_OPENBLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads", "openblas_set_num_threads64_")


def _limit_openblas_ctypes():
    """Fallback without threadpoolctl: call the set-threads entry of every OpenBLAS this process
    has loaded (Linux: listed in /proc/self/maps). No OpenBLAS found: nothing to do."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _OPENBLAS_SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(1))
                break


def _get_pool(workers):
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poseidon-op",
                                       initializer=_mark_worker)
            _pool_size = workers
        return _pool


def _mark_worker():
    _local.in_worker = True


def split(n, parts):
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes differing by at
    most one; fewer ranges when ``n < parts``."""
    parts = max(1, min(int(parts), int(n)))
    base, extra = divmod(int(n), parts)
    out, s = [], 0
    for i in range(parts):
        e = s + base + (1 if i < extra else 0)
        out.append((s, e))
        s = e
    return out


def parallel_for(n, fn, xp=numpy, min_items=2, cost=None, min_cost=1 << 16):
    """Call ``fn(start, stop)`` on contiguous slices of ``range(n)``, one per thread, and return
    their results in slice order.

    Runs ``fn(0, n)`` once on the caller's thread when: ``xp`` is not NumPy, one thread is
    configured, ``n < min_items``, ``cost`` (any work estimate, e.g. bytes touched) is below
    ``min_cost`` (splitting tiny work costs more than it saves), or this is already a pool worker.
    The caller's thread runs the first slice itself. Exceptions propagate after all slices ended.
    """
    if xp is not numpy:
        return [fn(0, n)]
    _limit_blas()
    T = num_threads()
    if (T <= 1 or n < min_items or getattr(_local, "in_worker", False)
            or (cost is not None and cost < min_cost)):
        return [fn(0, n)]
    ranges = split(n, T)
    if len(ranges) == 1:
        return [fn(0, n)]
    pool = _get_pool(len(ranges) - 1)
    futures = [pool.submit(fn, a, b) for a, b in ranges[1:]]
    first = err = None
    try:
        first = fn(*ranges[0])
    except BaseException as e:   # still wait for the workers: they write into shared arrays
        err = e
    results = [first]
    for f in futures:
        try:
            results.append(f.result())
        except BaseException as e:
            err = err or e
    if err is not None:
        raise err
    return results
