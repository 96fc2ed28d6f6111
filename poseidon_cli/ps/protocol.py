"""Constants both ends of the parameter-server wire agree on (client, servers, transports, SFB).

One home so that client-side code never imports a server module for a constant. The message
schema itself is ``proto/ps.proto``; the TCP data plane's framing is ``tcp_wire.py``.
"""
from __future__ import annotations

from .._proto import ps_pb2
from ..errors import ClusterError
from .keys import PARAM, STAT

#: Bumped whenever a peer of another version could misread a frame (2: the TCP ERROR frame carries
#: the ClusterError fields, RegisterRequest carries job_config and ParamSpec.role).
PROTOCOL_VERSION = 2

#: The gRPC service of one shard (``proto/ps.proto``).
SERVICE = "poseidon.ps.ParameterServer"
#: Raw-bytes gRPC method a shard answers with its TCP data port (ASCII, empty when not served).
ENDPOINT_METHOD = "/poseidon.ps.DataPlane/Endpoint"
#: Tensors travel in <= 1 MiB chunks, but solver state and layouts can be larger: no size limit.
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

#: How Push / Pull payloads travel: plain TCP sockets beside gRPC, or gRPC streams.
DATA_PLANES = ("tcp", "grpc")
DEFAULT_DATA_PLANE = "tcp"

#: Chunk kinds of a push (``ps_pb2.ChunkKind``).
GRADIENT = ps_pb2.GRADIENT
ZERO_GRADIENT = ps_pb2.ZERO_GRADIENT
VALUE = ps_pb2.VALUE

#: gRPC trailing-metadata keys carrying :class:`~poseidon_cli.errors.ClusterError`'s fields.
META_LOST_WORKERS = "poseidon-lost-workers"
META_SHARD = "poseidon-shard"

#: keys.ParamSpec role <-> ps.proto ParamSpec.Role
ROLE_TO_WIRE = {PARAM: ps_pb2.ParamSpec.PARAM, STAT: ps_pb2.ParamSpec.STAT}
ROLE_FROM_WIRE = {v: k for k, v in ROLE_TO_WIRE.items()}


def error_metadata(e: ClusterError) -> tuple:
    """gRPC trailing metadata carrying ``e``'s structured fields (the servicer sets it on abort)."""
    md = [(META_LOST_WORKERS, ",".join(str(w) for w in e.lost_workers))]
    if e.shard is not None:
        md.append((META_SHARD, str(e.shard)))
    return tuple(md)


def error_from_status(e) -> ClusterError:
    """The shard's ClusterError back from a FAILED_PRECONDITION ``grpc.RpcError``: its one-line
    message as the message, its fields from the trailing metadata."""
    md = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
    lost = [int(w) for w in md.get(META_LOST_WORKERS, "").split(",") if w.strip()]
    shard = md.get(META_SHARD)
    return ClusterError(e.details(), lost_workers=lost, shard=None if shard is None else int(shard))
