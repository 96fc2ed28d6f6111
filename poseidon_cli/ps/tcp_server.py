"""The TCP bulk data plane of one shard: Push and Pull payloads on plain sockets (framing: tcp_wire).

A :class:`TcpDataServer` listens beside the gRPC :class:`~poseidon_cli.ps.server.ShardServer` of the
same :class:`~poseidon_cli.ps.store.ShardStore`, on the same host and its own port (``data_port``, 0 =
any free one). The shard announces that port over gRPC (``/poseidon.ps.DataPlane/Endpoint``, see
:func:`endpoint_handler`), so a hosts file only ever names the gRPC port.

One thread per connection. Each request calls exactly the ``ShardStore.push`` / ``set_value`` /
``pull`` the gRPC servicer calls, so exactly-once, SSP and deadline rules are the store's, unchanged.
Errors: a ClusterError inside the store comes back as an ERROR frame carrying its one-line message
and its ``lost_workers`` / ``shard`` fields; KeyError / ValueError (malformed request) as an ERROR frame of code INVALID. A connection that breaks
in the middle of a request means the worker is gone: the store is told (``worker_lost``; ignored for a
worker that already left cleanly). A close at a frame boundary is a normal disconnect.

Every blocking socket operation has a timeout: idle connections poll the stop flag every
``_IDLE_POLL_S`` and are closed after ``idle_timeout_s`` without a request (clients drop pooled
connections sooner, ``tcp_transport.IDLE_REUSE_S``); a request in progress must complete within
the store's ``deadline_s``.

Before a connection is served it passes TLS and the job-secret handshake (``auth.Security``,
within ``auth.HANDSHAKE_TIMEOUT_S``). Every header is checked before anything is allocated: the
job id's length, the worker (registered here), the item count and each item's key and byte count against the
registered layout. A header that fails is answered with an INVALID error and the connection is
closed (its body cannot be trusted to resynchronise). At most ``max_connections`` are open at once.
"""
from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np

from .._proto import ps_pb2
from ..errors import ClusterError
from . import tcp_wire as W
from .auth import NO_SECURITY, RejectionLog, Security
from .store import ShardStore

_IDLE_POLL_S = 0.5
#: seconds an authenticated connection may sit without a request before the shard closes it
IDLE_TIMEOUT_S = 300.0
#: longest job id a header may announce (ours are ~21 bytes)
MAX_JOB_ID_BYTES = 256
#: most items a request may carry before any worker registered (then: 4x this shard's chunks)
MAX_ITEMS_UNREGISTERED = 1024
#: bytes of the buffer a refused item's payload is read into and dropped, piece by piece
_DRAIN_BYTES = 1 << 20
MAX_CONNECTIONS = 1024
# A connection keeps at most this many bytes of pull staging buffers between requests (avoids page
# faults of fresh 1 MiB allocations per chunk, without pinning a whole shard per connection).
_POOL_BYTES = 64 << 20
_KINDS = (ps_pb2.GRADIENT, ps_pb2.ZERO_GRADIENT, ps_pb2.VALUE)


class TcpDataServer:
    """Serve ``store``'s Push / Pull payloads on ``host:port`` (port 0: a free one; see ``.port``)."""

    def __init__(self, store: ShardStore, host: str = "127.0.0.1", port: int = 0,
                 security: Security = NO_SECURITY, rejections: RejectionLog | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS):
        self.store = store
        self.host = host
        self.security = security
        self.rejections = rejections or RejectionLog(f"shard {store.shard_id}")
        self.idle_timeout_s, self.max_connections = idle_timeout_s, max_connections
        try:
            self._listener = socket.create_server((host, port), backlog=128)
        except OSError as e:
            raise ClusterError(f"shard {store.shard_id}: cannot listen for data on {host}:{port} ({e})",
                               "is the port in use?", shard=store.shard_id) from None
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _name(self) -> str:
        return f"shard {self.store.shard_id}"

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> int:
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"shard{self.store.shard_id}-data-accept")
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop accepting and drop every connection (their threads then end)."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept at once (Linux)
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(2 * _IDLE_POLL_S + 1)
        self._listener.close()

    def _accept_loop(self) -> None:
        self._listener.settimeout(_IDLE_POLL_S)
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                time.sleep(0.05)  # e.g. EMFILE: do not spin
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                full = len(self._conns) >= self.max_connections
                if not full:
                    self._conns.add(conn)
            if full:
                self.rejections.note(f"{peer[0]}:{peer[1]}", f"a data connection beyond "
                                     f"{self.max_connections} open ones")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                             name=f"shard{self.store.shard_id}-data-{peer[1]}").start()

    # ---------------------------------------------------------------- one connection
    def _serve(self, conn: socket.socket, peer) -> None:
        raw_conn, who = conn, f"{peer[0]}:{peer[1]}"
        hdr = np.empty(W.REQUEST.size, np.uint8)
        hmv = memoryview(hdr)
        state = {"buf": np.empty(0, np.uint8), "pool": [], "grads": {}}
        worker = None
        try:
            secured = self.security.tcp_server_side(conn, self.rejections, who)
            if secured is None:
                return   # refused (and closed) by the handshake
            conn = secured
            idle_since = time.monotonic()
            while not self._stop.is_set():
                # Idle: wait for the first byte of the next request, noticing stop() in between.
                try:
                    conn.settimeout(_IDLE_POLL_S)
                    k = conn.recv_into(hmv, W.REQUEST.size)
                except socket.timeout:
                    if time.monotonic() - idle_since > self.idle_timeout_s:
                        return   # idle too long: free the thread (the client reconnects)
                    continue
                if k == 0:
                    return  # closed at a frame boundary: a normal disconnect
                t_end = time.monotonic() + self.store.deadline_s
                W.recv_exact(conn, hmv[k:], t_end)
                magic, op, job_len, worker, version, clock, min_clock, deadline_s, count = W.REQUEST.unpack(hdr)
                if magic != W.MAGIC or op not in (W.OP_PUSH, W.OP_PULL):
                    worker = None
                    return  # not our protocol: drop the connection (it cannot be resynchronised)
                bad = self._bounds(job_len, count)
                if bad is not None:
                    self._send_error(conn, bad, t_end)
                    worker = None
                    return
                job = bytearray(job_len)
                W.recv_exact(conn, memoryview(job), t_end)
                err = self._check(job.decode("utf-8", "replace"), worker, version)
                if op == W.OP_PUSH:
                    if not self._push(conn, state, worker, clock, count, t_end, err):
                        return
                else:
                    self._pull(conn, state, worker, clock, min_clock, deadline_s, count, t_end, err)
                idle_since = time.monotonic()
        except W.PeerClosed as e:
            # only a worker registered here can be lost (a stranger's header names anyone)
            if not e.clean and worker is not None and self.store.is_registered(worker):
                self.store.worker_lost(worker, f"its data connection from {peer[0]}:{peer[1]} broke "
                                               "mid-request: process died or network failed")
        except (socket.timeout, OSError):
            # A stalled or reset peer: the gRPC heartbeat decides whether the worker is gone.
            pass
        finally:
            with self._lock:
                self._conns.discard(raw_conn)
            conn.close()
            if conn is not raw_conn:
                raw_conn.close()

    def _bounds(self, job_len, count):
        """The header's lengths against sane limits and the registered layout, before anything
        is allocated or read: an INVALID error reply (the connection is then closed), or None."""
        store = self.store
        chunks = len(store.layout.by_shard[store.shard_id]) if store.layout is not None else 0
        limit = max(4 * chunks, MAX_ITEMS_UNREGISTERED)
        if job_len > MAX_JOB_ID_BYTES:
            why = f"a job id of {job_len} bytes (at most {MAX_JOB_ID_BYTES})"
        elif count > limit:
            why = f"{count} items (at most {limit} on this shard)"
        else:
            return None
        return (W.E_INVALID, f"{self._name()}: refused a data request: {why}", (), store.shard_id)

    def _check(self, job_id: str, worker: int, version: int):
        """The gRPC servicer's header checks; returns an error reply or None."""
        if job_id != self.store.job_id:
            return self._cluster(ClusterError(f"{self._name()} serves job {self.store.job_id!r}; worker "
                                              f"{worker} sent a message for job {job_id!r}",
                                              shard=self.store.shard_id))
        if version != self.store.protocol_version:
            return self._cluster(ClusterError(f"{self._name()}: worker {worker} speaks protocol version "
                                              f"{version}, this shard speaks {self.store.protocol_version}",
                                              shard=self.store.shard_id))
        return None

    @staticmethod
    def _cluster(e: ClusterError):
        """An error reply for a ClusterError: (code, message, lost workers, shard)."""
        return (W.E_CLUSTER, e.one_line(), e.lost_workers, e.shard)

    def _invalid(self, e: Exception):
        return (W.E_INVALID, f"{self._name()}: {e}", (), self.store.shard_id)

    def _send_error(self, conn, err, t_end) -> None:
        W.sendmsg_all(conn, W.error_frame(*err), t_end)

    @staticmethod
    def _drain(conn, state, nbytes, t_end) -> None:
        if state["buf"].size < min(nbytes, _DRAIN_BYTES):
            state["buf"] = np.empty(min(nbytes, _DRAIN_BYTES), np.uint8)
        mv = memoryview(state["buf"])
        while nbytes > 0:
            k = min(nbytes, len(mv))
            W.recv_exact(conn, mv[:k], t_end)
            nbytes -= k

    def _push(self, conn, state, worker, clock, count, t_end, err) -> bool:
        """Read and apply one push and answer it; False when the connection must be closed."""
        item = np.empty(W.ITEM.size, np.uint8)
        imv = memoryview(item)
        accepted = dups = 0
        store = self.store
        grads = state["grads"]
        for _ in range(count):
            W.recv_exact(conn, imv, t_end)
            key, kind, nbytes = W.ITEM.unpack(item)
            try:
                want = store.chunk_nbytes(key)
            except ClusterError as e:
                want, err = None, err or self._cluster(e)
            if err is None and (want is None or kind not in _KINDS or
                                nbytes != (0 if kind == ps_pb2.ZERO_GRADIENT else want)):
                why = (f"chunk key {key} is not on this shard" if want is None else
                       f"item kind {kind}" if kind not in _KINDS else
                       f"chunk {key} announced {nbytes} bytes; it holds {want}")
                err = self._invalid(ValueError(f"refused a push of worker {worker}: {why}"))
            if err is not None:
                if nbytes > max(want or 0, store.chunk_bytes or 0, _DRAIN_BYTES):
                    # more than any chunk holds: answer and close rather than read it
                    self._send_error(conn, err, t_end)
                    return False
                # drain the rest of the request, piece by piece, so the connection stays in sync
                self._drain(conn, state, nbytes, t_end)
                continue
            owned = None
            if kind == ps_pb2.GRADIENT and nbytes:
                # Receive into a buffer the store may keep as the clock's sum (no copy on the shard).
                free = grads.get(nbytes)
                owned = free.pop() if free else np.empty(nbytes, np.uint8)
                W.recv_exact(conn, memoryview(owned), t_end)
            else:
                if nbytes > state["buf"].size:
                    state["buf"] = np.empty(nbytes, np.uint8)
                # A memoryview, not an ndarray: the store reinterprets bytes in the chunk's dtype.
                view = memoryview(state["buf"][:nbytes])
                if nbytes:
                    W.recv_exact(conn, view, t_end)
            try:
                if owned is not None:
                    ok, back = store.push_owned(worker, clock, key, owned)
                    if back is not None and len(grads.setdefault(nbytes, [])) < 4:
                        grads[nbytes].append(back)
                elif kind == ps_pb2.VALUE:
                    store.set_value(key, view)
                    ok = True
                else:
                    ok = store.push(worker, clock, key, None if kind == ps_pb2.ZERO_GRADIENT else view)
            except ClusterError as e:
                err = self._cluster(e)
                continue
            except (KeyError, ValueError) as e:
                err = self._invalid(e)
                continue
            accepted += ok
            dups += not ok
        if err is not None:
            self._send_error(conn, err, t_end)
        else:
            W.sendmsg_all(conn, [W.REPLY.pack(W.R_OK, accepted, dups, 0)], t_end)
        return True

    def _pull(self, conn, state, worker, clock, min_clock, deadline_s, count, t_end, err) -> None:
        raw = np.empty(count, np.int64)
        if count:
            W.recv_exact(conn, memoryview(raw).cast("B"), t_end)
        if err is not None:
            self._send_error(conn, err, t_end)
            return
        # The worker allows deadline_s plus a grace period: answer (naming the laggards) within
        # deadline_s so our explanation arrives before its own timeout fires.
        wait = min(deadline_s, self.store.deadline_s) if deadline_s > 0 else self.store.deadline_s
        pool: list = state["pool"]
        store = self.store

        def no_copy(ck, applied, value):
            # Under the store's lock: remember the version; the values are read after the lock is
            # released, straight from the store (no copy), and checked afterwards.
            return ck.key, applied, value, store.version_locked(ck.key)

        def copy(ck, applied, value):
            # Under the store's lock: a consistent copy, in a staging buffer reused across requests.
            n = value.nbytes
            buf = None
            for i in range(len(pool) - 1, -1, -1):
                if pool[i].size >= n:
                    buf = pool.pop(i)
                    break
            if buf is None:
                buf = np.empty(n, np.uint8)
            buf[:n] = value.view(np.uint8)
            return applied, buf, n

        commit: list = []  # the COMMIT of the previous chunk travels with the next frame
        sent_end = time.monotonic() + wait + store.deadline_s
        try:
            for key, applied, value, version in store.pull(worker, clock, raw.tolist(), min_clock, wait,
                                                            render=no_copy):
                mv = memoryview(value).cast("B")
                W.sendmsg_all(conn, commit + [W.REPLY.pack(W.R_CHUNK, key, applied, len(mv)), mv], sent_end)
                if not store.unchanged_since(key, version):
                    # An update wrote the chunk while the kernel read it: send a copy taken under the lock.
                    applied, buf, n = store.render_now(key, copy)
                    W.sendmsg_all(conn, [W.REPLY.pack(W.R_CHUNK, key, applied, n), memoryview(buf[:n])],
                                  sent_end)
                    if sum(b.size for b in pool) + buf.size <= _POOL_BYTES:
                        pool.append(buf)
                commit = [W.REPLY.pack(W.R_COMMIT, key, 0, 0)]
        except ClusterError as e:
            self._send_error(conn, self._cluster(e), time.monotonic() + store.deadline_s)
            return
        except (KeyError, ValueError) as e:
            self._send_error(conn, self._invalid(e), time.monotonic() + store.deadline_s)
            return
        W.sendmsg_all(conn, commit + [W.REPLY.pack(W.R_END, 0, 0, 0)], sent_end)


def endpoint_handler(data_server: TcpDataServer | None) -> grpc.GenericRpcHandler:
    """gRPC handler announcing the data port: ``/poseidon.ps.DataPlane/Endpoint`` answers the ASCII
    port number (raw bytes), or empty bytes when the shard serves no TCP data plane."""
    reply = str(data_server.port).encode() if data_server is not None else b""

    def endpoint(request, context):
        return reply

    return grpc.method_handlers_generic_handler("poseidon.ps.DataPlane", {
        "Endpoint": grpc.unary_unary_rpc_method_handler(endpoint)})
