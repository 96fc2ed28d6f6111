"""Workers (Solver + PSSync) over an in-process PS (threads + LocalTransport) against one node."""
import os

import numpy as np
import pytest

from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job
from inprocess import train_cluster as run_workers
from poseidon_cli import config
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver


def train_single(solver_path):
    param = config.load_solver_param(solver_path)
    s = Solver(param, solver_path=solver_path, log=TrainLog(streams=[]))
    s.initial = {f"{name}/{i}": np.array(b.data, dtype=np.float64).ravel()
                 for name, blobs in s.net.params.items() for i, b in enumerate(blobs)}
    s.solve()
    return s


def train_cluster(solver_path, workers, shards=2, staleness=0, stop_at=None, resume=None):
    """Train ``workers`` Workers in threads over ``shards`` in-process shards (``inprocess.py``).
    ``stop_at``: stop after that many iterations (snapshots as configured); ``resume``: start
    every worker from this .solverstate (as ``poseidon train --snapshot`` does)."""
    return run_workers(solver_path, workers, shards=shards, staleness=staleness, stop_at=stop_at,
                       resume=resume)


@pytest.mark.parametrize("solver_type,workers", [("SGD", 2), ("Adam", 2), ("SGD", 4), ("Adam", 4)])
def test_p_workers_equal_one_worker_of_p_times_the_batch(tmp_path, solver_type, workers):
    paths = make_digits(tmp_path)
    lr = 0.05 if solver_type == "SGD" else 0.01
    single = write_job(tmp_path / "single", paths, batch=4 * workers, solver_type=solver_type, lr=lr)
    dist = write_job(tmp_path / "dist", paths, batch=4, solver_type=solver_type, lr=lr)
    s1 = train_single(single)
    workers = train_cluster(dist, workers=workers)
    ref = read_caffemodel(tmp_path / "single/snap/tiny_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "dist/snap/tiny_iter_20.caffemodel")
    assert sorted(ref) == sorted(got)
    # training moved the weights well beyond the tolerance used below
    assert max(rel_diff(ref[k], s1.initial[k]) for k in ref) > 1e-2
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    # replicas identical (all communicated params)
    for k, blob in enumerate(workers[0].solver.net.learnable_params):
        if workers[0].sync.syncs[k].communicated:
            np.testing.assert_array_equal(blob.data, workers[1].solver.net.learnable_params[k].data)


def test_staleness_two_trains_and_finishes_every_clock(tmp_path):
    """With s=2 the trajectory differs from BSP (stale reads, timing-dependent), but training
    still lowers the test loss well below the starting one and every worker completes every
    clock; the bound itself is tested in tests/ps."""
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=4, iters=20)
    start = Solver(config.load_solver_param(dist), solver_path=dist, log=TrainLog(streams=[]))
    start.test(0)
    initial = start.last_test_scores[0]["loss"]
    workers = train_cluster(dist, workers=2, staleness=2)
    assert all(w.client.clock_value == 20 for w in workers)
    final = workers[0].solver.last_test_scores[0]["loss"]
    assert final < initial - 0.5, (initial, final)
    assert os.path.exists(tmp_path / "dist/snap/tiny_iter_20.caffemodel")


def test_test_phase_averages_over_workers(tmp_path):
    """Each of 2 workers tests half of test_iter; the logged mean is the mean over both."""
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=4, iters=10)
    workers = train_cluster(dist, workers=2)
    a, b = (w.solver.last_test_scores[0] for w in workers)
    assert a == b  # every worker logs the cluster-wide mean
    assert 0.0 <= a["acc"] <= 1.0
