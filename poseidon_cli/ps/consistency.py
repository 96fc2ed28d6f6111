"""Stale-synchronous-parallel (SSP) rules as pure functions (no I/O, no locks).

Clock arithmetic (the whole contract; see ps/README.md):

* A worker's clock ``w`` is the number of times it has called ``clock()``: it starts at 0 and,
  while running iteration ``t`` (0-based), ``w == t``. Its gradient pushes during iteration ``t``
  carry clock ``t``; after iteration ``t`` it calls ``clock()`` and ``w`` becomes ``t + 1``.
* A chunk's applied clock ``a`` is the number of clocks whose update is in it: clocks ``0..a-1``
  each had all P workers' gradients averaged and stepped through the updater, in clock order.
* A pull issued at worker clock ``c`` with staleness ``s`` needs ``required_clock(c, s) = max(0, c-s)``:
  it returns only once ``a >= c - s`` (so it holds every worker's update from clocks ``<= c - s - 1``)
  and every worker's clock is ``>= c - s`` (so no worker runs more than ``s`` clocks ahead of the
  slowest). ``s = 0`` is BSP: the pull for iteration ``t + 1`` sees all updates of iteration ``t``.
"""
from __future__ import annotations

from typing import Mapping


def required_clock(pull_clock: int, staleness: int, min_clock: int = 0) -> int:
    """The applied clock a pull at ``pull_clock`` must see: ``max(0, pull_clock - staleness, min_clock)``."""
    if staleness < 0:
        raise ValueError(f"staleness must be >= 0, got {staleness}")
    return max(0, pull_clock - staleness, min_clock)


def pull_ready(pull_clock: int, staleness: int, applied_clock: int, min_worker_clock: int,
               min_clock: int = 0) -> bool:
    """True when a pull at ``pull_clock`` may return a chunk whose applied clock is ``applied_clock``
    while the slowest worker's clock is ``min_worker_clock``."""
    need = required_clock(pull_clock, staleness, min_clock)
    return applied_clock >= need and min_worker_clock >= max(0, pull_clock - staleness)


def may_proceed(worker_clock: int, min_worker_clock: int, staleness: int) -> bool:
    """True when a worker at ``worker_clock`` is at most ``staleness`` clocks ahead of the slowest."""
    return worker_clock - min_worker_clock <= staleness


def laggards(worker_clocks: Mapping[int, int], needed: int) -> list[int]:
    """Worker ids whose clock is below ``needed`` (the ones a blocked pull is waiting for)."""
    return sorted(w for w, c in worker_clocks.items() if c < needed)


def update_complete(received_from: set, num_workers: int) -> bool:
    """A chunk's clock may be applied once all ``num_workers`` gradients for it have arrived."""
    return len(received_from) == num_workers


def is_duplicate(clock: int, applied_clock: int, received_from: set, worker_id: int) -> bool:
    """A push of (worker, clock, chunk) is a duplicate if that clock is already applied to the chunk
    or the worker's gradient for it is already in the pending sum. Duplicates are ignored."""
    return clock < applied_clock or worker_id in received_from
