"""The Solver's :class:`~poseidon_cli.solver.sync.Sync` in a cluster: the parameter server's.

``Solver(param, ..., sync=PSSync(overlap=True, deadline_s=60, svb="auto", num_shards=None))``.
``bind`` (from ``Solver.__init__``) checks that the solver can run distributed, decides per
InnerProduct weight between the PS and sufficient-factor broadcasting (``sfb.plan_layers``) and
gives every learnable parameter a :class:`~.param_sync.ParamSync` (``syncs[k]`` for
``net.learnable[k]``). Then, in the order ``Worker.run`` keeps:

1. ``ps_layout()`` for the ``PSClient``; ``setup_sfb(job, transport)`` when the plan has SFB
   layers (before the factor server serves);
2. ``attach(client)``: wait-free backprop on the train net (``wfbp.py``);
3. ``publish_initial_state()`` (worker 0: weights and non-zero history into the PS, SFB weights
   to the peers) or, after the start-up barrier, ``install_initial_state()`` (the others).

Per iteration: ``begin_pass(last)`` enables the pushes on the last of ``iter_size`` passes;
``update`` logs the lr line (the PS computes the same rate), pushes what the hooks did not,
ticks the client's clock (one clock per iteration) and requests the next pulls; the per-iteration
timing goes to ``iter_stats``. ``mean`` averages logged values over every worker: the loss only on
display iterations (averaging it every iteration would make every iteration a barrier and defeat
staleness), the outputs (display iterations) and test values always. Each such average waits for
every worker to reach this clock, so a display iteration is a barrier whatever the staleness
(``display: 1`` makes s > 0 run like s = 0); the time spent in them is the ``reduce_s`` column of
``iter_stats``. ``test_share(n)`` is ``ceil(n / workers)``.
``before_read`` installs every pending pull (and, for a snapshot, the SFB updates of every clock
and the solver history held by the PS) so worker 0's files resume on one node or on any number of
clients. Only worker 0 ``writes_files``.
"""
from __future__ import annotations

import array
import math
import time

import numpy as np

from .. import backend
from ..solver.step import history_slot
from ..solver.sync import Reduction, Sync
from . import sfb as sfb_mod
from .param_sync import param_syncs
from .spec import DEFAULT_DEADLINE_S
from ..ps.keys import STAT
from ..ps.updaters import check_solver
from .wfbp import WaitFreeBackprop



def job_config(param) -> str:
    """The solver fields every worker must agree on, as ``field=value`` words: registration
    (``RegisterRequest.job_config``) rejects a worker whose solver differs, naming the fields."""
    fields = ("type", "base_lr", "lr_policy", "gamma", "power", "stepsize", "momentum", "momentum2",
              "weight_decay", "regularization_type", "delta", "rms_decay", "max_iter", "iter_size")
    parts = []
    for f in fields:
        v = getattr(param, f)
        parts.append(f"{f}={v:.7g}" if isinstance(v, float) else f"{f}={v}")
    if param.stepvalue:
        parts.append("stepvalue=" + ",".join(map(str, param.stepvalue)))
    return " ".join(parts)


def _stat_name(what: Reduction, net_id: int) -> str:
    """The STAT tensor of a reduction (one per test net for the TEST_* ones). No ``/`` in it, so
    it never equals a parameter's ``<layer>/<index>`` name."""
    if what in (Reduction.TEST_LOSS, Reduction.TEST_OUTPUTS):
        return f"stat:test{int(net_id)}:{what.value}"
    return f"stat:{what.value}"


class PSSync(Sync):
    """See the module docstring."""

    def __init__(self, *, overlap: bool = True, deadline_s: float = DEFAULT_DEADLINE_S,
                 svb: str = "auto", num_shards: int | None = None):
        self.overlap = overlap
        self.deadline_s = deadline_s
        self.svb = svb or "auto"
        self._num_shards = num_shards
        self.solver = None
        self.client = None
        self.wfbp = None
        self.sfb = None
        self.iter_stats = IterStats()
        self._pass_t0 = None
        self._t_compute = 0.0
        self._t_reduce = 0.0
        self._t_iter = None
        self._cpu_iter = None

    # -- Sync: construction ------------------------------------------------------------------------
    def bind(self, solver) -> None:
        check_solver(solver.param, solver.where)
        self.solver = solver
        net, ctx = solver.net, solver.context
        self.num_shards = int(self._num_shards or ctx.num_clients)
        self.sfb_plan = sfb_mod.plan_layers(net, ctx.world_size, self.num_shards, self.svb,
                                            solver.param.iter_size)
        self.sfb_params = frozenset(p.param_index for p in self.sfb_plan if p.scheme == "sfb")
        self.syncs = param_syncs(net, self.sfb_params)
        # SFB weights never get a diff (their layers skip the weight-gradient GEMM)
        for k in sorted(self.sfb_params):
            net.set_external_gradient(k)

    @property
    def rank(self) -> int:
        return self.solver.context.rank

    @property
    def world_size(self) -> int:
        return self.solver.context.world_size

    # -- layout ----------------------------------------------------------------------------------------
    def _stats_sizes(self):
        solver = self.solver
        sizes = {_stat_name(Reduction.LOSS, 0): 1,
                 _stat_name(Reduction.TRAIN_OUTPUTS, 0): max(1, _count_outputs(solver.net))}
        for i, tn in enumerate(solver.test_nets):
            sizes[_stat_name(Reduction.TEST_LOSS, i)] = 1
            sizes[_stat_name(Reduction.TEST_OUTPUTS, i)] = max(1, _count_outputs(tn))
        return sizes

    def ps_layout(self):
        """``[(name, shape, dtype, role)]`` for the ``PSClient``: every "ps" parameter, then one
        statistics tensor (role STAT) per :class:`Reduction` and test net."""
        params = [(s.ps_name, tuple(s.param.blob.shape), "float32") for s in self.syncs if s.scheme == "ps"]
        for name, size in self._stats_sizes().items():
            params.append((name, (size,), "float64", STAT))
        return params

    def job_config(self) -> str:
        """What every worker must agree on beyond the layout (``PSClient(job_config=...)``)."""
        return job_config(self.solver.param)

    def multipliers(self):
        """PS name -> (lr_mult, decay_mult) of every "ps" parameter (the shards' updater)."""
        return {s.ps_name: (s.param.lr_mult, s.param.decay_mult) for s in self.syncs if s.scheme == "ps"}

    def decision_table(self):
        return sfb_mod.format_table(self.sfb_plan, self.world_size, self.num_shards, self.svb)

    # -- wiring ------------------------------------------------------------------------------------------
    def setup_sfb(self, job_id, transport, chunk_bytes=sfb_mod.DEFAULT_CHUNK_BYTES):
        """Create this worker's FactorExchange (before its transport's server starts serving)."""
        s = self.solver
        self.sfb = sfb_mod.FactorExchange(s.net, self.sfb_plan, lambda k: s.history[k], s.param,
                                          self.rank, self.world_size, job_id, transport,
                                          start_iter=s.iter, deadline_s=self.deadline_s,
                                          chunk_bytes=chunk_bytes)
        return self.sfb

    def attach(self, client) -> None:
        if self.sfb_params and self.sfb is None:
            raise RuntimeError("call setup_sfb before attach: the plan has SFB layers")
        self.client = client
        self.wfbp = WaitFreeBackprop(self.solver.net, client, self.syncs, overlap=self.overlap,
                                     iter_size=self.solver.param.iter_size, deadline_s=self.deadline_s,
                                     sfb=self.sfb, staleness=client.staleness)
        display = self.solver.param.display
        if client.staleness > 0 and display > 0 and self.world_size > 1 and self.rank == 0:
            # Said once at start-up: nothing else shows that the display interval, not the
            # staleness, bounds how long a worker may run ahead of a straggler.
            self.solver.log.info(
                f"staleness {client.staleness} with display {display}: every display iteration "
                f"averages the loss over all workers and so waits for the slowest at that clock "
                f"(stats: reduce_s); a larger display (or 0) leaves the staleness its slack")

    def publish_initial_state(self) -> None:
        """Worker 0: store the parameters and the solver history in the PS; SFB weights to peers."""
        values = {s.ps_name: backend.to_host(s.param.blob.data) for s in self.syncs if s.scheme == "ps"}
        for name, size in self._stats_sizes().items():
            values[name] = np.zeros(size)   # a pull waits for initialised chunks, STAT ones too
        self.client.init_params(values)
        state = {}
        for s, hist in zip(self.syncs, self.solver.history):
            if s.scheme == "ps" and any(float(abs(backend.to_host(h)).max(initial=0)) for h in hist):
                state[s.ps_name] = {history_slot(j): backend.to_host(h) for j, h in enumerate(hist)}
        if state:
            self.client.set_solver_state(state)
        if self.sfb is not None:
            self.sfb.publish_initial()

    def install_initial_state(self) -> None:
        """Workers != 0, after the start-up barrier: take worker 0's SFB weights and history."""
        if self.sfb is not None:
            self.sfb.install_initial()

    # -- Sync: the iteration -------------------------------------------------------------------------
    def _end_pass(self):
        if self._pass_t0 is not None:
            self._t_compute += time.perf_counter() - self._pass_t0
            self._pass_t0 = None

    def begin_pass(self, last: bool) -> None:
        self._end_pass()
        self.wfbp.begin_pass(last)
        self._pass_t0 = time.perf_counter()

    def update(self, solver) -> None:
        self._end_pass()
        solver.learning_rate()  # Caffe's "Iteration N, lr = R" line; the PS computes the same rate
        wfbp = self.wfbp
        wfbp.push_remaining()
        t0 = time.perf_counter()
        self.client.clock()
        t_clock = time.perf_counter() - t0
        wfbp.end_iteration()
        wfbp.request_pulls()
        now, cpu = time.perf_counter(), time.process_time()
        self.iter_stats.append(
            solver.iter, max(0.0, self._t_compute - wfbp.wait_s), wfbp.wait_s, t_clock,
            # end of the previous update to the end of this one (None for the first), and the CPU
            # time of the whole process (every thread: shard, transports, BLAS) in that span
            None if self._t_iter is None else now - self._t_iter,
            None if self._cpu_iter is None else cpu - self._cpu_iter,
            self._t_reduce)
        self._t_iter, self._cpu_iter = now, cpu
        self._t_compute = 0.0
        self._t_reduce = 0.0
        wfbp.wait_s = 0.0

    def mean(self, values, what: Reduction, net_id: int = 0) -> list:
        if what is Reduction.LOSS:
            self._end_pass()
        if self.client is None or self.world_size == 1:
            return list(values)
        if what is Reduction.LOSS:
            p, it = self.solver.param, self.solver.iter
            if not (p.display and it % p.display == 0):
                return list(values)
        t0 = time.perf_counter()
        out = self.client.mean_over_workers(_stat_name(what, net_id), values)
        self._t_reduce += time.perf_counter() - t0
        return [float(v) for v in out]

    def test_share(self, n: int) -> int:
        return int(math.ceil(n / self.world_size))

    def divergence_hint(self) -> str:
        s = self.client.staleness if self.client is not None else 0
        if s <= 0 or self.world_size == 1:
            return ""
        # gradients up to s clocks old act like extra momentum: a rate one node tolerates may not
        return (f"staleness {s} with {self.world_size} workers makes gradients up to {s} clocks "
                f"old; lower base_lr or momentum, or --staleness")

    def before_read(self, for_snapshot: bool = False) -> None:
        self.wfbp.wait_all()
        if not for_snapshot:
            return
        if self.sfb is not None:
            self.sfb.ensure_all(self.client.clock_value)
        fresh = self.client.pull_all(min_clock=self.client.clock_value)
        for s in self.syncs:
            if s.scheme == "ps":
                xp = backend.get_array_module(s.param.blob.data)
                s.param.blob.data[...] = xp.asarray(fresh[s.ps_name])
        state = self.client.get_solver_state()
        for s, hist in zip(self.syncs, self.solver.history):
            slots = state.get(s.ps_name, {})
            for j, h in enumerate(hist):
                if history_slot(j) in slots:
                    xp = backend.get_array_module(h)
                    h[...] = xp.asarray(slots[history_slot(j)])

    @property
    def writes_files(self) -> bool:
        return self.rank == 0

    # -- reporting ---------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """The per-iteration timing, one row per parameter (bytes straight from the ParamSyncs)
        and the SFB decisions, for ``stats.client<k>.json``."""
        sfb_rows = []
        if self.sfb is not None:
            sfb_rows = self.sfb.layer_stats(len(self.iter_stats))
            for plan, row in zip(self.sfb.plans, sfb_rows):
                s = self.syncs[plan.param_index]
                s.bytes_sent, s.bytes_received = row["bytes_sent"], row["bytes_received"]
        return {"svb": self.svb, "iterations": self.iter_stats.rows(),
                "params": [s.row() for s in self.syncs] if self.wfbp is not None else [],
                "sfb_decisions": [p.row() for p in self.sfb_plan], "sfb_layers": sfb_rows}


class IterStats:
    """Per-iteration timing rows (``FIELDS``), kept as float64 columns: 56 bytes an iteration
    instead of a dict's ~500, so a long run's memory stays flat. ``rows()``: the dicts of
    ``stats.client<k>.json`` (seconds rounded to the microsecond; None where not measured).
    ``reduce_s``: time in averages over every worker (display and test values) since the last
    update; they wait for the slowest worker, and are in neither compute nor parameter waits."""

    FIELDS = ("iter", "compute_s", "wait_params_s", "clock_s", "wall_s", "cpu_s", "reduce_s")

    def __init__(self):
        self._cols = [array.array("d") for _ in self.FIELDS]

    def __len__(self) -> int:
        return len(self._cols[0])

    def append(self, *values) -> None:
        for col, v in zip(self._cols, values):
            col.append(math.nan if v is None else float(v))

    def rows(self) -> list[dict]:
        out = []
        for vals in zip(*self._cols):
            row = {"iter": int(vals[0])}
            for f, v in zip(self.FIELDS[1:], vals[1:]):
                row[f] = None if math.isnan(v) else round(v, 6)
            out.append(row)
        return out


def _count_outputs(net):
    return int(sum(net.blobs[n].count for n in net.output_blob_names))
