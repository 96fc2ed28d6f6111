"""Checks the command line and the files it names before any work starts, so a mistake costs
one line (``poseidon: error: ...``, exit 2) instead of a traceback or a failure minutes later.

``check(command, opts)``: ``command`` is the CLI function's name (``train``, ``test``,
``time_``, ``upgrade_net``), ``opts`` its keyword arguments. Raises ``PoseidonError``
subclasses naming the flag, file, line or field and what to do. Checked:

* every command: ``--cpu`` with ``--gpu``; ``--gpu`` ids that are not integers;
  ``--iterations`` < 1;
* ``train``: ``--snapshot`` with ``--weights``; ``--dilation``/``--jitter`` without
  ``--emulate-compute``; ``--staleness`` < 0, ``--deadline`` <= 0,
  ``--workers-per-client`` < 1, ``--client-id`` without ``--hosts``; the solver file and its
  settings (``solver.checks``); an ``--output-dir`` or snapshot folder that cannot be created
  (a file in the way, no permission); ``--weights``/``weights:``/``--snapshot`` files that are
  missing, folders, or ``.h5`` files that are not HDF5;
* ``test`` / ``time``: the model file exists;
* ``upgrade-net``: the source exists and the destination's folder exists.
"""
from __future__ import annotations

import glob
import os

from .errors import ClusterError, ConfigError, SolverError
from .textloc import field_line, where


def check(command: str, opts: dict) -> None:
    _device(opts)
    if "iterations" in opts and opts["iterations"] is not None and opts["iterations"] < 1:
        raise ConfigError(f"--iterations must be >= 1, got {opts['iterations']}",
                          "give a positive number of iterations")
    if command == "train":
        _train(opts)
    elif command in ("test", "time_", "time"):
        _existing_file("--model", opts.get("model"), "give the net prototxt")
        if command == "test":
            for path in _weight_list(opts.get("weights")):
                _weights_file("--weights", path)
    elif command == "upgrade_net":
        _existing_file("SRC", opts.get("src"), "give the net prototxt to upgrade")
        dst = opts.get("dst")
        folder = os.path.dirname(os.path.abspath(dst)) if dst else ""
        if dst and not os.path.isdir(folder):
            raise ConfigError(f"upgrade-net DST {dst}: folder {folder} does not exist",
                              "create the folder first or write elsewhere")


def _device(opts):
    gpu = opts.get("gpu")
    if opts.get("cpu") and gpu:
        raise ConfigError("give either --cpu or --gpu, not both")
    if gpu:
        ids = [s.strip() for s in str(gpu).split(",") if s.strip()]
        if ids != ["all"] and (not ids or not all(s.isdigit() for s in ids)):
            raise ConfigError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1 (or all)")


def _train(opts):
    if opts.get("snapshot") and opts.get("weights"):
        raise ConfigError("give either --snapshot (resume) or --weights (fine-tune), not both")
    if not opts.get("emulate_compute") and (opts.get("dilation") is not None
                                            or opts.get("jitter") is not None):
        raise ConfigError("--dilation and --jitter only apply with --emulate-compute PROFILE")
    if opts.get("staleness") is not None and opts["staleness"] < 0:
        raise ClusterError(f"--staleness must be >= 0, got {opts['staleness']}",
                           "use 0 for bulk synchronous training")
    if opts.get("deadline") is not None and not opts["deadline"] > 0:
        raise ClusterError(f"--deadline must be > 0 seconds, got {opts['deadline']:g}",
                           "give the seconds a blocking wait may take, or leave it out")
    if opts.get("workers_per_client") is not None and opts["workers_per_client"] < 1:
        raise ClusterError(f"--workers-per-client must be >= 1, got {opts['workers_per_client']}")
    if opts.get("client_id") is not None and not opts.get("hosts"):
        raise ClusterError("--client-id needs --hosts (it names a line of the hosts file)",
                           "add --hosts FILE or drop --client-id")
    solver = opts.get("solver")
    _existing_file("--solver", solver, "give the solver prototxt")
    from . import config
    from .solver.checks import check_solver_param
    param, text = _solver_param(config, solver)
    check_solver_param(param, solver, text)
    out = opts.get("output_dir")
    if out:
        _creatable_dir(out, "--output-dir", "choose another --output-dir")
    prefix = param.snapshot_prefix
    if prefix and (param.snapshot > 0 or param.snapshot_after_train):
        folder = os.path.dirname(os.path.abspath(prefix))
        loc = where(solver, field_line(text, "snapshot_prefix", top_level=True))
        _creatable_dir(folder, f"{loc}: snapshot_prefix folder", "fix snapshot_prefix")
    for path in _weight_list(opts.get("weights")):
        _weights_file("--weights", path)
    if not opts.get("weights") and not opts.get("snapshot"):
        for i, path in enumerate(param.weights):
            loc = where(solver, field_line(text, "weights", i, top_level=True))
            _weights_file(f"{loc}: weights", config.resolve_path(path, os.path.dirname(os.path.abspath(solver))))
    snap = opts.get("snapshot")
    if snap and snap != "latest":   # "latest" is resolved where training starts (may be none)
        if os.path.isdir(snap):
            raise SolverError(f"--snapshot {snap} is a folder", "give a .solverstate file")
        # a cluster writes per-worker states <name>.<client>.<worker> beside (or instead of) it
        found = [snap] if os.path.isfile(snap) else sorted(glob.glob(glob.escape(snap) + ".*.*"))
        if not found:
            raise SolverError(f"--snapshot {snap}: no such solverstate file",
                              "pass --snapshot <prefix>_iter_<N>.solverstate as written by a snapshot")
        state = config.load_solverstate(found[0])
        if state.iter < 0 or state.current_step < 0:
            raise SolverError(f"--snapshot {snap}: iter {state.iter} / current_step "
                              f"{state.current_step} is negative", "is it a .solverstate written by a snapshot?")


def _solver_param(config, path):
    from ._proto import caffe_pb2
    _, text = config.read_text_source(path, caffe_pb2.SolverParameter())
    return config.load_solver_param(path), text


def _weight_list(weights):
    return [p for p in str(weights).split(",") if p] if weights else []


def _existing_file(flag, path, hint):
    if not path:
        return
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a folder", hint)
    if not os.path.isfile(path):
        raise ConfigError(f"{flag} {path}: no such file", f"check the path; {hint}")


def _weights_file(what, path):
    if os.path.isdir(path):
        raise SolverError(f"{what} {path} is a folder", "give a .caffemodel (or .h5) file")
    if not os.path.isfile(path):
        raise SolverError(f"{what} {path}: no such weights file", "check the path")
    if path.endswith(".h5"):
        import h5py
        if not h5py.is_hdf5(path):
            raise SolverError(f"{what} {path}: not an HDF5 file",
                              "give a .caffemodel.h5 written by a snapshot, or a .caffemodel")


def _creatable_dir(folder, what, hint):
    """``folder`` exists as a writable directory, or can be made under one that does."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise ConfigError(f"{what} {folder} cannot be created: {probe} is a file", hint)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder}: no permission to write in {probe}", hint)
