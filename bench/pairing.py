"""Timing two engines side by side in one process, fairly.

Why blocks and not strict alternation: PyTorch's OpenMP threads busy-wait for a while after each
parallel region (libgomp's spin count), so in a strict ours/torch/ours/... alternation every one of
our steps starts while torch's threads still spin on the same cores. Measured on the 2-core host
(LeNet, batch 64, 2 threads): our step took 27 ms right after a torch step and 17 ms after one of
ours or after a 0.5 s pause. Neither engine sees another's pool in real use, so each is timed in
blocks of consecutive steps, the first step of every block discarded (it pays for the other's
spinning threads and refills caches), and the blocks alternate so that drift on a shared machine
still hits both alike.
"""
from __future__ import annotations

import time

import numpy as np


def blocked_medians(fa, fb, reps, block=3, clock=time.perf_counter):
    """Median seconds (by ``clock``) of ``fa`` and of ``fb`` over ``reps`` timed calls each,
    taken in alternating blocks of ``block`` timed calls, each block after one untimed call."""
    return tuple(blocked_medians_of([fa, fb], reps, block, clock))


def blocked_medians_of(fns, reps, block=3, clock=time.perf_counter):
    """``blocked_medians`` for any number of callables, in rotation; a list of medians."""
    times = [[] for _ in fns]
    while len(times[0]) < reps:
        n = min(block, reps - len(times[0]))
        for f, out in zip(fns, times):
            f()   # discarded: the previous callable's threads may still be spinning
            for _ in range(n):
                t = clock()
                f()
                out.append(clock() - t)
    return [float(np.median(t)) for t in times]
