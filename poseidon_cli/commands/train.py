"""``poseidon train`` without ``--hosts``: train, fine-tune or resume on this machine.

``run(solver, snapshot=None, weights=None, gpu=None, cpu=False, output_dir=None,
sigint_effect="stop", sighup_effect="snapshot") -> exit code``.

Outputs, in the run folder (:func:`common.run_dir`: ``--output-dir``, else the snapshot prefix's
folder, else the solver file's): ``<name>.log`` (the glog-format training log, also written to
stderr), ``<name>.netoutputs`` (see ``solver/netoutputs.py``) and, when matplotlib is installed,
``<name>.curves.png`` (the loss curve of the log), ``<name>`` from :func:`common.run_name`. Snapshots go to ``snapshot_prefix`` as in Caffe.

User mistakes raise ``PoseidonError`` subclasses (the CLI prints one line and exits 2).
"""
from __future__ import annotations

import os
import signal
import sys

from .. import config
from ..errors import ConfigError, SolverError
from ..solver.log import TrainLog
from .common import close_nets, package_logging, run_dir, run_name, select_device

EFFECTS = ("stop", "snapshot", "none")


class SignalActions:
    """Caffe's SignalHandler: SIGINT/SIGHUP set a pending request read by ``__call__`` (the
    Solver's ``action_fn``)."""

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


def run(solver=None, snapshot=None, weights=None, gpu=None, cpu=False, output_dir=None,
          sigint_effect="stop", sighup_effect="snapshot") -> int:
    """Train on this machine; see the module docstring. Returns 0 on success."""
    from ..solver import get_solver  # noqa: PLC0415 - the engine loads only when training
    from ..solver import snapshot as snap  # noqa: PLC0415

    if not solver:
        raise ConfigError("--solver is required")
    if snapshot and weights and snapshot != snap.LATEST:
        raise ConfigError("give either --snapshot (resume) or --weights (fine-tune), not both")
    if not os.path.isfile(solver):
        raise ConfigError(f"{solver}: solver file does not exist")
    param = config.load_solver_param(solver)
    if snapshot and snapshot != snap.LATEST and not (os.path.isfile(snapshot) or os.path.isfile(f"{snapshot}.0.0")):
        raise SolverError(f"{snapshot}: no such solverstate file",
                          "pass --snapshot <prefix>_iter_<N>.solverstate as written by a snapshot")
    name = run_name(solver)
    folder = run_dir(solver, output_dir, snapshot_prefix=param.snapshot_prefix)
    log_path = os.path.join(folder, f"{name}.log")
    actions = SignalActions(sigint_effect, sighup_effect)
    with open(log_path, "a") as log_file:
        streams = [sys.stderr, log_file]
        log = TrainLog(streams)
        with package_logging(streams):
            xp = select_device(gpu, cpu, param, log)
            log.info(f"Writing the log to {log_path}")
            if snapshot == snap.LATEST:
                snapshot = snap.resolve_snapshot(snapshot, solver)
                log.info(f"--snapshot latest: resuming from {snapshot}" if snapshot else
                         "--snapshot latest: no snapshot written yet; starting from iteration 0")
                weights = None if snapshot else weights   # --weights only seeds a fresh start
            s = get_solver(param, solver_path=solver, xp=xp, log=log, action_fn=actions,
                           netoutputs_path=os.path.join(folder, f"{name}.netoutputs"))
            try:
                if not snapshot and (weights or param.weights):
                    s.copy_weights(weights or list(param.weights))
                actions.install()
                s.solve(resume_file=snapshot)
            finally:
                actions.uninstall()
                close_nets([s.net] + list(s.test_nets))
    from ..tools.log_tools import write_run_curves  # noqa: PLC0415 - matplotlib only at the end
    write_run_curves(log_path)   # <name>.curves.png beside the log; skipped without matplotlib
    return 0
