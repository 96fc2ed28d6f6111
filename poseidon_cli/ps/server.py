"""gRPC servicer of one shard: translates ``poseidon.ps.ParameterServer`` messages to a ShardStore.

The service is registered through a generic handler rather than ``ps_pb2_grpc``'s base class so the
two tensor-carrying methods (Push, Pull) can skip protobuf for the payload: their messages are framed
and parsed by ``codec`` (wire-identical to ``ps_pb2.Chunk``, one copy instead of three).
Errors: ClusterError -> FAILED_PRECONDITION with its one-line message and its fields in the
trailing metadata (``protocol.error_metadata``); KeyError / ValueError (malformed request) ->
INVALID_ARGUMENT.

Run a shard as its own process::

    python -m poseidon_cli.ps.server --job-id J --shard-id 0 --num-shards 2 --port 0 \
        --port-file /tmp/shard0.port --updater sgd:base_lr=0.01 [--secret-file F] [--tls-cert ...]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import grpc

from .._proto import ps_pb2
from ..errors import ClusterError
from . import codec
from .auth import NO_SECURITY, RejectionLog, Security, TlsFiles, load_secret
from .protocol import CHANNEL_OPTIONS, DATA_PLANES, DEFAULT_DATA_PLANE, ROLE_FROM_WIRE, SERVICE, error_metadata
from .store import ShardStore
from .updaters import make_updater


def _guard(fn):
    """Map store errors to gRPC status codes carrying the one-line message."""
    def wrapped(self, request, context):
        try:
            return fn(self, request, context)
        except ClusterError as e:
            context.set_trailing_metadata(error_metadata(e))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, e.one_line())
        except (KeyError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"shard {self.store.shard_id}: {e}")
    return wrapped


def _guard_stream(fn):
    """``_guard`` for response-streaming methods (errors surface while iterating)."""
    def wrapped(self, request, context):
        try:
            yield from fn(self, request, context)
        except ClusterError as e:
            context.set_trailing_metadata(error_metadata(e))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, e.one_line())
        except (KeyError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"shard {self.store.shard_id}: {e}")
    return wrapped


class ShardServicer:
    """The ParameterServer methods for ``store``; ``on_stop`` is called by Shutdown(stop_server)."""

    def __init__(self, store: ShardStore, on_stop=None):
        self.store = store
        self.on_stop = on_stop
        self._hdr_cache: dict[int, bytes] = {}
        self._hb_live: set[int] = set()     # workers whose heartbeat stream is open
        self._hb_lock = threading.Lock()

    def _header(self, clock: int = 0) -> ps_pb2.Header:
        return ps_pb2.Header(job_id=self.store.job_id, worker_id=-1, clock=clock,
                             protocol_version=self.store.protocol_version)

    def _check_job(self, header) -> None:
        if header.job_id != self.store.job_id:
            raise ClusterError(f"shard {self.store.shard_id} serves job {self.store.job_id!r}; "
                               f"worker {header.worker_id} sent a message for job {header.job_id!r}",
                               shard=self.store.shard_id)

    @_guard
    def Register(self, req, context):
        h = req.header
        specs = [(p.name, tuple(p.shape), p.dtype, ROLE_FROM_WIRE[p.role]) for p in req.params]
        n = self.store.register(h.worker_id, h.job_id, h.protocol_version, req.num_workers,
                                req.staleness, req.num_shards, req.chunk_bytes, specs, req.job_config)
        return ps_pb2.RegisterReply(header=self._header(), shard_id=self.store.shard_id, num_owned_chunks=n)

    @_guard
    def Push(self, request_iterator, context):
        accepted = dups = 0
        for raw in request_iterator:
            ch = codec.decode_chunk(raw)
            h = ch.header
            self._check_job(h)
            if ch.kind == ps_pb2.VALUE:
                self.store.set_value(ch.key, ch.data)
                ok = True
            else:
                ok = self.store.push(h.worker_id, h.clock, ch.key,
                                     None if ch.kind == ps_pb2.ZERO_GRADIENT else ch.data)
            accepted += ok
            dups += not ok
        return ps_pb2.PushReply(header=self._header(), accepted=accepted, duplicates=dups)

    def _render(self, ck, applied, value):
        hdr = self._hdr_cache.get(applied)
        if hdr is None:
            hdr = codec.encode_header(self.store.job_id, -1, applied, self.store.protocol_version)
            self._hdr_cache = {applied: hdr}  # clocks only grow: keep one
        return codec.encode_chunk(hdr, ck.key, ps_pb2.VALUE, value)

    @_guard_stream
    def Pull(self, req, context):
        h = req.header
        self._check_job(h)
        remaining = context.time_remaining()
        # Answer (with the names of the laggards) a little before the caller's own deadline fires.
        deadline = None if remaining is None else max(0.05, remaining - 0.25)
        if deadline is not None and self.store.deadline_s is not None:
            deadline = min(deadline, self.store.deadline_s)
        yield from self.store.pull(h.worker_id, h.clock, list(req.keys), req.min_clock, deadline,
                                   render=self._render)

    @_guard
    def Clock(self, req, context):
        self._check_job(req.header)
        m = self.store.clock(req.header.worker_id, req.header.clock)
        return ps_pb2.ClockReply(header=self._header(m), min_worker_clock=m)

    @_guard
    def Barrier(self, req, context):
        self._check_job(req.header)
        remaining = context.time_remaining()
        self.store.barrier(req.header.worker_id, req.barrier_id,
                           None if remaining is None else max(0.05, remaining - 0.25))
        return ps_pb2.Ack(header=self._header())

    @_guard_stream
    def GetSolverState(self, req, context):
        self._check_job(req.header)
        for key, slot, arr in self.store.get_solver_state(list(req.keys)):
            yield ps_pb2.SolverStateChunk(header=self._header(), key=key, slot=slot, dtype=arr.dtype.name,
                                          shape=list(arr.shape), data=arr.tobytes())

    @_guard
    def SetSolverState(self, request_iterator, context):
        for m in request_iterator:
            self._check_job(m.header)
            arr = codec.from_bytes(m.data, m.dtype).reshape(tuple(m.shape))
            self.store.set_solver_state(m.key, m.slot, arr)
        return ps_pb2.Ack(header=self._header())

    @_guard
    def Shutdown(self, req, context):
        self._check_job(req.header)
        if req.header.worker_id >= 0:
            self.store.leave(req.header.worker_id)
        if req.stop_server and self.on_stop:
            self.store.stop()
            threading.Thread(target=self.on_stop, daemon=True).start()
        return ps_pb2.Ack(header=self._header())

    def _health_reply(self):
        h = self.store.health()
        return ps_pb2.HealthReply(header=self._header(), shard_id=h["shard_id"], serving=h["serving"],
                                  worker_clocks=h["worker_clocks"], dead_workers=h["dead_workers"],
                                  error=h["error"])

    def Health(self, req, context):
        return self._health_reply()

    def Heartbeat(self, request_iterator, context):
        """Lives as long as the worker: the stream ending without a clean leave marks it lost.

        The first beat binds the stream to its worker (of this job, registered here); a second
        stream claiming a worker that has one is refused (ALREADY_EXISTS) and its end blames no
        one, nor does the end of a stream that never bound."""
        worker = None
        how = "its heartbeat stream closed"
        refused = None
        try:
            for req in request_iterator:
                w = req.header.worker_id
                if worker is None:
                    refused = self._bind_heartbeat(req.header)
                    if refused is not None:
                        break
                    worker = w
                elif w != worker:
                    refused = f"a heartbeat stream of worker {worker} spoke for worker {w}"
                    break
                self.store.heartbeat(worker)
        except Exception as e:  # noqa: BLE001 - any transport failure means the same thing here
            how = f"its connection broke ({type(e).__name__})"
        finally:
            if worker is not None:
                with self._hb_lock:
                    self._hb_live.discard(worker)
        if refused is not None:
            code = grpc.StatusCode.ALREADY_EXISTS if "already" in refused else grpc.StatusCode.FAILED_PRECONDITION
            if worker is not None:   # a bound stream that changed identity: its worker is gone
                self.store.worker_lost(worker, f"{refused}: process confused or impersonated")
            context.abort(code, f"shard {self.store.shard_id}: {refused}")
        if worker is not None:
            self.store.worker_lost(worker, f"{how}: process died or network failed")
        return self._health_reply()

    def _bind_heartbeat(self, header) -> str | None:
        """Bind a new heartbeat stream to ``header``'s worker; why not (None: bound)."""
        w = header.worker_id
        if header.job_id != self.store.job_id:
            return f"a heartbeat for another job claimed worker {w}"
        if not self.store.is_registered(w):
            return f"a heartbeat claimed worker {w}, which has not registered here"
        with self._hb_lock:
            if w in self._hb_live:
                return f"worker {w} already has a heartbeat stream; a second one was refused"
            self._hb_live.add(w)
        return None

    def handler(self) -> grpc.GenericRpcHandler:
        P = ps_pb2
        ident = None  # raw bytes in and out: codec frames them

        def uu(fn, req):
            return grpc.unary_unary_rpc_method_handler(fn, req.FromString, lambda m: m.SerializeToString())

        return grpc.method_handlers_generic_handler(SERVICE, {
            "Register": uu(self.Register, P.RegisterRequest),
            "Push": grpc.stream_unary_rpc_method_handler(self.Push, ident, P.PushReply.SerializeToString),
            "Pull": grpc.unary_stream_rpc_method_handler(self.Pull, P.PullRequest.FromString, ident),
            "Clock": uu(self.Clock, P.ClockRequest),
            "Barrier": uu(self.Barrier, P.BarrierRequest),
            "GetSolverState": grpc.unary_stream_rpc_method_handler(
                self.GetSolverState, P.SolverStateRequest.FromString, P.SolverStateChunk.SerializeToString),
            "SetSolverState": grpc.stream_unary_rpc_method_handler(
                self.SetSolverState, P.SolverStateChunk.FromString, P.Ack.SerializeToString),
            "Shutdown": uu(self.Shutdown, P.ShutdownRequest),
            "Health": uu(self.Health, P.HealthRequest),
            "Heartbeat": grpc.stream_unary_rpc_method_handler(
                self.Heartbeat, P.HealthRequest.FromString, P.HealthReply.SerializeToString),
        })


class ShardServer:
    """A gRPC server for one shard on ``host:port`` (port 0: pick a free one; ``start`` returns it).

    ``max_workers`` bounds concurrent RPCs: every worker holds a heartbeat stream and may park pulls,
    so it must exceed P * (1 + streams in flight). ``start_threads`` of them start at once
    (``pools.started_pool``), so that the thread count does not creep up at each new peak of calls.

    ``data_plane="tcp"`` also serves Push / Pull payloads on a plain TCP listener (tcp_server.py) on
    ``host:data_port`` (0: a free port, announced over gRPC; see ``.data_port``). Push / Pull over gRPC
    keep working either way, so workers may use either data plane."""

    def __init__(self, store: ShardStore, host: str = "127.0.0.1", port: int = 0, max_workers: int = 128,
                 data_plane: str = DEFAULT_DATA_PLANE, data_port: int = 0,
                 security: Security = NO_SECURITY, start_threads: int = 0):
        from . import tcp_server
        from .pools import started_pool

        if data_plane not in DATA_PLANES:
            raise ValueError(f"data_plane must be one of {DATA_PLANES}, got {data_plane!r}")

        self.store = store
        self.host = host
        # one log of refused peers for both planes of this shard
        self.rejections = RejectionLog(f"shard {store.shard_id}")
        # so_reuseport off: a second server on the same port must fail, not share it
        self._server = security.server(
            started_pool(max_workers, start_threads, thread_name_prefix=f"shard{store.shard_id}"),
            CHANNEL_OPTIONS + [("grpc.so_reuseport", 0)], self.rejections.name, self.rejections)
        self._stopped = threading.Event()
        self._servicer = ShardServicer(store, on_stop=self.stop)
        self._server.add_generic_rpc_handlers((self._servicer.handler(),))
        try:
            self.port = security.add_port(self._server, f"{host}:{port}")
        except RuntimeError as e:
            raise ClusterError(f"shard {store.shard_id}: cannot listen on {host}:{port} ({e})",
                               "is the port in use?", shard=store.shard_id) from None
        if not self.port:
            raise ClusterError(f"shard {store.shard_id}: cannot listen on {host}:{port}", "is the port in use?",
                               shard=store.shard_id)
        self.data_server = (tcp_server.TcpDataServer(store, host, data_port, security=security,
                                                     rejections=self.rejections)
                            if data_plane == "tcp" else None)
        self._server.add_generic_rpc_handlers((tcp_server.endpoint_handler(self.data_server),))

    @property
    def data_port(self) -> int | None:
        """Port of the TCP data plane (None when it is not served)."""
        return self.data_server.port if self.data_server is not None else None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def add_generic_handlers(self, handlers) -> None:
        """Serve further gRPC services on this server's port (e.g. SFB's FactorBroadcast);
        call before ``start``."""
        self._server.add_generic_rpc_handlers(tuple(handlers))

    def start(self) -> int:
        if self.data_server is not None:
            self.data_server.start()
        self._server.start()
        return self.port

    def stop(self, grace: float | None = 0.5) -> None:
        self.store.stop()
        if self.data_server is not None:
            self.data_server.stop()
        self._server.stop(grace).wait()
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poseidon_cli.ps.server", description="Run one PS shard.")
    ap.add_argument("--job-id", required=True)
    ap.add_argument("--shard-id", type=int, required=True)
    ap.add_argument("--num-shards", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the bound port here (atomically) once serving")
    ap.add_argument("--updater", default="sgd:base_lr=0.01",
                    help="TYPE:field=value,...: a Caffe solver type and SolverParameter fields "
                         "(ps.updaters.make_updater), e.g. sgd:base_lr=0.1,momentum=0.9")
    ap.add_argument("--deadline-s", type=float, default=60.0)
    ap.add_argument("--heartbeat-timeout-s", type=float, default=None)
    ap.add_argument("--data-plane", choices=DATA_PLANES, default=DEFAULT_DATA_PLANE,
                    help="tcp: also serve Push/Pull payloads on a plain TCP port (announced over gRPC)")
    ap.add_argument("--data-port", type=int, default=0)
    ap.add_argument("--secret-file", help="the job secret (else $POSEIDON_SECRET; neither: no "
                                          "authentication, for local benchmarks only)")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-ca")
    a = ap.parse_args(argv)
    try:
        updater = make_updater(a.updater)
        security = Security.for_job(load_secret(a.secret_file), a.job_id,
                                    TlsFiles.from_options(a.tls_cert, a.tls_key, a.tls_ca))
    except (ValueError, ClusterError) as e:
        print(f"poseidon: error: {e}", file=sys.stderr)
        return 2
    store = ShardStore(a.shard_id, a.num_shards, a.job_id, updater,
                       deadline_s=a.deadline_s, heartbeat_timeout_s=a.heartbeat_timeout_s)
    try:
        server = ShardServer(store, a.host, a.port, data_plane=a.data_plane, data_port=a.data_port,
                             security=security)
    except ClusterError as e:
        print(f"poseidon: error: {e.one_line()}", file=sys.stderr)
        return 2
    port = server.start()
    if a.port_file:
        tmp = a.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop, daemon=True).start())
    while not server.wait(0.5):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
