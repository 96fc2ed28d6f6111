"""How SFB frames travel between workers: the transports, the gRPC handler and a server of its own.

Wire (``proto/sfb.proto``, service ``poseidon.sfb.FactorBroadcast``): one ``Send`` stream per
(layer, clock, peer) carrying serialized ``FactorChunk`` messages, each at most ``chunk_bytes`` of
raw elements. A client's worker 0 serves it on the same gRPC server as the client's PS shard (the
hosts-file port, :func:`grpc_handler`); worker t >= 1 of a client serves it on a port of its own
(:func:`serve_factors`) that it registers in its client's worker-port directory
(``distributed/directory.py``). :class:`LocalFactorHub` delivers the same frames in-process, parsed
from their wire bytes, so in-process tests exercise the same chunking and reassembly.

A transport never interprets a frame: the exchange (``exchange.py``) makes and consumes them.
"""
from __future__ import annotations

import threading

from ..._proto import sfb_pb2
from ...errors import ClusterError

SERVICE = "poseidon.sfb.FactorBroadcast"
DEFAULT_CHUNK_BYTES = 1 << 20


class FactorTransport:
    """How a worker reaches its peers. ``send(peer, frames, deadline_s)`` delivers serialized
    ``FactorChunk`` messages (one stream) and returns when the peer has them; raises ClusterError
    naming the peer on failure. ``address(peer)`` names it in messages."""

    def send(self, peer: int, frames: list, deadline_s: float) -> None: raise NotImplementedError
    def address(self, peer: int) -> str: return f"worker {peer}"
    def close(self) -> None: pass


class LocalFactorHub:
    """In-process delivery between exchanges of one process (tests): ``register(worker_id,
    exchange)`` each, and give each exchange ``hub.transport()``. Frames are parsed from their
    wire bytes, so chunking and reassembly are the same as over gRPC."""

    def __init__(self):
        self.exchanges: dict[int, "FactorExchange"] = {}

    def register(self, worker_id: int, exchange: "FactorExchange") -> None:
        self.exchanges[worker_id] = exchange

    def transport(self) -> "LocalFactorTransport":
        return LocalFactorTransport(self)


class LocalFactorTransport(FactorTransport):
    def __init__(self, hub: LocalFactorHub):
        self.hub = hub

    def address(self, peer):
        return f"local worker {peer}"

    def send(self, peer, frames, deadline_s):
        ex = self.hub.exchanges.get(peer)
        if ex is None:
            raise ClusterError(f"no local worker {peer} to send sufficient factors to")
        for f in frames:
            ex.receive(sfb_pb2.FactorChunk.FromString(f))


class GrpcFactorTransport(FactorTransport):
    """``addresses``: peer id -> "host:port", or a callable ``f(deadline_s) -> "host:port"``
    resolved on the first send to that peer (a worker t >= 1 of a client, whose port its
    client's worker 0 knows: ``directory.WorkerDirectory``). A client's worker 0 serves SFB on its
    hosts-file address, beside its PS shard. One channel per peer, opened on first use."""

    def __init__(self, addresses: dict, security=None):
        from ...ps.auth import NO_SECURITY

        self.addresses = dict(addresses)
        self.security = security or NO_SECURITY
        self._channels = {}
        self._lock = threading.Lock()

    def address(self, peer):
        a = self.addresses.get(peer, "?")
        return f"worker {peer} at {a if isinstance(a, str) else 'an address not resolved yet'}"

    def _stub(self, peer, deadline_s):
        import grpc
        from ...ps.protocol import CHANNEL_OPTIONS

        a = self.addresses[peer]
        if not isinstance(a, str):   # resolved once; sends to one peer are sequential per layer
            a = a(deadline_s)
            with self._lock:
                self.addresses[peer] = a
        with self._lock:
            ch = self._channels.get(peer)
            if ch is None:
                ch = self._channels[peer] = self.security.channel(a, CHANNEL_OPTIONS)
        return ch.stream_unary(f"/{SERVICE}/Send", request_serializer=None,
                               response_deserializer=sfb_pb2.SendReply.FromString)

    def send(self, peer, frames, deadline_s):
        import grpc

        try:
            self._stub(peer, deadline_s)(iter(frames), timeout=deadline_s)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code == grpc.StatusCode.FAILED_PRECONDITION:
                raise ClusterError(e.details()) from None
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise ClusterError(f"{self.address(peer)} refused our credentials for sufficient "
                                   "factors", "every client needs the same job secret") from None
            raise ClusterError(f"sending sufficient factors to {self.address(peer)} failed: {code} "
                               f"({e.details() if hasattr(e, 'details') else e})",
                               "the peer's host may have died") from None

    def close(self):
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()


def grpc_handler(exchange: "FactorExchange"):
    """A generic gRPC handler serving ``FactorBroadcast`` into ``exchange`` (add it to the shard's
    server with ``ShardServer.add_generic_handlers``). ClusterError -> FAILED_PRECONDITION."""
    import grpc

    def send(request_iterator, context):
        n = 0
        try:
            for msg in request_iterator:
                exchange.receive(msg)
                n += 1
        except ClusterError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, e.one_line())
        except (KeyError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"worker {exchange.worker_id}: {e}")
        return sfb_pb2.SendReply(chunks=n)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Send": grpc.stream_unary_rpc_method_handler(
            send, request_deserializer=sfb_pb2.FactorChunk.FromString,
            response_serializer=sfb_pb2.SendReply.SerializeToString)})


def serve_factors(exchange, host, max_workers=16, security=None):
    """A gRPC server of its own for ``exchange`` on ``host`` and a free port, checking callers
    with ``security`` (``ps.auth.Security``); returns ``(server, port)``, started (worker t >= 1
    of a client, which serves no PS shard)."""
    from concurrent.futures import ThreadPoolExecutor

    from ...ps.auth import NO_SECURITY
    from ...ps.protocol import CHANNEL_OPTIONS

    security = security or NO_SECURITY
    pool = ThreadPoolExecutor(max_workers, thread_name_prefix=f"sfb-w{exchange.worker_id}")
    server = security.server(pool, CHANNEL_OPTIONS, f"worker {exchange.worker_id}'s factor server")
    server.add_generic_rpc_handlers((grpc_handler(exchange),))
    port = security.add_port(server, f"{host}:0")
    if not port:
        raise ClusterError(f"worker {exchange.worker_id}: cannot listen for sufficient factors "
                           f"on {host}")
    server.start()
    return server, port
