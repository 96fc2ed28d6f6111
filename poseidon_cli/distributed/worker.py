"""One client of a distributed run: a parameter-server shard plus one training worker.

``run_client(client_id, hosts, opts)`` (called by ``poseidon train --hosts`` for this machine):

1. builds the solver and its nets with ``RunContext(client_id, num_clients)`` so the data layers
   read this client's partition; applies ``--weights`` / ``--snapshot`` locally;
2. starts this client's PS shard on its hosts-file port (``SolverUpdater``: the Caffe solver step
   on the gradient averaged over all workers, once per clock);
3. connects to every shard (retrying with backoff up to the deadline), registers the parameter
   layout, and client 0 stores the initial parameters and solver history; a barrier;
4. trains with ``DistributedSolver``: wait-free backprop pushes, per-layer waits for fresh
   parameters, one clock per iteration; display/test values averaged over clients through small
   statistics tensors on the PS; client 0 logs, writes ``.netoutputs`` and snapshots (weights and
   history read back from the PS, so the files resume on one node or on any number of clients);
5. leaves cleanly (flush, barrier) and writes ``stats.client<k>.json``.

Staleness s: a worker's pull at clock c returns every worker's updates of clocks <= c - s - 1, so a
worker runs at most s clocks ahead of the slowest. Display and test iterations average over all
workers and therefore wait for all of them at that clock.

Hybrid communication (``--svb auto|on|off``, ``sfb.py``): the weights of InnerProduct layers chosen
by the cost model are synchronised by sufficient-factor broadcasting, peer to peer over the same
gRPC server (hosts-file port) as the PS shard, with the solver step applied locally once per clock
under the same SSP bound; the decision table is logged by client 0 and written to the stats file
together with the bytes each layer moved.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

from .. import backend, config
from ..errors import ClusterError, PoseidonError
from ..layers.base import RunContext
from ..solver.solver import Solver
from ..solver.log import TrainLog
from . import sfb as sfb_mod
from ..ps.updaters import STATS_PREFIX, SolverUpdater, check_solver
from .wfbp import WaitFreeBackprop

DEFAULT_DEADLINE_S = 60.0


def solver_fingerprint(param) -> str:
    """The solver fields every client must agree on, as text (it becomes the name of a statistics
    tensor, so a client with a different solver is rejected at registration naming them)."""
    fields = ("type", "base_lr", "lr_policy", "gamma", "power", "stepsize", "momentum", "momentum2",
              "weight_decay", "regularization_type", "delta", "rms_decay", "max_iter", "iter_size")
    parts = []
    for f in fields:
        v = getattr(param, f)
        parts.append(f"{f}={v:.7g}" if isinstance(v, float) else f"{f}={v}")
    if param.stepvalue:
        parts.append("stepvalue=" + ",".join(map(str, param.stepvalue)))
    return "__solver__ " + " ".join(parts)


class DistributedSolver(Solver):
    """A Solver whose update happens on the parameter server (see module docstring).

    Call ``attach(client)`` after construction; the PS layout is ``ps_layout()``."""

    def __init__(self, param, *, overlap=True, deadline_s=DEFAULT_DEADLINE_S, svb="auto",
                 num_shards=None, **kwargs):
        check_solver(param, kwargs.get("solver_path") or "solver")
        super().__init__(param, **kwargs)
        self.overlap = overlap
        self.deadline_s = deadline_s
        self.client = None
        self.wfbp = None
        self.sfb = None
        net = self.net
        self.ps_names = [f"{n}" for n in net.learnable_param_names]
        self.svb = svb or "auto"
        workers = self.context.world_size
        self.num_shards = int(num_shards or self.context.num_clients)
        self.sfb_plan = sfb_mod.plan_layers(net, workers, self.num_shards, self.svb, param.iter_size)
        sfb_params = {p.param_index for p in self.sfb_plan if p.scheme == "sfb"}
        self.communicated = [lr != 0 and k not in sfb_params for k, lr in enumerate(net.params_lr)]
        self.sfb_params = sfb_params
        # SFB weights never get a diff (their layers skip the weight-gradient GEMM)
        net.params_without_diff = frozenset(sfb_params)
        self._pass = 0
        self._t_compute = 0.0
        self._t_iter = None
        self._cpu_iter = None
        self.iter_stats = []

    # -- layout ----------------------------------------------------------------------------------------
    def _stats_sizes(self):
        sizes = {"__loss__": 1, "__train_outputs__": max(1, self._count_outputs(self.net))}
        for i, tn in enumerate(self.test_nets):
            sizes[f"__test{i}_loss__"] = 1
            sizes[f"__test{i}__"] = max(1, self._count_outputs(tn))
        return sizes

    @staticmethod
    def _count_outputs(net):
        return int(sum(net.blobs[n].count for n in net.output_blob_names))

    def ps_layout(self):
        params = []
        for k, blob in enumerate(self.net.learnable_params):
            if self.communicated[k]:
                params.append((self.ps_names[k], tuple(blob.shape), "float32"))
        for name, size in self._stats_sizes().items():
            params.append((name, (size,), "float64"))
        params.append((solver_fingerprint(self.param), (1,), "float64"))
        return params

    def multipliers(self):
        return {self.ps_names[k]: (self.net.params_lr[k], self.net.params_weight_decay[k])
                for k in range(len(self.ps_names)) if self.communicated[k]}

    def decision_table(self):
        return sfb_mod.format_table(self.sfb_plan, self.context.world_size, self.num_shards, self.svb)

    # -- wiring ------------------------------------------------------------------------------------------
    def setup_sfb(self, job_id, transport, chunk_bytes=sfb_mod.DEFAULT_CHUNK_BYTES):
        """Create this worker's FactorExchange (before its transport's server starts serving)."""
        self.sfb = sfb_mod.FactorExchange(self.net, self.sfb_plan, lambda k: self.history[k], self.param,
                                          self.context.rank, self.context.world_size, job_id, transport,
                                          start_iter=self.iter, deadline_s=self.deadline_s,
                                          chunk_bytes=chunk_bytes)
        return self.sfb

    def attach(self, client):
        self.client = client
        if self.sfb_params and self.sfb is None:
            raise RuntimeError("call setup_sfb before attach: the plan has SFB layers")
        self.wfbp = WaitFreeBackprop(self.net, client, self.ps_names, self.communicated,
                                     overlap=self.overlap, iter_size=self.param.iter_size,
                                     deadline_s=self.deadline_s, sfb=self.sfb,
                                     staleness=client.staleness)

    def publish_initial_state(self):
        """Client 0: store the parameters and the solver history in the PS."""
        values = {self.ps_names[k]: backend.to_host(b.data)
                  for k, b in enumerate(self.net.learnable_params) if self.communicated[k]}
        for name, size in self._stats_sizes().items():
            values[name] = np.zeros(size)
        values[solver_fingerprint(self.param)] = np.zeros(1)
        self.client.init_params(values)
        state = {}
        for k, hist in enumerate(self.history):
            if self.communicated[k] and any(float(abs(backend.to_host(h)).max(initial=0)) for h in hist):
                state[self.ps_names[k]] = {f"h{j}": backend.to_host(h) for j, h in enumerate(hist)}
        if state:
            self.client.set_solver_state(state)
        if self.sfb is not None:
            self.sfb.publish_initial()

    def install_initial_state(self):
        """Clients != 0, after the start-up barrier: take worker 0's SFB weights and history."""
        if self.sfb is not None:
            self.sfb.install_initial()

    # -- the iteration -----------------------------------------------------------------------------------
    def forward_backward(self):
        self._pass += 1
        self.wfbp.begin_pass(self._pass == self.param.iter_size)
        t0 = time.perf_counter()
        loss = super().forward_backward()
        self._t_compute += time.perf_counter() - t0
        return loss

    def apply_update(self):
        self.learning_rate()  # Caffe's "Iteration N, lr = R" line; the PS computes the same rate
        self.wfbp.push_remaining()
        t0 = time.perf_counter()
        self.client.clock()
        t_clock = time.perf_counter() - t0
        self.wfbp.end_iteration()
        self.wfbp.request_pulls()
        now, cpu = time.perf_counter(), time.process_time()
        self.iter_stats.append({
            "iter": self.iter,
            "compute_s": round(max(0.0, self._t_compute - self.wfbp.wait_s), 6),
            "wait_params_s": round(self.wfbp.wait_s, 6),
            "clock_s": round(t_clock, 6),
            # end of the previous update to the end of this one (None for the first), and the CPU
            # time of the whole process (every thread: shard, transports, BLAS) in that span
            "wall_s": None if self._t_iter is None else round(now - self._t_iter, 6),
            "cpu_s": None if self._cpu_iter is None else round(cpu - self._cpu_iter, 6),
        })
        self._t_iter, self._cpu_iter = now, cpu
        self._pass = 0
        self._t_compute = 0.0
        self.wfbp.wait_s = 0.0

    def _average(self, key, values):
        """Average ``values`` over every worker through the PS statistics tensor ``key``."""
        size = self._stats_sizes()[key]
        arr = np.zeros(size)
        arr[:len(values)] = np.asarray(values, dtype=np.float64)
        self.client.push(key, arr, copy=False)
        out = self.client.pull(key, min_clock=self.client.clock_value + 1).result(
            timeout=self.deadline_s + 5.0)
        return [float(v) for v in out[:len(values)]]

    def reduce_outputs(self, values, kind="loss"):
        if self.client is None or self.context.world_size == 1:
            return values
        if kind == "loss":
            # Only display iterations average the loss across workers: averaging every iteration
            # would make every iteration a barrier and defeat staleness.
            if not (self.param.display and self.iter % self.param.display == 0):
                return values
            return self._average("__loss__", values)
        if kind == "train_outputs":
            return self._average("__train_outputs__", values)
        what, _, idx = kind.partition(":")
        if what == "test_loss":
            return self._average(f"__test{idx}_loss__", values)
        if what == "test_outputs":
            return self._average(f"__test{idx}__", values)
        raise ValueError(f"unknown reduction {kind!r}")

    def test_iterations(self, net_id):
        n = super().test_iterations(net_id)
        return int(math.ceil(n / self.context.world_size))

    def test(self, net_id):
        self.wfbp.wait_all()  # the test net shares the train net's arrays
        return super().test(net_id)

    # -- snapshots ---------------------------------------------------------------------------------------
    def snapshot(self):
        if self.context.rank != 0:
            return None
        self.wfbp.wait_all()
        if self.sfb is not None:
            self.sfb.ensure_all(self.client.clock_value)
        fresh = self.client.pull_all(min_clock=self.client.clock_value)
        for k, blob in enumerate(self.net.learnable_params):
            if self.communicated[k]:
                xp = backend.get_array_module(blob.data)
                blob.data[...] = xp.asarray(fresh[self.ps_names[k]])
        state = self.client.get_solver_state()
        for k, blob in enumerate(self.net.learnable_params):
            slots = state.get(self.ps_names[k], {})
            for j, h in enumerate(self.history[k]):
                if f"h{j}" in slots:
                    xp = backend.get_array_module(h)
                    h[...] = xp.asarray(slots[f"h{j}"])
        return super().snapshot()


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
    solver = DistributedSolver(param, solver_path=opts["solver"], context=context, xp=xp, log=log,
                               netoutputs_path=netoutputs, overlap=not opts.get("no_overlap"),
                               deadline_s=deadline, svb=svb, num_shards=n)
    if opts.get("weights"):
        solver.copy_weights(opts["weights"])
    if opts.get("snapshot"):
        solver.restore(opts["snapshot"])
    log.info(f"client {client_id} of {n}" + (f", worker {t} of {T}" if T > 1 else "") +
             f": shard at {me.address}, staleness {staleness}, "
             f"{'wait-free backprop' if not opts.get('no_overlap') else 'no overlap'}")
    if rank == 0:
        for line in solver.decision_table():
            log.info(line)

    job = _job_id(opts["hosts"])
    server = factors = sfb_server = None
    if solver.sfb_params:
        factors = solver.setup_sfb(job, sfb_mod.GrpcFactorTransport(
            _peer_addresses(hosts, T, rank, job)))
    if t == 0:
        store = ShardStore(client_id, n, job, SolverUpdater(param, solver.multipliers(), solver.iter),
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
    client = PSClient(transports, job, worker_id=rank, num_workers=world, params=solver.ps_layout(),
                      staleness=staleness, deadline_s=deadline, connect_timeout_s=deadline)
    stats_path = os.path.join(run_dir, f"stats.client{client_id}.json" if T == 1 else
                              f"stats.client{client_id}.worker{t}.json")
    t_start = time.time()
    try:
        client.connect()
        solver.attach(client)
        if rank == 0:
            solver.publish_initial_state()
        client.barrier()
        if rank != 0:
            solver.install_initial_state()
        solver.wfbp.request_pulls()
        solver.solve()
        solver.wfbp.wait_all()
        if factors is not None:
            factors.flush()  # every peer has our last factors before anyone leaves
        client.finish()
        _wait_client_workers(helpers, client_id, deadline)
    except ClusterError as exc:
        client.close()
        lost = _lost_client(str(exc), hosts, client_id) if T == 1 else None
        raise ClusterError(f"client {client_id}" + (f" worker {t}" if T > 1 else "") + f": {exc.one_line()}" +
                           (f" -> client {lost} ({hosts[lost].address}) is gone" if lost is not None else ""),
                           "the last snapshot stays valid; restart the cluster with --snapshot") from None
    except PoseidonError:
        client.close()
        raise
    finally:
        _stop_client_workers(helpers)
        _write_stats(stats_path, solver, client_id, n, staleness, time.time() - t_start)
        if server is not None:
            server.stop(grace=1.0)
        if sfb_server is not None:
            sfb_server.stop(grace=1.0)
        if factors is not None:
            factors.close()
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


def _lost_client(message: str, hosts, me: int):
    """Which other client an error names: shard k and worker k both live on client k."""
    for pattern in (r"lost worker\(s\) \[(\d+)", r"shard (\d+)\b", r"worker (\d+)"):
        for m in re.finditer(pattern, message):
            k = int(m.group(1))
            if k != me and k < len(hosts):
                return k
    return None


def _write_stats(path, solver, client_id, n, staleness, wall_s):
    wfbp = solver.wfbp
    per_param = []
    iters = len(solver.iter_stats)
    sfb_rows = {r["param"]: r for r in solver.sfb.layer_stats(iters)} if solver.sfb is not None else {}
    if wfbp is not None:
        for k, name in enumerate(solver.ps_names):
            if name in sfb_rows:
                r = sfb_rows[name]
                per_param.append({"param": name, "communicated": True, "scheme": "sfb",
                                  "bytes_sent": r["bytes_sent"], "bytes_received": r["bytes_received"]})
                continue
            per_param.append({"param": name, "communicated": bool(solver.communicated[k]),
                              "scheme": "ps" if solver.communicated[k] else "local",
                              "bytes_sent": int(wfbp.bytes_pushed[k]),
                              "bytes_received": int(wfbp.bytes_pulled[k])})
    doc = {"client": client_id, "clients": n, "staleness": staleness, "wall_s": round(wall_s, 3),
           "svb": solver.svb, "iterations": solver.iter_stats, "params": per_param,
           "sfb_decisions": [p.row() for p in solver.sfb_plan],
           "sfb_layers": list(sfb_rows.values())}
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1)
    os.replace(tmp, path)
