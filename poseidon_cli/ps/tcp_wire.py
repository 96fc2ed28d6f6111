"""Framing of the TCP bulk data plane (Push and Pull payloads), shared by tcp_server and tcp_transport.

gRPC Python tops out well below what a plain socket moves on one host (ps/README.md, "Data planes"),
so the tensor-carrying calls can travel as fixed little-endian ``struct`` headers followed by raw
element bytes on persistent TCP connections; everything else stays on gRPC.

One connection carries one request at a time, and every request is answered before the next:

    request   REQUEST (52 B) + job id (utf-8, ``job_len`` bytes) + body
      PUSH    body = count x (ITEM (24 B) + nbytes of payload)       kind GRADIENT / ZERO_GRADIENT / VALUE
      PULL    body = count x int64 key
    reply     REPLY (32 B) frames
      PUSH    one OK(a=accepted, b=duplicates)  or one ERROR
      PULL    per chunk: CHUNK(a=key, b=applied clock, n=nbytes) + payload, once or more, then
              COMMIT(a=key): the last CHUNK of that key before its COMMIT is the one that counts;
              after all chunks END; ERROR at any point
      ERROR   a=code (CLUSTER: the shard's one-line ClusterError; INVALID: malformed request),
              b=the ClusterError's ``shard`` (-1: none), then n bytes: u32 count + count x i32
              ``lost_workers`` + the utf-8 message (``error_frame`` / ``parse_error``)

The shard sends a chunk's values straight from its store without holding the store's lock, then
checks that no update wrote them meanwhile; if one did, it sends the chunk again from a copy taken
under the lock. COMMIT tells the receiver which of the copies it got is final.

A connection whose peer vanishes mid-frame is out of sync and is closed; a reply frame means the
connection is in sync again (an ERROR after a PUSH comes only after the whole body was read).
"""
from __future__ import annotations

import socket
import struct
import time

MAGIC = b"PSD1"
OP_PUSH, OP_PULL = 1, 2
# magic, op, 3 pad, job_len (u32), worker (i32), protocol version (u32), clock (i64), min_clock (i64),
# deadline_s (f64: how long a pull may wait on the shard), count (u32), 4 pad
REQUEST = struct.Struct("<4sB3xIiIqqdI4x")
ITEM = struct.Struct("<qB7xQ")        # key, kind, nbytes
REPLY = struct.Struct("<B7xqqQ")      # type, a, b, nbytes
R_OK, R_CHUNK, R_END, R_ERROR, R_COMMIT = 1, 2, 3, 4, 5
E_CLUSTER, E_INVALID = 1, 2
assert REQUEST.size == 52 and ITEM.size == 24 and REPLY.size == 32
_COUNT = struct.Struct("<I")

# At most this many buffers per sendmsg (Linux IOV_MAX is 1024).
_MAX_IOV = 256


def error_frame(code: int, message: str, lost_workers=(), shard: int | None = None) -> list[bytes]:
    """The buffers of one ERROR reply (see the module docstring)."""
    lost = [int(w) for w in lost_workers]
    body = _COUNT.pack(len(lost)) + struct.pack(f"<{len(lost)}i", *lost) + message.encode("utf-8")
    return [REPLY.pack(R_ERROR, code, -1 if shard is None else int(shard), len(body)), body]


def parse_error(b: int, body: bytes) -> tuple[str, tuple, int | None]:
    """``(message, lost_workers, shard)`` of an ERROR reply whose REPLY ``b`` and body were read."""
    (count,) = _COUNT.unpack_from(body, 0)
    lost = struct.unpack_from(f"<{count}i", body, _COUNT.size)
    message = bytes(body[_COUNT.size + 4 * count:]).decode("utf-8", "replace")
    return message, lost, None if b < 0 else b


class PeerClosed(ConnectionError):
    """The peer closed the connection (``clean``: exactly at a frame boundary)."""

    def __init__(self, clean: bool):
        super().__init__("connection closed by peer" + ("" if clean else " in the middle of a frame"))
        self.clean = clean


def _settimeout(sock: socket.socket, t_end: float) -> None:
    left = t_end - time.monotonic()
    if left <= 0:
        raise socket.timeout("deadline passed")
    sock.settimeout(left)


def recv_exact(sock: socket.socket, mv: memoryview, t_end: float, at_boundary: bool = False) -> None:
    """Fill ``mv`` (a writable byte view) from ``sock`` before ``t_end`` (time.monotonic).
    Raises socket.timeout, PeerClosed (clean only if ``at_boundary`` and nothing was read) or OSError."""
    got, n = 0, len(mv)
    while got < n:
        _settimeout(sock, t_end)
        k = sock.recv_into(mv[got:], n - got)
        if k == 0:
            raise PeerClosed(clean=at_boundary and got == 0)
        got += k


def sendmsg_all(sock: socket.socket, bufs: list, t_end: float) -> None:
    """Send every buffer of ``bufs`` (bytes-like, byte-addressed) in order with as few syscalls as
    possible and no concatenation; handles partial sends. Raises socket.timeout or OSError."""
    views = [memoryview(b) for b in bufs if len(b)]
    if not hasattr(sock, "sendmsg") or _is_tls(sock):
        # TLS sockets have no sendmsg: small buffers are joined, large ones written in place
        for v in _coalesce(views):
            _settimeout(sock, t_end)
            sock.sendall(v)
        return
    i = 0
    while i < len(views):
        _settimeout(sock, t_end)
        sent = sock.sendmsg(views[i:i + _MAX_IOV])
        while sent:
            n = len(views[i])
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0


def _is_tls(sock) -> bool:
    import ssl
    return isinstance(sock, ssl.SSLSocket)


def _coalesce(views, small: int = 64 << 10):
    pending: list = []
    for v in views:
        if len(v) < small:
            pending.append(v)
            continue
        if pending:
            yield b"".join(pending)
            pending = []
        yield v
    if pending:
        yield b"".join(pending)


def byte_view(payload) -> memoryview:
    """A flat, byte-addressed view of ``payload`` (ndarray, bytes, memoryview), no copy when contiguous."""
    mv = memoryview(payload)
    if mv.ndim != 1 or mv.format != "B" or not mv.c_contiguous:
        if not mv.c_contiguous:
            import numpy as np
            mv = memoryview(np.ascontiguousarray(payload))
        mv = mv.cast("B")
    return mv
