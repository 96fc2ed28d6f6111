"""``Supervisor``: the one place that starts, watches and stops this package's child processes.

Two users, one behaviour: the local launcher (``launch.py``) runs every client of a loopback hosts
file as a child, and worker 0 of a client with T > 1 workers (``client_main.py``) runs workers
1..T-1. A child's output goes to a log file, or to this process's terminal (``log_path=None``).
Every wait has a deadline; stopping signals every live child, waits ``grace_s`` and then kills.
On Linux a child gets SIGTERM when this process dies (``PR_SET_PDEATHSIG``), so a launcher killed
outright (SIGKILL, the OOM killer) leaves no client training unsupervised.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from ..errors import ClusterError


@dataclass
class Child:
    """One started process: ``label`` names it in messages ("client 1 (10.0.0.2:9000)")."""
    label: str
    proc: subprocess.Popen
    log_path: str | None = None
    _log: object = field(default=None, repr=False)

    @property
    def returncode(self):
        return self.proc.poll()

    def last_error(self) -> str | None:
        """The last ``poseidon: error:`` line of its log file (None: no log, or no such line), so
        the launcher can say on the terminal why a client whose output is in a file failed."""
        if not self.log_path:
            return None
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        return next((ln for ln in reversed(tail) if ln.startswith("poseidon: error:")), None)


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int, ignore_sigint: bool):
    """A ``preexec_fn``: the kernel sends SIGTERM to the child when its parent ends; if the parent
    already ended between fork and here, end now. Linux only; elsewhere a no-op. With
    ``ignore_sigint`` the child ignores SIGINT (Python then installs no KeyboardInterrupt)."""
    def preexec():
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent_pid:
            os._exit(143)
    return preexec


class Supervisor:
    """Start children with :meth:`start`; then either :meth:`watch` them (launcher: until all end,
    or a grace period after the first failure) or :meth:`wait_all` (until all end, with a
    deadline). :meth:`stop` (also on leaving the ``with`` block) ends whatever still runs."""

    def __init__(self):
        self.children: list[Child] = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop(signal.SIGTERM, grace_s=5.0)
        return False

    def start(self, label: str, argv: list[str], log_path: str | None = None,
              append: bool = False, ignore_sigint: bool = False) -> Child:
        """Start ``argv``; its stdout and stderr go to ``log_path`` (None: inherited), appended to
        it when ``append`` (a restarted run keeps the earlier run's log). ``ignore_sigint``: a
        Ctrl-C at the terminal reaches only this process, which decides what the child does."""
        log = open(log_path, "ab" if append else "wb") if log_path else None
        preexec = (_die_with_parent(os.getpid(), ignore_sigint)
                   if sys.platform.startswith("linux") else None)
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT if log else None,
                                    preexec_fn=preexec)
        except OSError as exc:
            if log:
                log.close()
            raise ClusterError(f"cannot start {label}: {exc.strerror or exc}") from None
        child = Child(label, proc, log_path, log)
        self.children.append(child)
        return child

    def watch(self, grace_s: float, poll_s: float = 0.1, interrupted=lambda: False) -> Child | None:
        """Wait until every child ended; once one failed (non-zero exit), the others get
        ``grace_s`` to notice (they name the dead peer in their own message) before this returns.
        Returns the first child that failed, or None when all exited 0; returns at once (None or
        the first failure so far) when ``interrupted()`` turns true."""
        first_bad, failed_at = None, None
        while not interrupted():
            codes = [c.returncode for c in self.children]
            for c, rc in zip(self.children, codes):
                if rc not in (None, 0) and first_bad is None:
                    first_bad, failed_at = c, time.monotonic()
            if all(rc is not None for rc in codes):
                return first_bad
            if failed_at is not None and time.monotonic() - failed_at > grace_s:
                return first_bad
            time.sleep(poll_s)
        return first_bad

    def wait_all(self, timeout_s: float) -> None:
        """Wait for every child to exit 0 within ``timeout_s`` in all; ClusterError naming the
        first child that did not finish in time or failed (and its log)."""
        end = time.monotonic() + timeout_s
        for c in self.children:
            try:
                rc = c.proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ClusterError(f"{c.label} did not finish within {timeout_s:.0f}s after "
                                   f"training ended") from None
            if rc != 0:
                hint = f"see {os.path.basename(c.log_path)} in the run folder" if c.log_path else None
                raise ClusterError(f"{c.label} exited with code {rc}", hint)

    def stop(self, sig=signal.SIGTERM, grace_s: float = 5.0) -> None:
        """Send ``sig`` to every live child, wait up to ``grace_s`` in all, kill the rest; close
        the log files of children that ended."""
        live = [c for c in self.children if c.returncode is None]
        for c in live:
            try:
                c.proc.send_signal(sig)
                if hasattr(signal, "SIGCONT"):   # a stopped (hung) child acts on it only when resumed
                    c.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
        end = time.monotonic() + grace_s
        for c in live:
            try:
                c.proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()
        for c in self.children:
            if c._log is not None and c.returncode is not None:
                c._log.close()
                c._log = None
