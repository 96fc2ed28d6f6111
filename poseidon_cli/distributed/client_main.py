"""One process of a distributed run: wire the real servers and transports around one Worker.

``run_client(spec, xp=None) -> exit code`` for worker ``spec.worker_index`` of client
``spec.client_id`` (``commands/cluster.py`` resolved ``spec.run_dir`` and picked ``xp``):

1. worker 0 of a client with T > 1 workers starts workers 1..T-1 (``procs.Supervisor``; their
   output in ``<run dir>/client_<k>.worker_<t>.log``);
2. builds the solver with ``spec.context`` (the data layers read this worker's partition), applies
   ``--weights`` / ``--snapshot``, logs the SFB decision table (rank 0);
3. worker 0 serves the client's PS shard (``SolverUpdater``) on its hosts-file address, and beside
   it the client's SFB handler and worker-port directory; worker t >= 1 serves its factors on a
   port of its own and registers it in that directory;
4. runs the worker's life cycle (connect, publish/install, barrier, solve, drain, flush, finish);
5. always: stops its helpers, writes ``stats.client<k>[.worker<t>].json``, stops its servers.

Everything here is wiring; the life cycle and its failure reporting belong to the Worker.
"""
from __future__ import annotations

import os
import signal
import sys

from .. import backend, config
from ..errors import ClusterError, Interrupted
from ..solver.log import TrainLog
from . import directory, sfb
from .procs import Supervisor
from .spec import ClusterSpec

#: seconds beyond the deadline that worker 0 waits for its client's other workers to finish
HELPER_MARGIN_S = 30.0


def peer_addresses(spec: ClusterSpec, security=None) -> dict:
    """SFB peers of this worker: worker 0 of client k at k's hosts-file address, worker t >= 1
    at the port client k's directory reports for it (looked up on the first send)."""
    out = {}
    T = spec.workers_per_client
    for r in range(spec.world_size):
        if r == spec.rank:
            continue
        k, t = divmod(r, T)
        h = spec.hosts[k]
        out[r] = h.address if t == 0 else (
            lambda deadline_s, h=h, t=t: directory.lookup_worker(h.address, h.ip, spec.job_id, t,
                                                                 deadline_s, security))
    return out


def _netoutputs_path(spec, param):
    if spec.rank != 0:
        return None
    stem = param.net and os.path.splitext(os.path.basename(param.net))[0] or "net"
    return os.path.join(spec.run_dir, f"{stem}.netoutputs")


def _stats_path(spec):
    k, t = spec.client_id, spec.worker_index
    name = f"stats.client{k}.json" if spec.workers_per_client == 1 else f"stats.client{k}.worker{t}.json"
    return os.path.join(spec.run_dir, name)


class SnapshotRequest:
    """Client 0's ``action_fn`` under the local launcher: the launcher turns Ctrl-C with
    ``--sigint-effect snapshot`` into SIGUSR1 to client 0, which writes a snapshot at its next
    iteration boundary (while every shard still serves, so the snapshot holds the cluster's
    weights) and then ends with :class:`Interrupted` (exit 130); the launcher stops the rest."""

    def __init__(self):
        self.requested = self.written = False

    def install(self):
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __call__(self):
        if self.written:
            raise Interrupted("interrupted: client 0 wrote a snapshot and stopped")
        if self.requested:
            self.written = True
            return "snapshot"
        return "none"


def run_client(spec: ClusterSpec, xp=None) -> int:
    """Run this process's worker until training ends; returns an exit code (see module doc)."""
    from ..ps.auth import Security
    from ..ps.client import PSClient, make_transport
    from ..ps.server import ShardServer
    from ..ps.store import ShardStore
    from ..ps.updaters import SolverUpdater
    from ..solver import snapshot as snap
    from ..solver.solver import Solver
    from .ps_sync import PSSync
    from .worker import Worker

    if spec.client_id is None:
        raise ClusterError(f"{spec.hosts_path}: cannot tell which line is this machine",
                           "pass --client-id K")
    if spec.secret is None:
        raise ClusterError(f"client {spec.client_id}: no job secret",
                           "give every client the same one: --secret-file FILE or $POSEIDON_SECRET")
    security = Security.for_job(spec.secret, spec.job_id, spec.tls)
    xp = xp if xp is not None else backend.use_cpu()
    k, t, T = spec.client_id, spec.worker_index, spec.workers_per_client
    if spec.run_dir is None:   # one rule for the folder, the command's (commands/common.run_dir)
        raise ValueError("run_client needs spec.run_dir resolved")
    param = config.load_solver_param(spec.solver)
    log = TrainLog(streams=[sys.stdout])
    with Supervisor() as helpers:
        if t == 0:   # started first, so the other workers build their nets meanwhile
            for u in range(1, T):
                helpers.start(f"worker {u} of client {k}", spec.child_argv(k, u),
                              os.path.join(spec.run_dir, f"client_{k}.worker_{u}.log"))
        sync = PSSync(overlap=spec.overlap, deadline_s=spec.deadline_s, svb=spec.svb,
                      num_shards=spec.num_clients)
        actions = SnapshotRequest().install() if spec.rank == 0 else None
        solver = Solver(param, solver_path=spec.solver, context=spec.context, xp=xp, log=log,
                        netoutputs_path=_netoutputs_path(spec, param), sync=sync,
                        action_fn=actions)
        # a client started by a remote launcher resolves --snapshot latest itself: the snapshot
        # folder must then be shared, as for any --snapshot of a cluster
        resume = snap.resolve_snapshot(spec.snapshot, spec.solver)
        if spec.weights and not resume:
            solver.copy_weights(spec.weights)
        if resume:
            solver.restore(resume)
        log.info(f"client {k} of {spec.num_clients}" + (f", worker {t} of {T}" if T > 1 else "") +
                 f": shard at {spec.me.address}, staleness {spec.staleness}, "
                 f"{'wait-free backprop' if spec.overlap else 'no overlap'}")
        if spec.rank == 0:
            for line in sync.decision_table():
                log.info(line)

        servers, factors = [], None
        if sync.sfb_params:
            factors = sync.setup_sfb(spec.job_id, sfb.GrpcFactorTransport(peer_addresses(spec, security),
                                                                          security))
        try:
            if t == 0:
                store = ShardStore(k, spec.num_clients, spec.job_id,
                                   SolverUpdater(param, sync.multipliers(), solver.iter),
                                   deadline_s=spec.deadline_s,
                                   heartbeat_timeout_s=min(spec.deadline_s, 15.0))
                # every worker's heartbeat stream holds a thread for the whole job, and each may have
                # a control call in flight: start those threads now (see ps/pools.py)
                server = ShardServer(store, host=spec.me.ip, port=spec.me.port, security=security,
                                     start_threads=2 * spec.num_clients * T + 8)
                if factors is not None:
                    server.add_generic_handlers([sfb.grpc_handler(factors)])
                if T > 1:
                    server.add_generic_handlers([directory.WorkerDirectory(spec.job_id).handler()])
                server.start()
                servers.append(server)
            elif factors is not None:   # a port of its own, announced through worker 0
                factor_server, port = sfb.serve_factors(factors, spec.me.ip, security=security)
                servers.append(factor_server)
                directory.register_worker(spec.me.address, spec.job_id, t, port, spec.deadline_s,
                                          security)
            # control over gRPC, tensors over each shard's plain-TCP data plane (ps/README.md)
            transports = [make_transport(h.address, i, spec.job_id, security=security)
                          for i, h in enumerate(spec.hosts)]
            client = PSClient(transports, spec.job_id, worker_id=spec.rank,
                              num_workers=spec.world_size, params=sync.ps_layout(),
                              staleness=spec.staleness, deadline_s=spec.deadline_s,
                              connect_timeout_s=spec.deadline_s, job_config=sync.job_config())
            worker = Worker(solver, client, factors=factors, spec=spec)
            try:
                worker.run()
                helpers.wait_all(spec.deadline_s + HELPER_MARGIN_S)
            finally:
                worker.close()
                helpers.stop(grace_s=10.0)
                worker.write_stats(_stats_path(spec))
        finally:
            for server in servers:
                server.stop(grace=1.0)
            if factors is not None:
                factors.close()
    return 0
