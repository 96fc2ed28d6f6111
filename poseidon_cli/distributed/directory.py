"""The worker-port directory of one client: where its workers t >= 1 listen.

With several workers per client (``--gpu 0,1``), worker t >= 1 of client k serves its peer-to-peer
traffic (sufficient factors) on a port of its own, chosen by the OS, and registers that port with
client k's worker 0, whose gRPC server (the hosts-file address) answers peers' lookups. So a hosts
file keeps one port per client however many workers each runs. Nothing here is about SFB itself;
the service name keeps its wire spelling (``poseidon.sfb.Directory``) for compatibility.
"""
from __future__ import annotations

import threading
import time

from ..errors import ClusterError

DIRECTORY = "poseidon.sfb.Directory"


class WorkerDirectory:
    """With several workers per client (``--gpu 0,1``), worker t >= 1 of client k serves SFB on a
    port of its own (chosen by the OS) and registers it with client k's worker 0, whose gRPC
    server (the hosts-file address) answers peers' lookups: hosts files keep one port per client.

    Wire: raw-bytes unary methods of service ``poseidon.sfb.Directory``: ``Register`` takes
    ``b"<job>|<t>|<port>"`` and returns ``b""``; ``Lookup`` takes ``b"<job>|<t>"`` and returns the
    ASCII port, or ``b""`` while worker t has not registered. Another job's request is refused
    (FAILED_PRECONDITION) with a one-line message."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.ports: dict[int, int] = {}
        self._lock = threading.Lock()

    def _split(self, raw, n, context):
        import grpc

        parts = bytes(raw).decode("ascii", "replace").split("|")
        if len(parts) != n or parts[0] != self.job_id:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"SFB directory of job {self.job_id!r} got {bytes(raw)[:80]!r}")
        return parts

    def handler(self):
        import grpc

        def register(raw, context):
            _, t, port = self._split(raw, 3, context)
            with self._lock:
                self.ports[int(t)] = int(port)
            return b""

        def lookup(raw, context):
            _, t = self._split(raw, 2, context)
            with self._lock:
                port = self.ports.get(int(t))
            return b"" if port is None else str(port).encode("ascii")

        return grpc.method_handlers_generic_handler(DIRECTORY, {
            "Register": grpc.unary_unary_rpc_method_handler(register),
            "Lookup": grpc.unary_unary_rpc_method_handler(lookup)})


def _directory_call(address, method, payload, deadline_s, want, what, security=None):
    """Call ``method`` on the directory at ``address`` until ``want(reply)`` (retrying while the
    server is not up yet or answers "not yet"); ClusterError naming ``what`` at the deadline.
    ``security``: the job's ``ps.auth.Security`` (the directory is served by the shard's server,
    which checks every caller)."""
    import grpc

    from ..ps.auth import NO_SECURITY

    end = time.monotonic() + deadline_s
    last = "no answer"
    with (security or NO_SECURITY).channel(address) as ch:
        call = ch.unary_unary(f"/{DIRECTORY}/{method}")
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise ClusterError(f"{what} via {address} did not succeed within {deadline_s:.0f}s "
                                   f"({last})")
            try:
                reply = call(payload, timeout=min(left, 5.0), wait_for_ready=True)
                if want(reply):
                    return reply
                last = "not registered yet"
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    raise ClusterError(e.details()) from None
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    raise ClusterError(f"{what} via {address}: refused our credentials",
                                       "every client needs the same job secret") from None
                last = f"{e.code()}"
            time.sleep(0.05)


def register_worker(address, job_id, t, port, deadline_s, security=None):
    """Worker t >= 1: tell client's worker 0 (at ``address``) the port its SFB server listens on."""
    _directory_call(address, "Register", f"{job_id}|{t}|{port}".encode("ascii"), deadline_s,
                    lambda r: True, f"registering worker {t}'s SFB port with its client's worker 0",
                    security)


def lookup_worker(address, host, job_id, t, deadline_s, security=None):
    """The "host:port" of worker t >= 1 of the client whose worker 0 listens on ``address``."""
    reply = _directory_call(address, "Lookup", f"{job_id}|{t}".encode("ascii"), deadline_s,
                            lambda r: bool(r), f"looking up the SFB port of worker {t}", security)
    return f"{host}:{int(reply)}"
