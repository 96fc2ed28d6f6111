"""Rules every command shares: the device (:func:`select_device`), the run folder
(:func:`run_dir`, :func:`run_name`), package log records in the training log
(:func:`package_logging`) and closing a net's data sources (:func:`close_nets`).
"""
from __future__ import annotations

import contextlib
import logging
import os

from .. import backend
from ..errors import ConfigError
from ..solver.log import glog_prefix


def gpu_ids(gpu) -> list[int]:
    """``--gpu`` as a list of ids ("0", "0,1"; "all" means GPU 0); ConfigError otherwise."""
    ids = [s.strip() for s in str(gpu).split(",") if s.strip()]
    if ids == ["all"]:
        ids = ["0"]
    try:
        out = [int(i) for i in ids]
    except ValueError:
        out = []
    if not out:
        raise ConfigError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1")
    return out


def select_device(gpu=None, cpu=False, solver_param=None, log=None):
    """NumPy or CuPy as Caffe picks them: ``--cpu``, else ``--gpu`` (the first id; one process
    trains on one GPU), else the solver's ``solver_mode``/``device_id`` when a GPU is usable, else
    the CPU. Returns xp; an unusable GPU is a one-line ConfigError."""
    gpu = None if gpu is None or str(gpu).strip() == "" else gpu
    if cpu and gpu is not None:
        raise ConfigError("give either --cpu or --gpu, not both")
    try:
        if cpu:
            return backend.use_cpu()
        if gpu is not None:
            ids = gpu_ids(gpu)
            if len(ids) > 1 and log:
                log.warning(f"--gpu {gpu}: one machine trains on one GPU here; using GPU {ids[0]} "
                            f"(use --hosts for data-parallel training)")
            xp = backend.use_gpu(ids[0])
            if log:
                log.info(f"Using GPU {ids[0]}")
            return xp
        if solver_param is not None and solver_param.solver_mode == solver_param.GPU:
            if backend.gpu_available():
                xp = backend.use_gpu(int(solver_param.device_id))
                if log:
                    log.info(f"Using GPU {solver_param.device_id} (solver_mode GPU)")
                return xp
            if log:
                log.info("solver_mode is GPU but no GPU is usable here: training on the CPU")
        return backend.use_cpu()
    except backend.BackendError as exc:
        raise ConfigError(str(exc)) from None


def run_name(solver_path: str) -> str:
    """The stem of a run's files: the solver file's name without its extension and a trailing
    ``_solver`` (``lenet_solver.prototxt`` -> ``lenet``)."""
    stem = os.path.basename(solver_path)
    for suffix in (".prototxt", ".pbtxt", ".txt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if stem.endswith("_solver") and len(stem) > len("_solver"):
        stem = stem[: -len("_solver")]
    return stem or "train"


def run_dir(solver_path: str, output_dir=None, *, snapshot_prefix=None, name=None) -> str:
    """The folder a run writes its log, ``.netoutputs`` and stats to, created.

    ``--output-dir`` if given; else the folder of ``snapshot_prefix`` when one is given (one
    machine: beside the snapshots, as the CLI help says); else the solver file's folder. ``name``
    (a cluster's ``<net>.S<s>.M<clients>.T<workers>``) is a subfolder of that. One rule for every
    command, so a launcher and the clients it starts agree on the folder."""
    if output_dir:
        base = output_dir
    elif snapshot_prefix:
        base = os.path.dirname(snapshot_prefix) or "."
    else:
        base = os.path.dirname(os.path.abspath(solver_path))
    path = os.path.join(base, name) if name else base
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--output-dir {path}: {exc.strerror}") from None
    return path


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
def package_logging(streams):
    """While active, the ``poseidon`` logger's records go to ``streams`` in glog format."""
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


def close_nets(nets):
    """Close every layer that holds a resource (LMDB cursors, prefetch threads)."""
    for net in nets:
        for layer in getattr(net, "layers", []):
            close = getattr(layer, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - shutting down: never hide the real error
                    pass
