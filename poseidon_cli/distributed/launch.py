"""The local launcher: every client of a loopback hosts file as a child process of this one.

``run_local(spec) -> exit code`` (``spec.client_id`` is None, ``spec.run_dir`` resolved): starts
client k with ``spec.child_argv(k)``; client 0's output is the user's terminal, the others' goes
to ``<run dir>/client_<k>.log``. When one client fails, the others get the deadline plus a margin
to report the lost peer themselves, then every child is stopped; Ctrl-C stops them all. Which
process is which client is decided before this (``commands/cluster.py``).
"""
from __future__ import annotations

import os
import signal
import sys

from .procs import Supervisor
from .spec import ClusterSpec

#: seconds, beyond the deadline, that the other clients get to report a failed client themselves
REPORT_MARGIN_S = 10.0


def run_local(spec: ClusterSpec, poll_s: float = 0.1) -> int:
    """Run every client of ``spec`` as a local child; the first failing exit code (0 if all
    pass), 130 on Ctrl-C."""
    run_dir = spec.run_dir
    print(f"poseidon: starting {spec.num_clients} local clients; logs of clients "
          f"1..{spec.num_clients - 1} in {run_dir}/client_<k>.log", file=sys.stderr, flush=True)
    with Supervisor() as sup:
        try:
            for h in spec.hosts:
                log = None if h.client_id == 0 else os.path.join(run_dir, f"client_{h.client_id}.log")
                sup.start(f"client {h.client_id} ({h.address})", spec.child_argv(h.client_id), log)
            bad = sup.watch(grace_s=spec.deadline_s + REPORT_MARGIN_S, poll_s=poll_s)
        except KeyboardInterrupt:
            sup.stop(signal.SIGINT, grace_s=15.0)
            print("poseidon: interrupted; every client stopped", file=sys.stderr)
            return 130
        if bad is None:
            return 0
        rc = bad.returncode
        print(f"poseidon: {bad.label} exited with code {rc}; stopping the others",
              file=sys.stderr, flush=True)
        return rc if rc > 0 else 1
