"""Whole clusters inside one test process: every in-process test builds its workers here.

Each worker is the production :class:`~poseidon_cli.distributed.worker.Worker` (so the start-up
and shutdown sequence is the one ``client_main.run_client`` runs) around a ``Solver(sync=PSSync(...))``; the
shards are in-process ``ShardStore`` objects reached through ``LocalTransport``, and SFB peers
talk through one ``LocalFactorHub``. Workers run in threads.

``train_cluster(solver_path, workers, ...) -> [Worker]`` builds and runs one; ``build_cluster``
only builds it (for tests that drive pieces by hand); ``make_solver`` builds one worker's solver.
"""
from __future__ import annotations

import threading
import time

from poseidon_cli import config
from poseidon_cli.distributed import sfb
from poseidon_cli.distributed.ps_sync import PSSync
from poseidon_cli.ps.updaters import SolverUpdater
from poseidon_cli.distributed.worker import Worker
from poseidon_cli.layers.base import RunContext
from poseidon_cli.ps.client import PSClient
from poseidon_cli.ps.store import ShardStore
from poseidon_cli.ps.local_transport import LocalTransport
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver

JOB = "job"


def make_solver(param, solver_path, rank, workers, *, shards=2, svb="auto", overlap=True,
                deadline_s=30.0):
    """Worker ``rank`` of ``workers``' Solver with a PSSync (one worker per client)."""
    sync = PSSync(overlap=overlap, deadline_s=deadline_s, svb=svb, num_shards=shards)
    return Solver(param, solver_path=solver_path, log=TrainLog(streams=[]),
                  context=RunContext(client_id=rank, num_clients=workers), sync=sync)


def build_cluster(solver_path, workers, *, shards=2, staleness=0, stop_at=None, resume=None,
                  svb="auto", overlap=True, deadline_s=30.0, chunk_bytes=64 * 1024, slow=None):
    """The Workers of a cluster, not started. ``stop_at``: stop after that many iterations
    (snapshots as configured, none after training); ``resume``: every worker restores this
    .solverstate first (as ``poseidon train --snapshot`` does); ``slow``: {rank: seconds} slept
    before each iteration's forward/backward."""
    param = config.load_solver_param(solver_path)
    if stop_at is not None:
        param.max_iter = stop_at
        param.snapshot_after_train = False
    solvers = [make_solver(param, solver_path, r, workers, shards=shards, svb=svb, overlap=overlap,
                           deadline_s=deadline_s) for r in range(workers)]
    if resume:
        for s in solvers:
            s.restore(resume)
    for r, d in (slow or {}).items():
        solvers[r].add_callback(lambda d=d: time.sleep(d), lambda: None)
    lead = solvers[0].sync
    stores = [ShardStore(i, shards, JOB, SolverUpdater(param, lead.multipliers(), solvers[0].iter),
                         deadline_s=deadline_s) for i in range(shards)]
    hub = sfb.LocalFactorHub()
    out = []
    for r, s in enumerate(solvers):
        client = PSClient([LocalTransport(st) for st in stores], JOB, r, workers, s.sync.ps_layout(),
                          staleness=staleness, deadline_s=deadline_s, heartbeat_s=None,
                          job_config=s.sync.job_config())
        factors = None
        if s.sync.sfb_params:
            factors = s.sync.setup_sfb(JOB, hub.transport(), chunk_bytes=chunk_bytes)
            hub.register(r, factors)
        out.append(Worker(s, client, factors=factors))
    return out


def run_cluster(workers, join_s=120.0):
    """Run every Worker in a thread; close them all; fail naming the workers that raised."""
    errors = []

    def run(w):
        try:
            w.run()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((w.rank, e))

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
    for w in workers:
        w.close()
    assert not errors, errors
    return workers


def train_cluster(solver_path, workers, **kwargs):
    """Build and run a cluster (see :func:`build_cluster`); returns its Workers."""
    return run_cluster(build_cluster(solver_path, workers, **kwargs))
