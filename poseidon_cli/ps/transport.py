"""The client-facing shard interface, and its in-process implementation.

:class:`PSClient` talks to each shard through one object with the methods of :class:`ShardTransport`.
:class:`LocalTransport` calls a :class:`ShardStore` directly (same thread, no serialization), so a
unit test can run P workers and S shards as threads of one process; ``grpc_transport.GrpcTransport``
does the same over the network. Both raise :class:`~poseidon_cli.errors.ClusterError` for every
cluster failure (deadline, lost worker, unreachable shard, rejected registration).
"""
from __future__ import annotations

import threading
from typing import Iterable, Iterator, Sequence

import numpy as np

from .._proto import ps_pb2
from ..errors import ClusterError
from .store import ShardStore

GRADIENT = ps_pb2.GRADIENT
ZERO_GRADIENT = ps_pb2.ZERO_GRADIENT
VALUE = ps_pb2.VALUE


class ShardTransport:
    """One shard as seen by one worker. ``address`` names the shard in error messages.

    ``push`` items are ``(key, kind, payload)`` with kind GRADIENT / ZERO_GRADIENT / VALUE and payload a
    1-D ndarray (or bytes-like) of the chunk, None for ZERO_GRADIENT; the caller keeps the payload
    unchanged until the call returns. ``pull`` yields ``(key, applied_clock, buffer)`` in readiness
    order, ``buffer`` being bytes-like holding the chunk's elements.
    """

    address = "?"

    def health(self, timeout_s: float) -> dict: raise NotImplementedError
    def register(self, worker_id: int, job_id: str, protocol_version: int, num_workers: int,
                 staleness: int, num_shards: int, chunk_bytes: int, specs: Sequence) -> int:
        raise NotImplementedError
    def push(self, worker_id: int, clock: int, items: Sequence, deadline_s: float) -> tuple[int, int]:
        raise NotImplementedError
    def pull(self, worker_id: int, clock: int, keys: Sequence[int], min_clock: int,
             deadline_s: float) -> Iterator[tuple[int, int, object]]:
        raise NotImplementedError
    def clock(self, worker_id: int, clock: int, deadline_s: float) -> int: raise NotImplementedError
    def barrier(self, worker_id: int, barrier_id: int, deadline_s: float) -> None: raise NotImplementedError
    def get_solver_state(self, worker_id: int, keys: Sequence[int], deadline_s: float) -> list:
        raise NotImplementedError
    def set_solver_state(self, worker_id: int, entries: Iterable, deadline_s: float) -> None:
        raise NotImplementedError
    def start_heartbeat(self, worker_id: int, interval_s: float, on_failure) -> None:
        raise NotImplementedError
    def leave(self, worker_id: int, stop_server: bool = False) -> None: raise NotImplementedError
    def close(self) -> None: raise NotImplementedError


class LocalTransport(ShardTransport):
    """In-process transport onto ``store``. ``kill(worker_id)`` simulates that worker's death (its
    heartbeat stops and the shard is told its channel broke)."""

    def __init__(self, store: ShardStore):
        self.store = store
        self.address = f"local shard {store.shard_id}"
        self._hb_stop = threading.Event()
        self._job_id = None

    def health(self, timeout_s):
        return self.store.health()

    def register(self, worker_id, job_id, protocol_version, num_workers, staleness, num_shards,
                 chunk_bytes, specs):
        self._job_id = job_id
        return self.store.register(worker_id, job_id, protocol_version, num_workers, staleness,
                                   num_shards, chunk_bytes, specs)

    def push(self, worker_id, clock, items, deadline_s):
        accepted = dups = 0
        for key, kind, payload in items:
            if kind == VALUE:
                self.store.set_value(key, payload)
                accepted += 1
                continue
            ok = self.store.push(worker_id, clock, key, None if kind == ZERO_GRADIENT else payload)
            accepted += ok
            dups += not ok
        return accepted, dups

    def pull(self, worker_id, clock, keys, min_clock, deadline_s):
        return self.store.pull(worker_id, clock, keys, min_clock, deadline_s)

    def clock(self, worker_id, clock, deadline_s):
        return self.store.clock(worker_id, clock)

    def barrier(self, worker_id, barrier_id, deadline_s):
        self.store.barrier(worker_id, barrier_id, deadline_s)

    def get_solver_state(self, worker_id, keys, deadline_s):
        return self.store.get_solver_state(keys)

    def set_solver_state(self, worker_id, entries, deadline_s):
        for key, slot, arr in entries:
            self.store.set_solver_state(key, slot, arr)

    def start_heartbeat(self, worker_id, interval_s, on_failure):
        def beat():
            while not self._hb_stop.wait(interval_s):
                self.store.heartbeat(worker_id)
        threading.Thread(target=beat, daemon=True, name=f"hb-w{worker_id}").start()

    def kill(self, worker_id):
        self._hb_stop.set()
        self.store.worker_lost(worker_id, "channel closed (simulated process death)")

    def leave(self, worker_id, stop_server=False):
        self.store.leave(worker_id)
        if stop_server:
            self.store.stop()

    def close(self):
        self._hb_stop.set()


def local_cluster(num_shards: int, job_id: str, updater_factory, **store_kwargs) -> list[ShardStore]:
    """``num_shards`` stores for an in-process cluster; ``updater_factory()`` gives each its updater."""
    return [ShardStore(i, num_shards, job_id, updater_factory(), **store_kwargs) for i in range(num_shards)]


DEFAULT_DATA_PLANE = "tcp"


def make_transport(address: str, shard_id: int, job_id: str, data_plane: str = DEFAULT_DATA_PLANE,
                   **kwargs) -> ShardTransport:
    """The network transport to shard ``shard_id`` whose gRPC server is at ``address``.

    ``data_plane="tcp"``: Push / Pull payloads on plain TCP sockets, control over gRPC
    (``tcp_transport.TcpTransport``; the shard must serve ``data_plane="tcp"``, the ShardServer default);
    ``"grpc"``: everything over gRPC (``grpc_transport.GrpcTransport``). ``kwargs`` (``channels``,
    ``protocol_version``) go to the transport."""
    if data_plane == "tcp":
        from .tcp_transport import TcpTransport
        return TcpTransport(address, shard_id, job_id, **kwargs)
    if data_plane == "grpc":
        from .grpc_transport import GrpcTransport
        return GrpcTransport(address, shard_id, job_id, **kwargs)
    raise ValueError(f"data_plane must be 'tcp' or 'grpc', got {data_plane!r}")
