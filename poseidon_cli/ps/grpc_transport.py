"""``ShardTransport`` over gRPC: one worker's connection to one shard.

Push and Pull carry raw ``Chunk`` frames (codec.py) on streams; everything else uses the generated
messages. Every call has a gRPC deadline; failures become ClusterError naming the shard and address
(UNAVAILABLE: unreachable; DEADLINE_EXCEEDED: no answer in time; FAILED_PRECONDITION: the shard's own
one-line message, e.g. the workers a pull waited for, with its ``lost_workers`` / ``shard`` fields
read from the call's trailing metadata, see ``protocol.error_metadata``).
"""
from __future__ import annotations

import itertools
import threading

import grpc
import numpy as np

from .._proto import ps_pb2
from ..errors import ClusterError
from . import codec
from .auth import NO_SECURITY, Security
from .keys import PARAM
from .protocol import CHANNEL_OPTIONS, PROTOCOL_VERSION, ROLE_TO_WIRE, SERVICE, error_from_status
from .transport import ShardTransport

# Time the shard gets on top of a wait's own deadline, so its explanation (which workers it waited
# for) arrives before our gRPC deadline fires.
_GRACE_S = 1.0


class GrpcTransport(ShardTransport):
    """Connection to the shard ``shard_id`` at ``address`` ("host:port").

    ``channels``: number of TCP connections (streams are spread over them round-robin); several
    let the kernel and gRPC's I/O threads work on different tensors in parallel."""

    def __init__(self, address: str, shard_id: int, job_id: str, channels: int = 1,
                 protocol_version: int = PROTOCOL_VERSION, security: Security = NO_SECURITY):
        self.address, self.shard_id, self.job_id = address, shard_id, job_id
        self.security = security
        self.protocol_version = protocol_version
        # A private subchannel pool per channel: otherwise gRPC would share one TCP connection.
        # Reconnect backoff capped at 1 s (gRPC's default grows to 2 min): peers start in any order
        # and a worker must notice a shard coming up within its start-up deadline.
        self._channels = [security.channel(address, CHANNEL_OPTIONS + [
            ("grpc.use_local_subchannel_pool", 1), ("poseidon.channel", i),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]) for i in range(max(1, channels))]
        self._rr = itertools.cycle(range(len(self._channels)))
        self._hb_stop = threading.Event()
        self._hb_future = None

    def _name(self) -> str:
        return f"shard {self.shard_id} at {self.address}"

    def _ch(self):
        return self._channels[next(self._rr)]

    def _method(self, kind: str, name: str, ser=None, de=None, channel=None):
        ch = channel or self._ch()
        return getattr(ch, kind)(f"/{SERVICE}/{name}", request_serializer=ser, response_deserializer=de)

    def _hdr(self, worker_id: int, clock: int = 0) -> ps_pb2.Header:
        return ps_pb2.Header(job_id=self.job_id, worker_id=worker_id, clock=clock,
                             protocol_version=self.protocol_version)

    def _error(self, e: grpc.RpcError, what: str, timeout) -> ClusterError:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return error_from_status(e)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ClusterError(f"{self._name()} refused our credentials during {what}",
                                "every client needs the same job secret (--secret-file or "
                                "$POSEIDON_SECRET), a byte-identical hosts file (it names the "
                                "job) and a clock within 2 minutes of the others'",
                                shard=self.shard_id)
        if code == grpc.StatusCode.UNAVAILABLE:
            return ClusterError(f"{self._name()} is unreachable during {what} ({e.details()})",
                                "the shard's host may have died" + (
                                    ", or TLS failed (certificates signed by --tls-ca, the "
                                    "shard's naming its hosts-file host)" if self.security.tls
                                    else ""), shard=self.shard_id)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClusterError(f"{self._name()} did not answer {what} within {timeout:.1f}s",
                                shard=self.shard_id)
        return ClusterError(f"{self._name()}: {what} failed: {code}: {e.details() if hasattr(e, 'details') else e}",
                            shard=self.shard_id)

    def _call(self, what, fn, timeout, *args):
        try:
            return fn(*args, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e, what, timeout) from None

    def call_raw(self, method: str, request: bytes, timeout_s: float, what: str) -> bytes:
        """Unary call of any ``/service/Method`` with raw bytes in and out (e.g. the TCP data plane's
        endpoint discovery); errors as for every other call.
        Returns None when the shard does not implement ``method``."""
        m = self._channels[0].unary_unary(method)
        try:
            return m(request, timeout=timeout_s)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise self._error(e, what, timeout_s) from None

    # ---------------------------------------------------------------- interface
    def health(self, timeout_s):
        # Ask over every channel: a channel whose earlier connection attempt failed (the shard was
        # not up yet) stays in reconnect backoff and would fail the next RPC sent through it.
        for ch in self._channels:
            m = self._method("unary_unary", "Health", ps_pb2.HealthRequest.SerializeToString,
                             ps_pb2.HealthReply.FromString, channel=ch)
            r = self._call("health", m, timeout_s, ps_pb2.HealthRequest(header=self._hdr(-1)))
        return {"shard_id": r.shard_id, "serving": r.serving, "worker_clocks": list(r.worker_clocks),
                "dead_workers": list(r.dead_workers), "error": r.error}

    def register(self, worker_id, job_id, protocol_version, num_workers, staleness, num_shards,
                 chunk_bytes, specs, job_config=""):
        self.job_id, self.protocol_version = job_id, protocol_version
        params = []
        for spec in specs:
            n, s, d = spec[:3]
            role = spec[3] if len(spec) > 3 else PARAM
            params.append(ps_pb2.ParamSpec(name=n, shape=list(s), dtype=d, role=ROLE_TO_WIRE[role]))
        req = ps_pb2.RegisterRequest(
            header=self._hdr(worker_id), num_workers=num_workers, staleness=staleness,
            num_shards=num_shards, chunk_bytes=chunk_bytes, params=params, job_config=job_config)
        m = self._method("unary_unary", "Register", ps_pb2.RegisterRequest.SerializeToString,
                         ps_pb2.RegisterReply.FromString)
        return self._call("register", m, 30.0, req).num_owned_chunks

    def push(self, worker_id, clock, items, deadline_s):
        hdr = codec.encode_header(self.job_id, worker_id, clock, self.protocol_version)
        # A generator: gRPC pulls frames as flow control allows, so at most a few chunks are framed
        # (copied) at a time.
        frames = (codec.encode_chunk(hdr, key, kind, payload) for key, kind, payload in items)
        m = self._method("stream_unary", "Push", None, ps_pb2.PushReply.FromString)
        r = self._call("push", m, deadline_s + _GRACE_S, frames)
        return r.accepted, r.duplicates

    def pull(self, worker_id, clock, keys, min_clock, deadline_s):
        req = ps_pb2.PullRequest(header=self._hdr(worker_id, clock), keys=list(keys), min_clock=min_clock)
        m = self._method("unary_stream", "Pull", ps_pb2.PullRequest.SerializeToString, None)
        timeout = deadline_s + _GRACE_S
        try:
            for raw in m(req, timeout=timeout):
                ch = codec.decode_chunk(raw)
                yield ch.key, ch.header.clock, ch.data
        except grpc.RpcError as e:
            raise self._error(e, f"pull at clock {clock}", timeout) from None

    def clock(self, worker_id, clock, deadline_s):
        m = self._method("unary_unary", "Clock", ps_pb2.ClockRequest.SerializeToString, ps_pb2.ClockReply.FromString)
        return self._call("clock", m, deadline_s, ps_pb2.ClockRequest(header=self._hdr(worker_id, clock))).min_worker_clock

    def barrier(self, worker_id, barrier_id, deadline_s):
        m = self._method("unary_unary", "Barrier", ps_pb2.BarrierRequest.SerializeToString, ps_pb2.Ack.FromString)
        self._call(f"barrier {barrier_id}", m, deadline_s + _GRACE_S,
                   ps_pb2.BarrierRequest(header=self._hdr(worker_id), barrier_id=barrier_id))

    def get_solver_state(self, worker_id, keys, deadline_s):
        m = self._method("unary_stream", "GetSolverState", ps_pb2.SolverStateRequest.SerializeToString,
                         ps_pb2.SolverStateChunk.FromString)
        out = []
        try:
            for c in m(ps_pb2.SolverStateRequest(header=self._hdr(worker_id), keys=list(keys)), timeout=deadline_s):
                out.append((c.key, c.slot, np.frombuffer(c.data, dtype=c.dtype).reshape(tuple(c.shape))))
        except grpc.RpcError as e:
            raise self._error(e, "get solver state", deadline_s) from None
        return out

    def set_solver_state(self, worker_id, entries, deadline_s):
        hdr = self._hdr(worker_id)
        msgs = (ps_pb2.SolverStateChunk(header=hdr, key=k, slot=s, dtype=np.asarray(a).dtype.name,
                                        shape=list(np.shape(a)), data=np.ascontiguousarray(a).tobytes())
                for k, s, a in entries)
        m = self._method("stream_unary", "SetSolverState", ps_pb2.SolverStateChunk.SerializeToString,
                         ps_pb2.Ack.FromString)
        self._call("set solver state", m, deadline_s, msgs)

    def start_heartbeat(self, worker_id, interval_s, on_failure):
        """Keep one Heartbeat stream open; its end tells the shard we are gone, and its failure
        (the shard died) is reported through ``on_failure(message)``."""
        req = ps_pb2.HealthRequest(header=self._hdr(worker_id))

        def beats():
            yield req
            while not self._hb_stop.wait(interval_s):
                yield req

        m = self._method("stream_unary", "Heartbeat", ps_pb2.HealthRequest.SerializeToString,
                         ps_pb2.HealthReply.FromString, channel=self._channels[0])
        self._hb_future = m.future(beats())

        def done(f):
            if not self._hb_stop.is_set() and f.exception() is not None:
                on_failure(f"{self._name()} stopped answering heartbeats ({f.exception().code()})")

        self._hb_future.add_done_callback(done)

    def leave(self, worker_id, stop_server=False):
        m = self._method("unary_unary", "Shutdown", ps_pb2.ShutdownRequest.SerializeToString, ps_pb2.Ack.FromString,
                         channel=self._channels[0])
        self._call("shutdown", m, 5.0, ps_pb2.ShutdownRequest(header=self._hdr(worker_id), reason="done",
                                                               stop_server=stop_server))

    def close(self):
        self._hb_stop.set()
        for ch in self._channels:
            ch.close()
