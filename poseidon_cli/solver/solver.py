"""The training loop (BVLC ``Solver`` / ``SGDSolver`` semantics: solver.cpp, sgd_solver.cpp).

``Solver(param, *, solver_path=None, net=None, test_nets=None, context=RunContext(), xp=None,
dtype=np.float32, log=None, netoutputs_path=None, sync=None, action_fn=None)``

* ``param``: an upgraded ``SolverParameter`` (``config.load_solver_param``). Fields read: the net
  sources (exactly one of ``net``/``net_param``/``train_net``/``train_net_param``; test nets from
  ``test_net``/``test_net_param`` then copies of the generic net, one per ``test_iter``),
  ``train_state``/``test_state``, ``type``, ``base_lr`` and the lr policy fields, ``momentum``,
  ``momentum2``, ``delta``, ``rms_decay``, ``weight_decay``, ``regularization_type``,
  ``clip_gradients``, ``iter_size``, ``average_loss``, ``display``, ``max_iter``, ``test_iter``,
  ``test_interval``, ``test_initialization``, ``test_compute_loss``, ``snapshot``,
  ``snapshot_prefix``, ``snapshot_diff``, ``snapshot_format``, ``snapshot_after_train``,
  ``random_seed``.
* ``net`` / ``test_nets``: prebuilt nets instead of building them from ``param``.

Loop (``step(n)``), per iteration: clear param diffs; TestAll when ``iter % test_interval == 0``
(and ``iter > 0`` or ``test_initialization``); ``forward_backward`` ``iter_size`` times; smoothed
loss over ``average_loss`` iterations; display; ``sync.update`` (locally :meth:`apply_update_local`:
lr(iter), clip, then per param ``step.apply_step``: normalize / regularize / rule / subtract);
``iter += 1``; snapshot every ``snapshot`` iterations; then the requested action (``action_fn()``
-> "none" | "snapshot" | "stop", e.g. from a signal).

State: ``iter`` (updates done), ``history`` (per learnable param a list of ``rule.num_history``
arrays), ``schedule.current_step`` (multistep), ``last_snapshot``. ``restore(path)`` /
``snapshot()`` round-trip all of it through Caffe's SolverState.

Extension points (this module never imports ps/distributed):
* ``sync``: a :class:`~.sync.Sync` (default :class:`~.sync.LocalSync`) -- the one way other
  workers take part: it runs the update, combines logged values (:class:`~.sync.Reduction`),
  shares test passes, makes the weights current before tests and snapshots and says whether this
  worker writes snapshots (``distributed/ps_sync.py: PSSync`` is the cluster's);
* ``action_fn``: asked after every iteration and test pass what to do (signals);
* pycaffe's ``add_callback(on_start, on_gradients)``: argument-less functions called before
  forward/backward and before the update; :attr:`lr` is the rate the next update uses.

Errors: ``SolverError`` (one line) for a solver without a net, unknown type / lr policy /
regularization, bad test settings, a snapshot that does not fit, and a NaN/Inf loss (naming the
iteration and the last snapshot).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from .. import backend, config
from .._proto import caffe_pb2
from ..errors import SolverError
from ..context import TEST, TRAIN, RunContext
from ..net_checks import weights_named
from . import snapshot as snap
from . import updates
from .log import TrainLog, fmt
from .step import apply_step
from .sync import LocalSync, Reduction
from .lr_policy import LrSchedule
from .netoutputs import NetOutputs, column_names

NONE, SNAPSHOT, STOP = "none", "snapshot", "stop"


def _net_state(phase, *states):
    out = caffe_pb2.NetState(phase=phase)
    for s in states:
        out.MergeFrom(s)
    out.phase = phase
    return out


class Solver:
    """See the module docstring."""

    def __init__(self, param, *, solver_path=None, net=None, test_nets=None, context=RunContext(),
                 xp=None, dtype=np.float32, log=None, netoutputs_path=None, sync=None,
                 action_fn=None):
        self.param = param
        self.solver_path = solver_path
        self.where = solver_path or "solver"
        self.context = context
        self.xp = xp or backend.default_xp()
        self.dtype = dtype
        self.log = log or TrainLog()
        if net is None:
            self._train_net_field()  # a missing net is the first thing to report
        self.rule = updates.make_rule(param, self.where)
        self.schedule = LrSchedule(param, where=self.where)
        if param.regularization_type not in ("L1", "L2"):
            raise SolverError(f"{self.where}: unknown regularization_type \"{param.regularization_type}\"",
                              "use L2 or L1")
        snap.check_format(fmt=param.snapshot_format, where=self.where)
        if param.iter_size < 1:
            raise SolverError(f"{self.where}: iter_size must be >= 1 (got {param.iter_size})")
        if param.average_loss < 1:
            raise SolverError(f"{self.where}: average_loss must be >= 1 (got {param.average_loss})")
        self.seed = self._seed()
        self.snapshot_prefix = self._snapshot_prefix()
        self.net = net if net is not None else self._build_train_net()
        self.test_nets = list(test_nets) if test_nets is not None else self._build_test_nets()
        if len(self.test_nets) and param.test_interval <= 0 and test_nets is None:
            raise SolverError(f"{self.where}: {len(self.test_nets)} test net(s) but test_interval is "
                              f"not > 0", "set test_interval or remove test_iter")
        self.iter = 0
        self.history = [updates.new_history(self.rule, p.shape, backend.get_array_module(p.data),
                                            p.data.dtype) for p in self.net.learnable_params]
        self._py_callbacks = []   # pycaffe add_callback pairs (on_start, on_gradients)
        self.action_fn = action_fn or (lambda: NONE)
        self.requested_early_exit = False
        self.last_snapshot = None
        self.losses, self.smoothed_loss = [], 0.0
        self.netoutputs = NetOutputs(netoutputs_path, len(self.test_nets))
        self._t0 = None
        self.last_test_scores = [None] * len(self.test_nets)  # per test net: {name: mean}
        self.sync = sync if sync is not None else LocalSync()
        self.sync.bind(self)

    # -- construction --------------------------------------------------------------------------
    def _seed(self):
        if self.param.random_seed >= 0:
            return int(self.param.random_seed) + 7919 * self.context.rank
        return None

    def _snapshot_prefix(self):
        prefix = snap.resolve_prefix(self.param.snapshot_prefix, self.solver_path)
        if self.param.snapshot > 0 and not prefix:
            raise SolverError(f"{self.where}: snapshot is set but snapshot_prefix is not",
                              "add snapshot_prefix: \"path/name\"")
        return prefix

    def _make_net(self, source, phase, state, seed_offset):
        from .. import emulate
        from ..net import Net  # imported here: building nets is the only reason to need it

        seed = None if self.seed is None else self.seed + seed_offset
        return emulate.make_net(Net, source, phase, stages=tuple(state.stage), level=state.level,
                                context=self.context, seed=seed, xp=self.xp, dtype=self.dtype)

    def _train_net_field(self):
        p = self.param
        sources = [f for f in ("train_net_param", "train_net", "net_param", "net")
                   if (p.HasField(f) if f.endswith("param") else getattr(p, f))]
        if not sources:
            raise SolverError(f"{self.where}: no net given",
                              "add net: \"train_val.prototxt\" (or train_net) to the solver file")
        if len(sources) > 1:
            raise SolverError(f"{self.where}: give only one of net, net_param, train_net, "
                              f"train_net_param (found {', '.join(sources)})")
        return sources[0]

    def _build_train_net(self):
        p = self.param
        field = self._train_net_field()
        source = getattr(p, field)
        if field.endswith("param"):
            netp = source
            self.log.info(f"Creating training net specified in {field}.")
        else:
            if not os.path.isfile(source):
                raise SolverError(f"{self.where}: {field} file {source} does not exist",
                                  "fix the path (relative paths are read beside the solver file)")
            netp = config.load_net_param(source)
            self.log.info(f"Creating training net from {field} file: {source}")
        state = _net_state(TRAIN, netp.state, p.train_state)
        return self._make_net(netp, TRAIN, state, 0)

    def _build_test_nets(self):
        p = self.param
        generic = None
        if p.HasField("net_param"):
            generic = ("net_param", p.net_param)
        elif p.net:
            generic = ("net", p.net)
        n_specific = len(p.test_net_param) + len(p.test_net)
        if generic is None and len(p.test_iter) != n_specific:
            raise SolverError(f"{self.where}: {len(p.test_iter)} test_iter value(s) for {n_specific} "
                              f"test net(s)", "give test_iter once per test net")
        if generic is not None and len(p.test_iter) < n_specific:
            raise SolverError(f"{self.where}: test_iter must be given for each test net "
                              f"({n_specific} test nets, {len(p.test_iter)} test_iter)")
        sources = [("test_net_param", tp) for tp in p.test_net_param]
        sources += [("test_net", tf) for tf in p.test_net]
        sources += [generic] * (len(p.test_iter) - n_specific)
        if p.test_state and len(p.test_state) != len(sources):
            raise SolverError(f"{self.where}: {len(p.test_state)} test_state(s) for {len(sources)} "
                              f"test net(s)", "give test_state once per test net or not at all")
        if sources and p.test_interval <= 0:
            raise SolverError(f"{self.where}: test_iter is set but test_interval is not > 0",
                              "set test_interval (or remove test_iter)")
        nets = []
        for i, (field, source) in enumerate(sources):
            if field.endswith("param"):
                netp = source
            elif not os.path.isfile(source):
                raise SolverError(f"{self.where}: {field} file {source} does not exist",
                                  "fix the path (relative paths are read beside the solver file)")
            else:
                netp = config.load_net_param(source)
            extra = p.test_state[i] if p.test_state else caffe_pb2.NetState()
            state = _net_state(TEST, netp.state, extra)
            self.log.info(f"Creating test net (#{i}) specified by {field}" +
                          ("" if field.endswith("param") else f" file: {source}"))
            nets.append(self._make_net(netp, TEST, state, 1000 * (i + 1)))
        return nets

    # -- weights ---------------------------------------------------------------------------------
    def copy_weights(self, paths):
        """Fine-tune: copy layers by name from one or more .caffemodel files (comma list allowed).
        ``SolverError`` when a file shares no layer name with the net."""
        if isinstance(paths, str):
            paths = [p for p in paths.split(",") if p]
        names = set(self.net.layer_names)
        for path in paths:
            if not os.path.isfile(path):
                raise SolverError(f"{path}: weights file does not exist")
            model = snap.load_learned_net(path)
            matching = [lp.name for lp in model.layer if lp.name in names and len(lp.blobs)]
            if not matching:
                raise SolverError(f"{path}: no layer of this model matches a layer of net "
                                  f"'{self.net.name}' by name",
                                  "fine-tuning copies weights by layer name; rename the layers")
            self.log.info(f"Finetuning from {path} ({len(matching)} layer(s) copied)")
            source = path if path.endswith(".h5") else model   # .h5 holds shared params once
            with weights_named(path):
                self.net.copy_from(source)
                for tn in self.test_nets:
                    tn.copy_from(source)

    # -- the loop ----------------------------------------------------------------------------------
    def solve(self, resume_file=None):
        """Train until ``max_iter``, as ``caffe train`` does (see module docstring)."""
        p = self.param
        self.log.info(f"Solving {self.net.name}")
        self.log.info(f"Learning Rate Policy: {p.lr_policy}")
        self.requested_early_exit = False
        if resume_file:
            self.log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self.requested_early_exit:
            self.log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = self.net.forward_prefilled()
            self._update_smoothed_loss(loss, start_iter)
            self.log.info(f"Iteration {self.iter}, loss = {fmt(self.smoothed_loss)}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log.info("Optimization Done.")

    def step(self, iters: int):
        """Run ``iters`` iterations (fewer when a stop is requested)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        self.losses, self.smoothed_loss = [], 0.0
        if self._t0 is None:
            self._t0 = time.time()
        timer, iterations_last = time.time(), self.iter
        progress_started = time.time()
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if (p.test_interval and self.iter % p.test_interval == 0
                    and (self.iter > 0 or p.test_initialization)):
                self.test_all()
                if self.requested_early_exit:
                    break
            for on_start, _ in self._py_callbacks:
                on_start()
            display = bool(p.display) and self.iter % p.display == 0
            loss = 0.0
            for pass_ in range(p.iter_size):
                self.sync.begin_pass(pass_ == p.iter_size - 1)
                loss += self.forward_backward()
            loss /= p.iter_size
            loss = self.sync.mean([loss], Reduction.LOSS)[0]
            if not math.isfinite(loss):
                last = self.last_snapshot or "none taken"
                self.log.error(f"Iteration {self.iter}, loss = {fmt(loss)}")
                advice = self.sync.divergence_hint() or "lower base_lr or check the data"
                raise SolverError(f"loss became {fmt(loss)} at iteration {self.iter}; last snapshot: "
                                  f"{last}", f"{advice}; resume with --snapshot")
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.time() - timer
                per_s = (self.iter - iterations_last) / (lapse if lapse else 1)
                # The contract's (and parse_log.sh's) form: "Iteration N, loss = X", awk field 9
                # is the loss. The speed goes on a line of its own so it cannot shift fields.
                self.log.info(f"Iteration {self.iter}, loss = {fmt(self.smoothed_loss)}")
                self.log.info(f"Iteration {self.iter}, {fmt(per_s)} iter/s, {fmt(lapse)}s/"
                              f"{p.display} iters")
                timer, iterations_last = time.time(), self.iter
                self._display_outputs()
            for _, on_gradients in self._py_callbacks:
                on_gradients()
            self.sync.update(self)
            self.iter += 1
            request = self.action_fn()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == SNAPSHOT:
                self.snapshot()
            if request == STOP:
                self.requested_early_exit = True
                break
            self.log.progress(self.iter, start_iter, stop_iter, progress_started)
        self.log.close_progress()

    def forward_backward(self) -> float:
        """One forward/backward pass of the train net (accumulates param diffs)."""
        return float(self.net.forward_backward())

    def test_iterations(self, net_id: int) -> int:
        """Forward passes for one test of net ``net_id`` on this worker (``sync.test_share``)."""
        p = self.param
        return self.sync.test_share(p.test_iter[net_id] if net_id < len(p.test_iter) else 1)

    def _update_smoothed_loss(self, loss, start_iter):
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self.losses[idx]) / n
            self.losses[idx] = loss

    def _output_values(self, net):
        """[(name, count, loss_weight, host values)] for every output blob of ``net``."""
        out = []
        for name, w in zip(net.output_blob_names, net.output_loss_weights):
            values = np.asarray(backend.to_host(net.blobs[name].data), dtype=np.float64).ravel()
            out.append((name, values.size, w, values))
        return out

    def _display_outputs(self):
        outputs = self._output_values(self.net)
        flat = self.sync.mean([float(v) for _, _, _, vals in outputs for v in vals],
                              Reduction.TRAIN_OUTPUTS)
        k = 0
        for name, count, w, _ in outputs:
            for _ in range(count):
                v = flat[k]
                suffix = f" (* {fmt(w)} = {fmt(w * v)} loss)" if w else ""
                self.log.info(f"    Train net output #{k}: {name} = {fmt(v)}{suffix}")
                k += 1
        cols = column_names([(n, c) for n, c, _, _ in outputs])
        self.netoutputs.add_train(self.iter, time.time() - self._t0, self.smoothed_loss, cols, flat)

    # -- updates -----------------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """lr for the current iteration (advances the multistep counter; call once per iteration)."""
        rate = self.schedule.rate(self.iter)
        if self.param.display and self.iter % self.param.display == 0:
            self.log.info(f"Iteration {self.iter}, lr = {fmt(rate)}")
        return rate

    def apply_update_local(self):
        """Caffe's SGDSolver::ApplyUpdate followed by Net::Update (``step.apply_step`` per param)."""
        rate = self.learning_rate()
        self.clip_gradients()
        p = self.param
        for k, rec in enumerate(self.net.learnable):
            apply_step(self.rule, rec.blob.data, rec.blob.diff, self.history[k], it=self.iter, lr=rate,
                       lr_mult=rec.lr_mult, decay=p.weight_decay, decay_mult=rec.decay_mult,
                       reg_type=p.regularization_type, scale=1.0 / p.iter_size)

    def clip_gradients(self):
        norm, scale = updates.clip_gradients([b.diff for b in self.net.learnable_params],
                                             self.param.clip_gradients)
        if scale != 1.0:
            self.log.info(f"Gradient clipping: scaling down gradients (L2 norm {fmt(norm)} > "
                          f"{fmt(self.param.clip_gradients)}) by scale factor {fmt(scale)}")

    # -- testing -----------------------------------------------------------------------------------
    def test_all(self):
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            self.test(i)

    def test(self, net_id: int):
        """Run ``test_iter[net_id]`` forward passes; log the mean of each output element."""
        p = self.param
        self.log.info(f"Iteration {self.iter}, Testing net (#{net_id})")
        net = self.test_nets[net_id]
        self.sync.before_read()   # the test net shares the train net's arrays
        net.share_trained_layers_with(self.net)
        n_iter = self.test_iterations(net_id)
        scores, loss, outputs = None, 0.0, []
        for _ in range(n_iter):
            request = self.action_fn()
            while request != NONE:
                if request == SNAPSHOT:
                    self.snapshot()
                elif request == STOP:
                    self.requested_early_exit = True
                request = self.action_fn()
            if self.requested_early_exit:
                break
            iter_loss = float(net.forward_prefilled())
            loss += iter_loss
            outputs = self._output_values(net)
            flat = np.concatenate([v for _, _, _, v in outputs]) if outputs else np.zeros(0)
            scores = flat.copy() if scores is None else scores + flat
        if self.requested_early_exit:
            self.log.info("Test interrupted.")
            return
        mean_loss = self.sync.mean([loss / max(n_iter, 1)], Reduction.TEST_LOSS, net_id)[0]
        if p.test_compute_loss:
            self.log.info(f"Test loss: {fmt(mean_loss)}")
        means = self.sync.mean([float(s) / n_iter for s in (scores if scores is not None else [])],
                               Reduction.TEST_OUTPUTS, net_id)
        k = 0
        result = {}
        for name, count, w, _ in outputs:
            for j in range(count):
                v = means[k]
                suffix = f" (* {fmt(w)} = {fmt(w * v)} loss)" if w else ""
                self.log.info(f"    Test net output #{k}: {name} = {fmt(v)}{suffix}")
                result[name if count == 1 else f"{name}_{j}"] = v
                k += 1
        self.last_test_scores[net_id] = result
        cols = column_names([(n, c) for n, c, _, _ in outputs])
        if self._t0 is None:
            self._t0 = time.time()
        self.netoutputs.add_test(net_id, self.iter, time.time() - self._t0, mean_loss, cols, means)

    # -- snapshots ---------------------------------------------------------------------------------
    def snapshot(self):
        """Write ``<prefix>_iter_<iter>.caffemodel`` and ``.solverstate``; returns the state path
        (None where ``sync.writes_files`` is False: another worker of the cluster writes them)."""
        if not self.sync.writes_files:
            return None
        if not self.snapshot_prefix:
            self.log.warning("Not snapshotting: no snapshot_prefix in the solver")
            return None
        directory = os.path.dirname(os.path.abspath(self.snapshot_prefix))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise SolverError(f"{self.where}: cannot create snapshot directory {directory}: "
                              f"{exc.strerror}", "fix snapshot_prefix") from None
        self.sync.before_read(for_snapshot=True)
        fmt = self.param.snapshot_format
        kind = "HDF5" if fmt == caffe_pb2.SolverParameter.HDF5 else "binary proto"
        model_path = snap.snapshot_filename(self.snapshot_prefix, self.iter, snap.model_ext(fmt))
        self.log.info(f"Snapshotting to {kind} file {model_path}")
        try:
            snap.save_model(self.net, model_path, write_diff=self.param.snapshot_diff)
            state_path = snap.snapshot_filename(self.snapshot_prefix, self.iter, snap.state_ext(fmt))
            self.log.info(f"Snapshotting solver state to {kind} file {state_path}")
            snap.write_solverstate(state_path, self.iter, model_path,
                                   updates.flatten_history(self.history), self.schedule.current_step)
        except OSError as exc:
            raise SolverError(f"cannot write snapshot {model_path}: {exc.strerror}",
                              "check snapshot_prefix and free disk space") from None
        self.last_snapshot = state_path
        return state_path

    def restore(self, path: str):
        """Resume: iteration, weights (from learned_net), history and multistep counter."""
        if not os.path.isfile(path):
            # Poseidon writes per-worker states as <name>.<client>.<thread>
            alt = f"{path}.{self.context.client_id}.0"
            path = alt if os.path.isfile(alt) else path
        state = snap.read_solverstate(path)
        learned = snap.locate_learned_net(path, state.learned_net)
        if learned:
            snap.restore_weights(self.net, learned)
        params = self.net.learnable_params
        flat = snap.history_from_state(state, params, self.rule.num_history, path,
                                       backend.get_array_module(params[0].data) if params else np)
        self.log.info(f"{self.rule.type}Solver: restoring history")
        self.history = updates.unflatten_history(flat, len(params), self.rule.num_history)
        self.iter = int(state.iter)
        self.schedule.current_step = int(state.current_step)
        self.last_snapshot = path

    # -- pycaffe members -------------------------------------------------------------------------
    def add_callback(self, on_start, on_gradients):
        """pycaffe ``add_callback``: ``on_start()`` runs before each iteration's forward/backward,
        ``on_gradients()`` after it, before the update (Caffe's Solver::Callback points)."""
        self._py_callbacks.append((on_start, on_gradients))

    @property
    def lr(self) -> float:
        """The learning rate the next update uses (no side effect on the multistep counter)."""
        from .lr_policy import advance_multistep, learning_rate
        step = self.schedule.current_step
        if self.param.lr_policy == "multistep":
            step = advance_multistep(self.param, self.iter, step)
        return learning_rate(self.param, self.iter, step)

