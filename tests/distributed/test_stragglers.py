"""Stragglers under SSP (issue 18): within the staleness bound a worker does not wait for a slow
one, and a display iteration is the one place it still does (an average over every worker).

Two in-process workers that are slow on alternate iterations: at s = 0 each waits for the other
every iteration; at s = 2 the slowness averages out and neither waits; with ``display: 1`` every
iteration averages the loss over both workers, which makes s = 2 wait like s = 0 (what the
scaling bench measured before its cluster solver stopped displaying every iteration). The waits
are read from the per-iteration stats (``wait_params_s`` for pulls, ``reduce_s`` for averages),
not from wall times, so the test holds on a loaded machine.
"""
import re
import time

from cluster_helpers import make_digits, write_job
from inprocess import build_cluster, run_cluster

ITERS = 20
SLOW_S = 0.1
# the total a worker would wait if it waited for the other on each of its fast iterations
STRAGGLER_S = ITERS / 2 * SLOW_S


def _job(tmp_path, name, display):
    path = write_job(tmp_path / name, make_digits(tmp_path / name), batch=4, iters=ITERS)
    with open(path) as fh:
        text = fh.read()
    text = re.sub(r"display: \d+", f"display: {display}", text)
    text = re.sub(r"test_interval: \d+", f"test_interval: {ITERS + 1}", text)   # no test phase
    text = text.replace("snapshot_after_train: true", "snapshot_after_train: false")
    with open(path, "w") as fh:
        fh.write(text)
    return path


def _waits(tmp_path, name, staleness, display):
    """(parameter waits, reductions) of worker 0 in seconds, summed over its iterations."""
    workers = build_cluster(_job(tmp_path, name, display), 2, staleness=staleness)
    for rank, w in enumerate(workers):
        solver = w.solver
        # worker r is slow on the iterations of parity r (the same mean speed for both); slow
        # after its forward/backward, i.e. after it installed the values it waited for, as a
        # slow GPU would be (a sleep before the forward would hide the wait behind it)
        solver.add_callback(lambda: None,
                            lambda s=solver, r=rank: s.iter % 2 == r and time.sleep(SLOW_S))
    run_cluster(workers)
    assert all(w.client.clock_value == ITERS for w in workers)
    rows = workers[0].sync.stats()["iterations"]
    assert len(rows) == ITERS
    return (sum(r["wait_params_s"] for r in rows), sum(r["reduce_s"] for r in rows))


def test_staleness_absorbs_alternating_stragglers_unless_every_iteration_displays(tmp_path):
    wait0, red0 = _waits(tmp_path, "s0", staleness=0, display=0)
    assert red0 == 0.0                       # display 0, no test: nothing is averaged
    assert wait0 > 0.5 * STRAGGLER_S, wait0  # BSP: the fast worker waits every iteration

    wait2, red2 = _waits(tmp_path, "s2", staleness=2, display=0)
    assert red2 == 0.0
    assert wait2 < 0.3 * STRAGGLER_S, (wait2, wait0)

    wait2d, red2d = _waits(tmp_path, "s2d1", staleness=2, display=1)
    # the loss average of every display iteration is a barrier: the wait moved there
    assert red2d > 0.5 * STRAGGLER_S, (wait2d, red2d)
