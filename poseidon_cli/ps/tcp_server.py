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
``_IDLE_POLL_S``; a request in progress must complete within the store's ``deadline_s``.
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
from .protocol import ENDPOINT_METHOD
from .store import ShardStore
_IDLE_POLL_S = 0.5
# A connection keeps at most this many bytes of pull staging buffers between requests (avoids page
# faults of fresh 1 MiB allocations per chunk, without pinning a whole shard per connection).
_POOL_BYTES = 64 << 20


class TcpDataServer:
    """Serve ``store``'s Push / Pull payloads on ``host:port`` (port 0: a free one; see ``.port``)."""

    def __init__(self, store: ShardStore, host: str = "127.0.0.1", port: int = 0):
        self.store = store
        self.host = host
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
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, peer), daemon=True,
                             name=f"shard{self.store.shard_id}-data-{peer[1]}").start()

    # ---------------------------------------------------------------- one connection
    def _serve(self, conn: socket.socket, peer) -> None:
        hdr = np.empty(W.REQUEST.size, np.uint8)
        hmv = memoryview(hdr)
        state = {"buf": np.empty(0, np.uint8), "pool": [], "grads": {}}
        worker = None
        try:
            while not self._stop.is_set():
                # Idle: wait for the first byte of the next request, noticing stop() in between.
                try:
                    conn.settimeout(_IDLE_POLL_S)
                    k = conn.recv_into(hmv, W.REQUEST.size)
                except socket.timeout:
                    continue
                if k == 0:
                    return  # closed at a frame boundary: a normal disconnect
                t_end = time.monotonic() + self.store.deadline_s
                W.recv_exact(conn, hmv[k:], t_end)
                magic, op, job_len, worker, version, clock, min_clock, deadline_s, count = W.REQUEST.unpack(hdr)
                if magic != W.MAGIC:
                    return  # not our protocol: drop the connection (it cannot be resynchronised)
                job = bytearray(job_len)
                W.recv_exact(conn, memoryview(job), t_end)
                err = self._check(job.decode("utf-8", "replace"), worker, version)
                if op == W.OP_PUSH:
                    self._push(conn, state, worker, clock, count, t_end, err)
                elif op == W.OP_PULL:
                    self._pull(conn, state, worker, clock, min_clock, deadline_s, count, t_end, err)
                else:
                    return
        except W.PeerClosed as e:
            if not e.clean and worker is not None:
                self.store.worker_lost(worker, f"its data connection from {peer[0]}:{peer[1]} broke "
                                               "mid-request: process died or network failed")
        except (socket.timeout, OSError):
            # A stalled or reset peer: the gRPC heartbeat decides whether the worker is gone.
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

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

    def _push(self, conn, state, worker, clock, count, t_end, err) -> None:
        item = np.empty(W.ITEM.size, np.uint8)
        imv = memoryview(item)
        accepted = dups = 0
        store = self.store
        grads = state["grads"]
        for _ in range(count):
            W.recv_exact(conn, imv, t_end)
            key, kind, nbytes = W.ITEM.unpack(item)
            owned = None
            if kind == ps_pb2.GRADIENT and err is None and nbytes:
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
            if err is not None:
                continue  # drain the rest of the request so the connection stays in sync
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
