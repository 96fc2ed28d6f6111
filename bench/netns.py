"""Several hosts on one machine: network namespaces on a private bridge, optionally rate-capped.

    from netns import NetnsCluster, NetnsUnavailable
    try:
        with NetnsCluster(2, rate="1gbit") as cl:        # hosts 10.77.0.1 and 10.77.0.2
            server = cl.run_in(0, ["python", "-m", "http.server", "8000"])
            client = cl.run_in(1, ["curl", f"http://{cl.addresses[0]}:8000/"])
            client.wait()
    except NetnsUnavailable as e:
        print(f"skipped: {e}")

Topology (every device lives in a namespace this object created, so the host's own interfaces,
routes and loopback are never touched, and deleting the namespaces removes every device):

    <prefix><pid>x<seq>-br : bridge ``br0`` with ports ``p0 .. p{N-1}``
    <prefix><pid>x<seq>-h<i>: ``eth0`` = 10.77.0.<i+1>/24 (the peer of ``p<i>``) and its own ``lo``

``rate`` (tc syntax, e.g. ``"1gbit"``, ``"100mbit"``, or bits per second as a number) installs a
``tbf`` qdisc on both ends of every veth pair: ``eth0`` shapes what host i sends, ``p<i>`` what it
receives, so each host has a capped full-duplex link to the switch, like a NIC port. ``burst`` and
``latency`` are tbf's (default burst: 2 ms at the rate, at least 32 KiB).

Cleanup (``close()``, run by ``__exit__``, ``atexit`` and SIGTERM/SIGHUP while the cluster is open):
every process started with ``run_in`` (its own session) is sent SIGTERM, then SIGKILL after
``kill_grace_s``; then every namespace created is deleted. Ctrl-C reaches the ``with`` block as
KeyboardInterrupt and unwinds through ``__exit__`` the same way.

Errors: ``NetnsUnavailable`` (a RuntimeError) with one line saying why, when not root, when ``ip``
or ``tc`` is missing, or when ``ip netns add`` fails (e.g. in an unprivileged container); callers
skip with its message. ``NetnsError`` when a later setup command fails (everything created is
removed first).
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time

SUBNET = "10.77.0"          # private range used ONLY inside namespaces created here
_seq = itertools.count()


class NetnsUnavailable(RuntimeError):
    """Namespaces cannot be created on this machine (not root, no iproute2, no permission)."""


class NetnsError(RuntimeError):
    """A setup command failed after namespaces could be created."""


def parse_rate(rate) -> int:
    """tc rate (``"1gbit"``, ``"100mbit"``, ``"800kbit"``, ``"10mbps"``, or a number of bit/s) -> bit/s."""
    if isinstance(rate, (int, float)):
        return int(rate)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(bit|bps)?\s*", str(rate).lower())
    if not m:
        raise ValueError(f"rate {rate!r}: expected e.g. '1gbit', '100mbit' or bits per second")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
    bits = float(m.group(1)) * scale
    if m.group(3) == "bps":  # tc's "bps" means bytes per second
        bits *= 8
    return int(bits)


def check_available() -> None:
    """Raise NetnsUnavailable with the reason when namespaces cannot be made here."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (run as root, e.g. sudo)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsUnavailable(f"'{tool}' (iproute2) is not installed")


class NetnsCluster:
    """N namespaces on a bridge; see the module docstring.

    Attributes: ``names`` (host namespace names), ``addresses`` (their IPv4 addresses),
    ``bridge_ns``, ``rate_bps`` (None when uncapped).
    """

    def __init__(self, n: int, rate=None, burst=None, latency: str = "50ms",
                 prefix: str = "psn", kill_grace_s: float = 3.0):
        if not 1 <= n <= 250:
            raise ValueError(f"n={n}: between 1 and 250 hosts")
        self.n = n
        self.rate_bps = None if rate is None else parse_rate(rate)
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ValueError(f"rate {rate!r} must be positive")
        if burst is None and self.rate_bps is not None:
            burst = max(32 * 1024, int(self.rate_bps / 8 * 0.002))
        self.burst = burst
        self.latency = latency
        self.kill_grace_s = kill_grace_s
        tag = f"{prefix}{os.getpid()}x{next(_seq)}"
        self.bridge_ns = f"{tag}-br"
        self.names = [f"{tag}-h{i}" for i in range(n)]
        self.addresses = [f"{SUBNET}.{i + 1}" for i in range(n)]
        self._created: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._open = False
        self._old_handlers = {}
        self.secret = secrets.token_hex(32)   # the job secret of every run_in process

    # ------------------------------------------------------------------ setup
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _ip(self, *args, check=True):
        r = subprocess.run(["ip", *args], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise NetnsError(f"'ip {' '.join(args)}' failed: {r.stderr.strip() or r.returncode}")
        return r

    def _tc(self, ns, *args):
        r = subprocess.run(["tc", "-n", ns, *args], capture_output=True, text=True)
        if r.returncode != 0:
            raise NetnsError(f"'tc -n {ns} {' '.join(args)}' failed: {r.stderr.strip() or r.returncode}")

    def _add_ns(self, name):
        # Recorded before the command so an interrupt between the two still deletes it.
        self._created.append(name)
        r = self._ip("netns", "add", name, check=False)
        if r.returncode != 0:
            self._created.pop()
            raise NetnsUnavailable(f"'ip netns add {name}' failed: {r.stderr.strip() or r.returncode}")

    def open(self):
        check_available()
        self._install_handlers()
        atexit.register(self.close)
        self._open = True
        try:
            self._add_ns(self.bridge_ns)
            br = self.bridge_ns
            self._ip("-n", br, "link", "add", "br0", "type", "bridge")
            self._ip("-n", br, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                self._add_ns(ns)
                # The pair is born inside the bridge namespace with one end moved straight into
                # the host namespace: nothing ever appears in the caller's namespace.
                self._ip("-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                         "netns", ns)
                self._ip("-n", br, "link", "set", f"p{i}", "master", "br0")
                self._ip("-n", br, "link", "set", f"p{i}", "up")
                self._ip("-n", ns, "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0")
                self._ip("-n", ns, "link", "set", "eth0", "up")
                # The namespace's own loopback: traffic to its own address goes through it.
                self._ip("-n", ns, "link", "set", "lo", "up")
                if self.rate_bps is not None:
                    for where, dev in ((ns, "eth0"), (br, f"p{i}")):
                        self._tc(where, "qdisc", "add", "dev", dev, "root", "tbf",
                                 "rate", f"{self.rate_bps}bit", "burst", str(self.burst),
                                 "latency", self.latency)
        except BaseException:
            self.close()
            raise
        return self

    def _install_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum, frame):
            self.close()
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._old_handlers[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):
                pass

    def _restore_handlers(self):
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError):
                pass
        self._old_handlers = {}

    # ------------------------------------------------------------------ use
    def ns(self, host) -> str:
        """Namespace name of host ``host`` (an index, or already a name of this cluster)."""
        if isinstance(host, int):
            return self.names[host]
        if host in self.names or host == self.bridge_ns:
            return host
        raise ValueError(f"{host!r} is not a namespace of this cluster")

    def run_in(self, host, argv, **popen_kwargs) -> subprocess.Popen:
        """Start ``argv`` inside host ``host``'s namespace (``ip netns exec``); returns the Popen.

        The child gets its own session (so a terminal Ctrl-C reaches only this script, which then
        stops it) unless ``start_new_session`` is given. It is stopped at ``close()`` if still
        running."""
        if not self._open:
            raise NetnsError("the cluster is not open (use it inside 'with NetnsCluster(...)')")
        popen_kwargs.setdefault("start_new_session", True)
        # the processes of one cluster share a job secret, as a launcher would give them
        env = dict(popen_kwargs.get("env") or os.environ)
        env.setdefault("POSEIDON_SECRET", self.secret)
        popen_kwargs["env"] = env
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host), *map(str, argv)], **popen_kwargs)
        self._procs.append(p)
        return p

    def run(self, host, argv, timeout=None, **kwargs) -> subprocess.CompletedProcess:
        """Run ``argv`` in host ``host``'s namespace to completion (``subprocess.run`` semantics)."""
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *map(str, argv)],
                              timeout=timeout, **kwargs)

    def link_bytes(self, host) -> dict:
        """Bytes host ``host`` has sent and received on its link so far: ``{"tx": n, "rx": n}``
        (the kernel's eth0 counters; subtract two readings to get one run's traffic)."""
        r = self.run(host, ["ip", "-s", "-j", "link", "show", "eth0"], capture_output=True, text=True)
        if r.returncode != 0:
            raise NetnsError(f"reading eth0 counters in {self.ns(host)} failed: {r.stderr.strip()}")
        st = json.loads(r.stdout)[0]["stats64"]
        return {"tx": int(st["tx"]["bytes"]), "rx": int(st["rx"]["bytes"])}

    # ------------------------------------------------------------------ teardown
    def _stop(self, p: subprocess.Popen):
        if p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)  # the child's own session: it and what it started
        except (ProcessLookupError, PermissionError):
            p.terminate()
        try:
            p.wait(self.kill_grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            p.wait()

    def close(self):
        """Stop started processes and delete every namespace created (idempotent)."""
        if not self._open:
            return
        self._open = False
        try:
            for p in self._procs:
                self._stop(p)
        finally:
            # Host namespaces first: deleting one destroys its veth end and so the peer port.
            for name in reversed(self._created):
                self._ip("netns", "del", name, check=False)
            self._created = []
            self._restore_handlers()
            try:
                atexit.unregister(self.close)
            except Exception:  # noqa: BLE001 - interpreter shutting down
                pass

    def remaining(self) -> list[str]:
        """Namespaces of this cluster that still exist (empty after close())."""
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        listed = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
        return [n for n in [self.bridge_ns, *self.names] if n in listed]
