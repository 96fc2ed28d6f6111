"""The local launcher: every client of a loopback hosts file as a child process of this one.

``run_local(spec) -> exit code`` (``spec.client_id`` is None, ``spec.run_dir`` resolved): starts
client k with ``spec.child_argv(k)``; client 0's output is the user's terminal, the others' goes
to ``<run dir>/client_<k>.log``. When one client fails, the others get a short margin to report
the lost peer themselves, then every child is stopped (a hung one killed). Ctrl-C or SIGTERM stops them all
(exit 130 / 143); children of a launcher killed outright end too (``procs.Supervisor``).

With ``spec.max_restarts`` N > 0 a failed run is started again from the newest snapshot (the
``latest_snapshot`` callable: ``commands/cluster.py`` passes ``solver/snapshot.latest_for_solver``,
so this module knows nothing of the engine) up to N times, so at most one snapshot interval is
lost. ``spec.snapshot`` arrives resolved (``--snapshot latest`` becomes a path or None before this,
once for all clients). Which process is which client is decided before this too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from .procs import Supervisor
from .spec import ClusterSpec

#: seconds that the other clients get, once one failed, to end and report the lost peer
#: themselves: an exited client's sockets close at once and a hung one is found by every survivor
#: within the deadline, so survivors fail at about the same moment; a hung one never ends itself
REPORT_MARGIN_S = 2.0
#: seconds the clients get to end after an interrupt before they are killed
INTERRUPT_GRACE_S = 8.0


class _Signals:
    """SIGINT / SIGTERM while the clients run: noted here and acted on by the watch loop, never
    raised inside it (an exception raised at a random point of ``Popen.poll`` can leave its lock
    held, and every later wait on that child then hangs)."""

    def __init__(self):
        self.got = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame):
        self.got = self.got or signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _say(msg: str) -> None:
    print(f"poseidon: {msg}", file=sys.stderr, flush=True)


def run_local(spec: ClusterSpec, poll_s: float = 0.1, latest_snapshot=lambda: None) -> int:
    """Run every client of ``spec`` as a local child, restarting a failed run up to
    ``spec.max_restarts`` times from ``latest_snapshot()`` (a solverstate path or None); the last
    run's first failing exit code (0 if all passed), 130 on Ctrl-C, 143 on SIGTERM."""
    run_dir = spec.run_dir
    _say(f"starting {spec.num_clients} local clients; logs of clients 1..{spec.num_clients - 1} "
         f"in {run_dir}/client_<k>.log")
    resume = spec.snapshot
    with _Signals() as signals:
        for attempt in range(spec.max_restarts + 1):
            # a restart resumes, so --weights (a fresh start's initialisation) no longer applies
            run = spec.replace(snapshot=resume, weights=spec.weights if resume is None else None)
            rc = _run_once(run, attempt, poll_s, signals)
            if rc in (0, 130, 143) or attempt == spec.max_restarts:
                return rc
            resume = latest_snapshot() or resume
            _say(f"restart {attempt + 1} of {spec.max_restarts}: " +
                 (f"resuming from {resume}" if resume else "no snapshot yet; starting again"))
    return 1  # not reached: the loop returns on its last attempt


def _run_once(spec: ClusterSpec, attempt: int, poll_s: float, signals: _Signals) -> int:
    with Supervisor() as sup:
        for h in spec.hosts:
            if signals.got:
                break
            log = None if h.client_id == 0 else os.path.join(spec.run_dir,
                                                             f"client_{h.client_id}.log")
            # Ctrl-C at the terminal reaches the whole group: only this process acts on it
            sup.start(f"client {h.client_id} ({h.address})", spec.child_argv(h.client_id), log,
                      append=attempt > 0, ignore_sigint=True)
        bad = sup.watch(grace_s=REPORT_MARGIN_S, poll_s=poll_s, interrupted=lambda: signals.got)
        if signals.got:
            return _interrupt(sup, spec, signals.got)
        if bad is None:
            return 0
        rc = bad.returncode
        why = bad.last_error()
        _say(f"{bad.label} exited with code {rc}" + (f" ({why[len('poseidon: error: '):]})" if why else "")
             + "; stopping the others")
        sup.stop(signal.SIGTERM, grace_s=REPORT_MARGIN_S)
        return rc if rc > 0 else 1


def _interrupt(sup: Supervisor, spec: ClusterSpec, signum) -> int:
    """Ctrl-C (``--sigint-effect snapshot``: client 0 first writes a snapshot, within
    ``INTERRUPT_GRACE_S``) or SIGTERM: stop every client; 130 or 143."""
    wrote = False
    if signum == signal.SIGINT and spec.sigint_effect == "snapshot" and sup.children:
        first = sup.children[0]
        if first.returncode is None and hasattr(signal, "SIGUSR1"):
            first.proc.send_signal(signal.SIGUSR1)
            try:
                first.proc.wait(timeout=INTERRUPT_GRACE_S)
                wrote = first.returncode == 130
            except subprocess.TimeoutExpired:
                pass
    sup.stop(signal.SIGTERM, grace_s=INTERRUPT_GRACE_S / 4)
    if signum == signal.SIGINT:
        _say("interrupted; " + ("client 0 wrote a snapshot; " if wrote else "") +
             "every client stopped")
        return 130
    _say("terminated (SIGTERM); every client stopped")
    return 143
