"""A training worker's life cycle (:class:`Worker`), and one client of a distributed run.

:class:`Worker` ``(solver, client, *, factors=None, spec=None)`` owns the sequence every worker
follows -- connect, attach, publish/install the initial state, barrier, prime the pulls, solve,
drain, flush the factors, finish -- and its clean-up (:meth:`Worker.close`); the real client and
every in-process test (``tests/distributed/inprocess.py``) build their workers through it. The
solver carries a ``PSSync`` (``ps_sync.py``): wait-free backprop pushes, per-layer waits for fresh
parameters, one clock per iteration; display/test values averaged over workers; worker 0 logs,
writes ``.netoutputs`` and snapshots (weights and history read back from the PS, so the files
resume on one node or on any number of clients).

``run_client(client_id, hosts, opts)`` (``poseidon train --hosts`` on this machine) wires the real
pieces: the solver with ``RunContext(client_id, num_clients)`` (each client reads its partition;
``--weights`` / ``--snapshot`` applied locally), this client's PS shard on its hosts-file port
(``SolverUpdater``: the Caffe step on the gradient averaged over all workers, once per clock), the
SFB server and transports, a ``PSClient`` over every shard; then ``Worker.run`` and
``stats.client<k>.json``.

Staleness s: a worker's pull at clock c returns every worker's updates of clocks <= c - s - 1, so a
worker runs at most s clocks ahead of the slowest. Display and test iterations average over all
workers and therefore wait for all of them at that clock.

Hybrid communication (``--svb auto|on|off``, ``sfb``): the weights of InnerProduct layers chosen
by the cost model are synchronised by sufficient-factor broadcasting, peer to peer over the same
gRPC server (hosts-file port) as the PS shard, with the solver step applied locally once per clock
under the same SSP bound; the decision table is logged by client 0 and written to the stats file
together with the bytes each layer moved.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import types

from .. import backend, config
from ..errors import ClusterError
from ..layers.base import RunContext
from ..solver.solver import Solver
from ..solver.log import TrainLog
from . import sfb as sfb_mod
from ..ps.updaters import SolverUpdater
from .ps_sync import DEFAULT_DEADLINE_S, PSSync


class Worker:
    """One training worker's life cycle, the same in a real client and in in-process tests.

    ``solver``: a Solver built with ``sync=PSSync(...)``; ``client``: its ``PSClient`` (not yet
    connected; layout ``solver.sync.ps_layout()``); ``factors``: the ``FactorExchange`` from
    ``solver.sync.setup_sfb`` when the plan has SFB layers; ``spec``: where this worker sits in
    the cluster (``client_id``, ``workers_per_client``, ``worker_index``, ``hosts``: anything with
    those attributes, e.g. a ``ClusterSpec``), used to name this worker and the lost peer in
    errors; without it errors name PS worker ranks.

    :meth:`run`: connect -> attach -> publish (worker 0) -> barrier -> install (the others) ->
    prime the first pulls -> ``solver.solve()`` -> drain the pending pulls -> flush the factors
    (every peer has our last ones before anyone leaves) -> finish (flush, barrier, leave). A
    ``ClusterError`` on the way is re-raised naming this worker and, from the error's
    ``lost_workers`` / ``shard`` fields, the client that is gone. :meth:`close` always releases
    the client and the factor exchange (also after an unexpected exception); call it in a
    ``finally`` or use the Worker as a context manager.
    """

    def __init__(self, solver, client, *, factors=None, spec=None):
        self.solver = solver
        self.sync = solver.sync
        self.client = client
        self.factors = factors
        self.spec = spec
        if factors is not None and factors is not self.sync.sfb:
            raise ValueError("factors must be the exchange made by solver.sync.setup_sfb")
        self.rank = solver.context.rank
        self.wall_s = 0.0
        self._finished = False

    def run(self) -> None:
        t0 = time.time()
        try:
            self._run()
        except ClusterError as exc:
            raise self.named(exc) from None
        finally:
            self.wall_s = time.time() - t0

    def _run(self):
        client, sync = self.client, self.sync
        client.connect()
        sync.attach(client)
        if self.rank == 0:
            sync.publish_initial_state()
        client.barrier()
        if self.rank != 0:
            sync.install_initial_state()
        sync.wfbp.request_pulls()
        self.solver.solve()
        sync.wfbp.wait_all()
        if self.factors is not None:
            self.factors.flush()
            self.factors.ensure_all(client.clock_value)
        client.finish()
        self._finished = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if not self._finished:
            self.client.close()
        if self.factors is not None:
            self.factors.close()

    # -- errors ----------------------------------------------------------------------------------------
    def _where(self):
        spec = self.spec
        if spec is None:
            return f"worker {self.rank}"
        T = int(getattr(spec, "workers_per_client", 1) or 1)
        return f"client {spec.client_id}" + (f" worker {spec.worker_index}" if T > 1 else "")

    def lost_client(self, exc):
        """The other client an error names (a lost worker rank r lives on client r // T; shard k
        on client k), or None."""
        spec = self.spec
        if spec is None:
            return None
        T = int(getattr(spec, "workers_per_client", 1) or 1)
        me, n = spec.client_id, len(spec.hosts)
        candidates = [int(r) // T for r in getattr(exc, "lost_workers", ()) or ()]
        shard = getattr(exc, "shard", None)
        if shard is not None:
            candidates.append(int(shard))
        return next((k for k in candidates if k != me and k < n), None)

    def named(self, exc):
        """``exc`` re-worded to name this worker and the lost client (fields carried over)."""
        lost = self.lost_client(exc)
        gone = f" -> client {lost} ({self.spec.hosts[lost].address}) is gone" if lost is not None else ""
        out = ClusterError(f"{self._where()}: {exc.one_line()}{gone}",
                           "the last snapshot stays valid; restart the cluster with --snapshot")
        for field in ("lost_workers", "shard"):
            if hasattr(exc, field):
                setattr(out, field, getattr(exc, field))
        return out

    # -- reporting ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        spec = self.spec
        doc = {"client": getattr(spec, "client_id", self.rank),
               "clients": len(spec.hosts) if spec is not None else self.solver.context.num_clients,
               "staleness": self.client.staleness, "wall_s": round(self.wall_s, 3)}
        doc.update(self.sync.stats())
        return doc

    def write_stats(self, path) -> None:
        """``stats.client<k>.json``, written by rename (a reader never sees half a file)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.stats(), fh, indent=1)
        os.replace(tmp, path)


def _job_id(hosts_path) -> str:
    with open(hosts_path, "rb") as fh:
        return "poseidon-" + hashlib.sha1(fh.read()).hexdigest()[:12]


def run_client(client_id: int, hosts, opts) -> int:
    """Run client ``client_id`` of ``hosts`` until training ends; returns an exit code."""
    from ..ps.client import PSClient
    from ..ps.client import make_transport
    from ..ps.server import ShardServer
    from ..ps.store import ShardStore
    from .launch import workers_per_client

    n = len(hosts)
    me = hosts[client_id]
    deadline = float(opts.get("deadline") or DEFAULT_DEADLINE_S)
    staleness = int(opts.get("staleness") or 0)
    if staleness < 0:
        raise ClusterError(f"--staleness must be >= 0, got {staleness}")
    gpus = [g for g in (opts.get("gpu") or "").split(",") if g.strip()]
    T = workers_per_client(opts)
    t = int(opts.get("worker_index") or 0)
    if not 0 <= t < T:
        raise ClusterError(f"--worker-index {t} is not in 0..{T - 1}")
    gpu = gpus[t] if len(gpus) > 1 else (gpus[0] if gpus else None)
    xp = backend.use_gpu(int(gpu)) if gpu is not None and not opts.get("cpu") else backend.use_cpu()
    param = config.load_solver_param(opts["solver"])
    run_dir = opts.get("output_dir") or os.path.dirname(os.path.abspath(opts["solver"]))
    os.makedirs(run_dir, exist_ok=True)
    log = TrainLog(streams=[sys.stdout])
    # T workers per client (one per GPU): worker t of client k is PS worker k*T + t; worker 0 of
    # each client also serves that client's shard and starts the client's other workers.
    context = RunContext(client_id=client_id, num_clients=n, worker_id=t, workers_per_client=T)
    rank, world = context.rank, context.world_size
    netoutputs = os.path.join(run_dir, f"{param.net and os.path.splitext(os.path.basename(param.net))[0] or 'net'}.netoutputs") \
        if rank == 0 else None
    svb = opts.get("svb") or "auto"
    helpers = _start_client_workers(opts, client_id, T, run_dir) if T > 1 and t == 0 else []
    sync = PSSync(overlap=not opts.get("no_overlap"), deadline_s=deadline, svb=svb, num_shards=n)
    solver = Solver(param, solver_path=opts["solver"], context=context, xp=xp, log=log,
                    netoutputs_path=netoutputs, sync=sync)
    if opts.get("weights"):
        solver.copy_weights(opts["weights"])
    if opts.get("snapshot"):
        solver.restore(opts["snapshot"])
    log.info(f"client {client_id} of {n}" + (f", worker {t} of {T}" if T > 1 else "") +
             f": shard at {me.address}, staleness {staleness}, "
             f"{'wait-free backprop' if not opts.get('no_overlap') else 'no overlap'}")
    if rank == 0:
        for line in sync.decision_table():
            log.info(line)

    job = _job_id(opts["hosts"])
    server = factors = sfb_server = None
    if sync.sfb_params:
        factors = sync.setup_sfb(job, sfb_mod.GrpcFactorTransport(
            _peer_addresses(hosts, T, rank, job)))
    if t == 0:
        store = ShardStore(client_id, n, job, SolverUpdater(param, sync.multipliers(), solver.iter),
                           deadline_s=deadline, heartbeat_timeout_s=min(deadline, 15.0))
        server = ShardServer(store, host=me.ip, port=me.port)
        if factors is not None:
            server.add_generic_handlers([sfb_mod.grpc_handler(factors)])
        if T > 1:
            server.add_generic_handlers([sfb_mod.WorkerDirectory(job).handler()])
        server.start()
    elif factors is not None:
        # worker t >= 1 serves its factors on a port of its own, announced by worker 0
        sfb_server, sfb_port = sfb_mod.serve_factors(factors, me.ip)
        sfb_mod.register_worker(me.address, job, t, sfb_port, deadline)
    # Control over gRPC, tensors over the shard's plain-TCP data plane (ps/README.md)
    transports = [make_transport(h.address, i, job) for i, h in enumerate(hosts)]
    client = PSClient(transports, job, worker_id=rank, num_workers=world, params=sync.ps_layout(),
                      staleness=staleness, deadline_s=deadline, connect_timeout_s=deadline,
                      job_config=sync.job_config())
    stats_path = os.path.join(run_dir, f"stats.client{client_id}.json" if T == 1 else
                              f"stats.client{client_id}.worker{t}.json")
    spec = types.SimpleNamespace(client_id=client_id, workers_per_client=T, worker_index=t, hosts=hosts)
    worker = Worker(solver, client, factors=factors, spec=spec)
    try:
        worker.run()
        try:
            _wait_client_workers(helpers, client_id, deadline)
        except ClusterError as exc:
            raise worker.named(exc) from None
    finally:
        worker.close()
        _stop_client_workers(helpers)
        worker.write_stats(stats_path)
        if server is not None:
            server.stop(grace=1.0)
        if sfb_server is not None:
            sfb_server.stop(grace=1.0)
    return 0


def _peer_addresses(hosts, T, rank, job):
    """SFB peers of worker ``rank``: worker 0 of client k at k's hosts-file address, worker
    t >= 1 at the port client k's worker 0 reports for it (looked up on the first send)."""
    out = {}
    for r in range(len(hosts) * T):
        if r == rank:
            continue
        k, t = divmod(r, T)
        h = hosts[k]
        out[r] = h.address if t == 0 else (
            lambda deadline_s, h=h, t=t: sfb_mod.lookup_worker(h.address, h.ip, job, t, deadline_s))
    return out


def _start_client_workers(opts, client_id, T, run_dir):
    """Worker 0 of a client starts workers 1..T-1 of the same client as child processes (their
    output in ``<run dir>/client_<k>.worker_<t>.log``)."""
    from .launch import child_argv
    procs = []
    for t in range(1, T):
        argv = child_argv(opts, client_id, run_dir) + ["--worker-index", str(t)]
        log = open(os.path.join(run_dir, f"client_{client_id}.worker_{t}.log"), "wb")
        procs.append((t, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def _wait_client_workers(procs, client_id, deadline):
    for t, p, _ in procs:
        try:
            rc = p.wait(timeout=deadline + 30)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"worker {t} of client {client_id} did not finish within "
                               f"{deadline + 30:.0f}s after training ended") from None
        if rc != 0:
            raise ClusterError(f"worker {t} of client {client_id} exited with code {rc}",
                               f"see client_{client_id}.worker_{t}.log in the run folder")


def _stop_client_workers(procs):
    for _, p, log in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()
