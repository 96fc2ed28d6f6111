"""What ``poseidon train`` (without ``--hosts``) and ``poseidon test`` run.

``train_local(**opts) -> exit code``; opts (from the CLI): ``solver`` (path, required),
``snapshot`` (resume from a .solverstate), ``weights`` (fine-tune from .caffemodel[,...]),
``gpu`` ("0" or "0,1": the first id is used on one machine), ``cpu`` (flag), ``output_dir``,
``sigint_effect`` / ``sighup_effect`` ("stop" | "snapshot" | "none"); ``hosts``, ``client_id``,
``staleness``, ``svb``, ``no_overlap``, ``deadline`` only matter for distributed runs and are
ignored here.

Outputs, in the output directory (default: the snapshot prefix's directory, else the solver
file's): ``<name>.log`` (the glog-format training log, also written to stderr) and
``<name>.netoutputs`` (see ``netoutputs.py``), where ``<name>`` is the solver file's name without
``.prototxt`` and a trailing ``_solver``. Snapshots go to ``snapshot_prefix`` as in Caffe.

``test_model(model, weights, iterations, gpu, cpu) -> exit code`` scores a TEST-phase net like
``caffe test``: ``Batch i, <output> = v`` per batch, then ``Loss: X`` and ``<output> = mean``.

User mistakes raise ``PoseidonError`` subclasses (the CLI prints one line and exits 2).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

import numpy as np

from .. import backend, config
from ..errors import ConfigError, SolverError
from ..net_checks import weights_named
from .log import TrainLog, fmt, glog_prefix

EFFECTS = ("stop", "snapshot", "none")


def run_name(solver_path: str) -> str:
    stem = os.path.basename(solver_path)
    for suffix in (".prototxt", ".pbtxt", ".txt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.endswith("_solver") and len(stem) > len("_solver"):
        stem = stem[: -len("_solver")]
    return stem or "train"


def select_device(gpu, cpu, solver_param=None, log=None):
    """Pick NumPy or CuPy as Caffe does (--cpu, --gpu, else solver_mode/device_id); returns xp."""
    if cpu and gpu:
        raise ConfigError("give either --cpu or --gpu, not both")
    try:
        if cpu:
            return backend.use_cpu()
        if gpu:
            ids = [s.strip() for s in str(gpu).split(",") if s.strip()]
            if ids == ["all"]:
                ids = ["0"]
            try:
                first = int(ids[0])
            except (ValueError, IndexError):
                raise ConfigError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1") from None
            if len(ids) > 1 and log:
                log.warning(f"--gpu {gpu}: one machine trains on one GPU here; using GPU {first} "
                            f"(use --hosts for data-parallel training)")
            xp = backend.use_gpu(first)
            if log:
                log.info(f"Using GPU {first}")
            return xp
        if solver_param is not None and solver_param.solver_mode == solver_param.GPU \
                and backend.gpu_available():
            xp = backend.use_gpu(int(solver_param.device_id))
            if log:
                log.info(f"Using GPU {solver_param.device_id} (solver_mode GPU)")
            return xp
        if log and solver_param is not None and solver_param.solver_mode == solver_param.GPU:
            log.info("solver_mode is GPU but no GPU is usable here: training on the CPU")
        return backend.use_cpu()
    except backend.BackendError as exc:
        raise ConfigError(str(exc)) from None


class _GlogHandler(logging.Handler):
    """Routes the package's ``logging`` records (data layers...) into the training log."""

    def __init__(self, streams):
        super().__init__(logging.INFO)
        self.streams = streams

    def emit(self, record):
        level = {"WARNING": "W", "ERROR": "E", "CRITICAL": "F"}.get(record.levelname, "I")
        where = f"{os.path.basename(record.pathname)}:{record.lineno}"
        line = f"{glog_prefix(level, record.created, where)} {record.getMessage()}\n"
        for s in self.streams:
            s.write(line)
            s.flush()


@contextlib.contextmanager
def _package_logging(streams):
    logger = logging.getLogger("poseidon")
    handler = _GlogHandler(streams)
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class SignalActions:
    """Caffe's SignalHandler: SIGINT/SIGHUP set a pending request read by ``__call__``."""

    def __init__(self, sigint_effect="stop", sighup_effect="snapshot"):
        for name, eff in (("--sigint-effect", sigint_effect), ("--sighup-effect", sighup_effect)):
            if eff not in EFFECTS:
                raise ConfigError(f"{name} {eff}: use one of {', '.join(EFFECTS)}")
        self.effects = {signal.SIGINT: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
        self.got = {s: False for s in self.effects}
        self._old = {}

    def _handle(self, signum, frame):
        self.got[signum] = True

    def install(self):
        for s in self.effects:
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def uninstall(self):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def __call__(self):
        for s in self.effects:  # SIGINT first, as Caffe checks it first
            if self.got[s]:
                self.got[s] = False
                return self.effects[s]
        return "none"


def train_local(solver=None, hosts=None, client_id=None, staleness=None, svb=None, gpu=None,
                cpu=False, snapshot=None, weights=None, output_dir=None, sigint_effect="stop",
                sighup_effect="snapshot", no_overlap=False, deadline=None, **_ignored) -> int:
    """Train on this machine; see the module docstring. Returns 0 on success."""
    from . import get_solver  # noqa: PLC0415

    if not solver:
        raise ConfigError("--solver is required")
    if snapshot and weights:
        raise ConfigError("give either --snapshot (resume) or --weights (fine-tune), not both")
    if not os.path.isfile(solver):
        raise ConfigError(f"{solver}: solver file does not exist")
    param = config.load_solver_param(solver)
    if snapshot and not (os.path.isfile(snapshot) or os.path.isfile(f"{snapshot}.0.0")):
        raise SolverError(f"{snapshot}: no such solverstate file",
                          "pass --snapshot <prefix>_iter_<N>.solverstate as written by a snapshot")
    name = run_name(solver)
    if output_dir is None:
        prefix = param.snapshot_prefix
        output_dir = os.path.dirname(prefix) if prefix else os.path.dirname(os.path.abspath(solver))
    output_dir = output_dir or "."
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output-dir {output_dir}: {exc.strerror}") from None
    log_path = os.path.join(output_dir, f"{name}.log")
    actions = SignalActions(sigint_effect, sighup_effect)
    with open(log_path, "a") as log_file:
        streams = [sys.stderr, log_file]
        log = TrainLog(streams)
        with _package_logging(streams):
            xp = select_device(gpu, cpu, param, log)
            log.info(f"Writing the log to {log_path}")
            s = get_solver(param, solver_path=solver, xp=xp, log=log, action_fn=actions,
                           netoutputs_path=os.path.join(output_dir, f"{name}.netoutputs"))
            try:
                if weights or param.weights:
                    s.copy_weights(weights or list(param.weights))
                actions.install()
                s.solve(resume_file=snapshot)
            finally:
                actions.uninstall()
                _close_nets([s.net] + list(s.test_nets))
    return 0


def _close_nets(nets):
    for net in nets:
        for layer in getattr(net, "layers", []):
            close = getattr(layer, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # shutting down: never hide the real error
                    pass


def test_model(model=None, weights=None, iterations=50, gpu=None, cpu=False, log=None, **_ignored):
    """``caffe test``: score ``model`` (TEST phase) with ``weights`` over ``iterations`` batches.
    Returns 0; the per-output means are also returned via ``test_model.last`` for scripts."""
    from ..net import Net  # noqa: PLC0415
    from ..layers.base import TEST  # noqa: PLC0415

    if not model or not os.path.isfile(model):
        raise ConfigError(f"{model}: model prototxt does not exist")
    if not weights:
        raise ConfigError("--weights is required to test a model")
    if iterations is None or iterations < 1:
        raise ConfigError(f"--iterations must be >= 1 (got {iterations})")
    log = log or TrainLog([sys.stderr])
    with _package_logging(log.streams):
        xp = select_device(gpu, cpu, None, log)
        net = Net(model, TEST, xp=xp)
        try:
            paths = [p for p in str(weights).split(",") if p]
            names = set(net.layer_names)
            for path in paths:
                if not os.path.isfile(path):
                    raise ConfigError(f"{path}: weights file does not exist")
                m = config.load_caffemodel(path)
                if not any(lp.name in names and len(lp.blobs) for lp in m.layer):
                    raise SolverError(f"{path}: no layer of this model matches a layer of net "
                                      f"'{net.name}' by name", "is it the model's .caffemodel?")
                with weights_named(path):
                    net.copy_from(m)
            log.info(f"Running for {iterations} iterations.")
            scores, loss, meta = None, 0.0, []
            for i in range(iterations):
                loss += float(net.forward_prefilled())
                values, meta = [], []
                for out, w in zip(net.output_blob_names, net.output_loss_weights):
                    vals = np.asarray(backend.to_host(net.blobs[out].data), np.float64).ravel()
                    for v in vals:
                        log.info(f"Batch {i}, {out} = {fmt(v)}")
                        values.append(v)
                        meta.append((out, w))
                values = np.array(values)
                scores = values if scores is None else scores + values
            log.info(f"Loss: {fmt(loss / iterations)}")
            result = {}
            for (out, w), total in zip(meta, scores if scores is not None else []):
                mean = total / iterations
                suffix = f" (* {fmt(w)} = {fmt(w * mean)} loss)" if w else ""
                log.info(f"{out} = {fmt(mean)}{suffix}")
                result.setdefault(out, mean)
            test_model.last = {"loss": loss / iterations, **result}
        finally:
            _close_nets([net])
    return 0
