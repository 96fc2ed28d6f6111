"""Thread pools whose size is settled at start-up.

``concurrent.futures.ThreadPoolExecutor`` starts a thread only when a task arrives while every
thread it has is busy, and never stops one. A pool therefore keeps growing, one thread at a time,
each time the job reaches a new peak of concurrent calls, which can happen hours into a run; a long
run's thread count then says nothing about a leak. Starting the threads a pool is expected to need
up front makes the count flat from the first iteration on (a later peak above it still grows the
pool, up to its ``max_workers``).
"""
from __future__ import annotations

import concurrent.futures as cf
import threading

_START_TIMEOUT_S = 30.0


def started_pool(max_workers: int, start: int, thread_name_prefix: str = "") -> cf.ThreadPoolExecutor:
    """A ``ThreadPoolExecutor(max_workers, thread_name_prefix)`` whose first ``min(start,
    max_workers)`` threads are already running.

    Each of those tasks waits at one barrier until all have started, so none can finish and leave
    a thread idle for the next: the pool must start a thread per task. Raises RuntimeError if they
    do not all start within a deadline (a machine out of threads)."""
    pool = cf.ThreadPoolExecutor(max_workers, thread_name_prefix=thread_name_prefix)
    n = max(0, min(int(start), int(max_workers)))
    if n == 0:
        return pool
    barrier = threading.Barrier(n + 1, timeout=_START_TIMEOUT_S)
    futures = [pool.submit(barrier.wait) for _ in range(n)]
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pool.shutdown(wait=False, cancel_futures=True)
        raise RuntimeError(f"could not start {n} threads within {_START_TIMEOUT_S:.0f}s") from None
    cf.wait(futures, timeout=_START_TIMEOUT_S)
    return pool
