"""``ShardTransport`` with a TCP bulk data plane: control calls over gRPC, Push / Pull payloads over
plain sockets (framing: tcp_wire; server side: tcp_server).

Register, clock, barrier, solver state, health, heartbeat and shutdown go through an embedded
:class:`~poseidon_cli.ps.grpc_transport.GrpcTransport`. The first ``health`` also asks the shard for
its data port (``/poseidon.ps.DataPlane/Endpoint``); the data connections go to the host of the gRPC
address and that port. Connections are persistent and pooled: a call takes an idle one (or opens one),
so concurrent pushes / pulls of one worker use as many connections as it has calls in flight.

Payloads are never concatenated: ``sendmsg`` of (item header, ndarray memoryview) pairs on the way
out, ``recv_into`` of the destination on the way in (with :meth:`TcpTransport.pull_into` the
destination is the caller's own array, e.g. the PS client's output tensor).

Errors are ClusterErrors naming the shard, its gRPC address and the data address (``shard`` set): a
timeout, a refused or broken connection ("the shard's host may have died"), or the shard's own
one-line message with its ``lost_workers`` / ``shard`` fields from the ERROR frame.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable, Iterator

import numpy as np

from ..errors import ClusterError
from . import tcp_wire as W
from .auth import NO_SECURITY, Security
from .grpc_transport import GrpcTransport
from .protocol import ENDPOINT_METHOD, PROTOCOL_VERSION
from .transport import ShardTransport

# Time the shard gets on top of a wait's own deadline, so its explanation (which workers it waited
# for) arrives before our socket deadline fires.
_GRACE_S = 1.0
# Small items (biases, ZERO_GRADIENTs) are batched into one sendmsg up to this many bytes.
_BATCH_BYTES = 1 << 20
#: seconds an idle pooled connection is reused; older ones are closed and replaced, so the shard's
#: idle timeout (tcp_server.IDLE_TIMEOUT_S) never closes one under a request
IDLE_REUSE_S = 120.0


class TcpTransport(ShardTransport):
    """Connection to shard ``shard_id`` whose gRPC server is at ``address`` ("host:port");
    ``channels`` and ``protocol_version`` are the embedded GrpcTransport's."""

    def __init__(self, address: str, shard_id: int, job_id: str, channels: int = 1,
                 protocol_version: int = PROTOCOL_VERSION, security: Security = NO_SECURITY):
        self.control = GrpcTransport(address, shard_id, job_id, channels=channels,
                                     protocol_version=protocol_version, security=security)
        self.security = security
        self.address, self.shard_id = address, shard_id
        host = address.rsplit(":", 1)[0]
        self._host = host[1:-1] if host.startswith("[") else host
        self._data_port: int | None = None
        self._idle: list[tuple[socket.socket, float]] = []   # (connection, idle since)
        self._busy: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    # job id / protocol version live in the control transport (register may change them)
    @property
    def job_id(self) -> str:
        return self.control.job_id

    @property
    def protocol_version(self) -> int:
        return self.control.protocol_version

    def _name(self) -> str:
        data = f"{self._host}:{self._data_port}" if self._data_port else "data port unknown"
        return f"shard {self.shard_id} at {self.address} (data {data})"

    # ---------------------------------------------------------------- connections
    def _discover(self, timeout_s: float) -> int:
        if self._data_port is None:
            reply = self.control.call_raw(ENDPOINT_METHOD, b"", timeout_s, "data-plane discovery")
            if not reply:
                raise ClusterError(f"shard {self.shard_id} at {self.address} serves no TCP data plane",
                                   "start its ShardServer with data_plane='tcp' or use data_plane='grpc'",
                                   shard=self.shard_id)
            self._data_port = int(reply)
        return self._data_port

    def _acquire(self, t_end: float, what: str) -> socket.socket:
        with self._lock:
            if self._closed:
                raise ClusterError(f"{self._name()}: {what} on a closed transport", shard=self.shard_id)
            now = time.monotonic()
            while self._idle:
                s, since = self._idle.pop()
                if now - since < IDLE_REUSE_S:
                    self._busy.add(s)
                    return s
                s.close()
        port = self._discover(max(0.1, t_end - time.monotonic()))
        try:
            s = socket.create_connection((self._host, port), timeout=max(0.05, t_end - time.monotonic()))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = self.security.tcp_client_side(s, self._host, t_end)
        except ConnectionRefusedError as e:
            if "handshake" in str(e) or "secret" in str(e):
                raise ClusterError(f"{self._name()}: the data port refused our credentials ({e})",
                                   "every client needs the same job secret (--secret-file or "
                                   "$POSEIDON_SECRET) and a byte-identical hosts file",
                                   shard=self.shard_id) from None
            raise ClusterError(f"{self._name()}: cannot open a data connection for {what} ({e})",
                               "the shard's host may have died", shard=self.shard_id) from None
        except OSError as e:
            tls = ", or TLS failed (check --tls-ca and the certificates)" if self.security.tls else ""
            raise ClusterError(f"{self._name()}: cannot open a data connection for {what} ({e})",
                               "the shard's host may have died" + tls, shard=self.shard_id) from None
        with self._lock:
            self._busy.add(s)
        return s

    def _release(self, s: socket.socket, in_sync: bool) -> None:
        now = time.monotonic()
        stale: list[socket.socket] = []
        with self._lock:
            self._busy.discard(s)
            # The pool is a stack, so a connection opened for a past peak of concurrent calls sinks to
            # the bottom and is never popped again; close those here, so that the pool (and the
            # shard's thread per connection) shrinks back after a peak instead of keeping its size.
            while self._idle and now - self._idle[0][1] >= IDLE_REUSE_S:
                stale.append(self._idle.pop(0)[0])
            if in_sync and not self._closed:
                self._idle.append((s, now))
                s = None
        for old in stale:
            old.close()
        if s is not None:
            s.close()

    def _failure(self, e: BaseException, what: str, timeout: float) -> ClusterError:
        if isinstance(e, socket.timeout):
            return ClusterError(f"{self._name()} did not answer {what} within {timeout:.1f}s",
                                shard=self.shard_id)
        return ClusterError(f"{self._name()}: data connection broke during {what} ({e})",
                            "the shard's host may have died", shard=self.shard_id)

    def _request(self, s, op, worker_id, clock, min_clock, deadline_s, count, t_end) -> list:
        job = self.job_id.encode("utf-8")
        return [W.REQUEST.pack(W.MAGIC, op, len(job), worker_id, self.protocol_version, clock, min_clock,
                               float(deadline_s), count), job]

    def _read_reply(self, s, hdr: np.ndarray, t_end: float) -> tuple[int, int, int, int]:
        W.recv_exact(s, memoryview(hdr), t_end)
        kind, a, b, n = W.REPLY.unpack(hdr)
        if kind == W.R_ERROR:
            body = bytearray(n)
            W.recv_exact(s, memoryview(body), t_end)
            message, lost, shard = W.parse_error(b, body)
            raise _ShardError(ClusterError(message, lost_workers=lost, shard=shard))
        return kind, a, b, n

    # ---------------------------------------------------------------- data plane
    def push(self, worker_id, clock, items, deadline_s):
        items = list(items)
        timeout = deadline_s + _GRACE_S
        t_end = time.monotonic() + timeout
        what = f"push at clock {clock}"
        s = self._acquire(t_end, what)
        in_sync = False
        try:
            bufs = self._request(s, W.OP_PUSH, worker_id, clock, 0, deadline_s, len(items), t_end)
            pending = 0
            for key, kind, payload in items:
                mv = W.byte_view(payload) if payload is not None else None
                bufs.append(W.ITEM.pack(key, kind, len(mv) if mv is not None else 0))
                if mv is not None:
                    bufs.append(mv)
                    pending += len(mv)
                if pending >= _BATCH_BYTES:
                    W.sendmsg_all(s, bufs, t_end)
                    bufs, pending = [], 0
            W.sendmsg_all(s, bufs, t_end)
            hdr = np.empty(W.REPLY.size, np.uint8)
            try:
                _, accepted, dups, _ = self._read_reply(s, hdr, t_end)
            except _ShardError as e:
                in_sync = True
                raise e.error from None
            in_sync = True
            return accepted, dups
        except (OSError, socket.timeout) as e:
            raise self._failure(e, what, timeout) from None
        finally:
            self._release(s, in_sync)

    def pull(self, worker_id, clock, keys, min_clock, deadline_s):
        """Yields ``(key, applied_clock, buffer)``; each buffer is a fresh array the caller may keep."""
        got: dict[int, np.ndarray] = {}

        def dest(key, nbytes):
            got[key] = np.empty(nbytes, np.uint8)
            return memoryview(got[key])

        for key, applied in self.pull_into(worker_id, clock, keys, min_clock, deadline_s, dest):
            yield key, applied, got.pop(key)

    def pull_into(self, worker_id: int, clock: int, keys, min_clock: int, deadline_s: float,
                  dest: Callable[[int, int], memoryview]) -> Iterator[tuple[int, int]]:
        """Like :meth:`pull`, but chunk ``key``'s ``nbytes`` bytes are received straight into
        ``dest(key, nbytes)`` (a writable byte view); yields ``(key, applied_clock)`` once it is full."""
        keys = np.asarray(list(keys), dtype=np.int64)
        timeout = deadline_s + _GRACE_S
        t_end = time.monotonic() + timeout
        what = f"pull at clock {clock}"
        s = self._acquire(t_end, what)
        in_sync = False
        try:
            bufs = self._request(s, W.OP_PULL, worker_id, clock, min_clock, deadline_s, len(keys), t_end)
            bufs.append(memoryview(keys).cast("B"))
            W.sendmsg_all(s, bufs, t_end)
            hdr = np.empty(W.REPLY.size, np.uint8)
            received: dict[int, int] = {}  # key -> applied clock of its latest CHUNK, until COMMIT
            while True:
                try:
                    kind, key, applied, n = self._read_reply(s, hdr, t_end)
                except _ShardError as e:
                    in_sync = True
                    raise e.error from None
                if kind == W.R_CHUNK:
                    # A repeated CHUNK of the same key (the shard's values changed while it sent them)
                    # overwrites the same destination.
                    W.recv_exact(s, dest(key, n), t_end)
                    received[key] = applied
                elif kind == W.R_COMMIT:
                    yield key, received.pop(key)
                elif kind == W.R_END:
                    in_sync = True
                    return
                else:
                    raise OSError(f"unexpected reply frame type {kind}")
        except (OSError, socket.timeout) as e:
            raise self._failure(e, what, timeout) from None
        finally:
            # A consumer that stops early leaves unread frames: the connection is then closed.
            self._release(s, in_sync)

    # ---------------------------------------------------------------- control plane (gRPC)
    def health(self, timeout_s):
        h = self.control.health(timeout_s)
        self._discover(timeout_s)
        return h

    def register(self, *args, **kwargs):
        return self.control.register(*args, **kwargs)

    def clock(self, worker_id, clock, deadline_s):
        return self.control.clock(worker_id, clock, deadline_s)

    def barrier(self, worker_id, barrier_id, deadline_s):
        return self.control.barrier(worker_id, barrier_id, deadline_s)

    def get_solver_state(self, worker_id, keys, deadline_s):
        return self.control.get_solver_state(worker_id, keys, deadline_s)

    def set_solver_state(self, worker_id, entries, deadline_s):
        return self.control.set_solver_state(worker_id, entries, deadline_s)

    def start_heartbeat(self, worker_id, interval_s, on_failure):
        return self.control.start_heartbeat(worker_id, interval_s, on_failure)

    def leave(self, worker_id, stop_server=False):
        return self.control.leave(worker_id, stop_server)

    def close(self):
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for s, _ in idle:
            s.close()
        for s in busy:  # wake calls still blocked on the shard
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.control.close()


class _ShardError(Exception):
    """An ERROR frame: the shard's ClusterError in ``error`` (the connection is still in sync)."""

    def __init__(self, error: ClusterError):
        super().__init__(str(error))
        self.error = error
