"""The client-facing shard interface (and nothing else: implementations import this module, never
the other way round).

:class:`~poseidon_cli.ps.client.PSClient` talks to each shard through one object with the methods of
:class:`ShardTransport`. Implementations: ``local_transport.LocalTransport`` (calls a ``ShardStore``
in the same process), ``grpc_transport.GrpcTransport`` (everything over gRPC) and
``tcp_transport.TcpTransport`` (control over gRPC, payloads over plain TCP); ``client.make_transport``
picks a network one. Every implementation raises :class:`~poseidon_cli.errors.ClusterError` for
every cluster failure (deadline, lost worker, unreachable shard, rejected registration), with the
shard's ``lost_workers`` / ``shard`` fields when the shard raised it, and ``shard`` set to the shard
it could not reach otherwise.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence


class ShardTransport:
    """One shard as seen by one worker. ``address`` names the shard in error messages.

    ``push`` items are ``(key, kind, payload)`` with kind GRADIENT / ZERO_GRADIENT / VALUE
    (``protocol.py``) and payload a 1-D ndarray (or bytes-like) of the chunk, None for ZERO_GRADIENT;
    the caller keeps the payload unchanged until the call returns. ``pull`` yields
    ``(key, applied_clock, buffer)`` in readiness order, ``buffer`` being bytes-like holding the
    chunk's elements. ``specs`` of ``register`` are ``(name, shape, dtype, role)`` tuples.
    """

    address = "?"

    def health(self, timeout_s: float) -> dict:
        raise NotImplementedError

    def register(self, worker_id: int, job_id: str, protocol_version: int, num_workers: int,
                 staleness: int, num_shards: int, chunk_bytes: int, specs: Sequence,
                 job_config: str = "") -> int:
        raise NotImplementedError

    def push(self, worker_id: int, clock: int, items: Sequence, deadline_s: float) -> tuple[int, int]:
        raise NotImplementedError

    def pull(self, worker_id: int, clock: int, keys: Sequence[int], min_clock: int,
             deadline_s: float) -> Iterator[tuple[int, int, object]]:
        raise NotImplementedError

    def pull_into(self, worker_id: int, clock: int, keys: Sequence[int], min_clock: int,
                  deadline_s: float, dest: Callable[[int, int], memoryview]) -> Iterator[tuple[int, int]]:
        """Like :meth:`pull`, but chunk ``key``'s ``nbytes`` bytes land in ``dest(key, nbytes)`` (a
        writable byte view); yields ``(key, applied_clock)`` once it is filled. This default copies
        from :meth:`pull`; a transport that can receive in place (TCP) overrides it."""
        for key, applied, buf in self.pull(worker_id, clock, keys, min_clock, deadline_s):
            src = memoryview(buf).cast("B")
            dest(key, src.nbytes)[:] = src
            yield key, applied

    def clock(self, worker_id: int, clock: int, deadline_s: float) -> int:
        raise NotImplementedError

    def barrier(self, worker_id: int, barrier_id: int, deadline_s: float) -> None:
        raise NotImplementedError

    def get_solver_state(self, worker_id: int, keys: Sequence[int], deadline_s: float) -> list:
        raise NotImplementedError

    def set_solver_state(self, worker_id: int, entries: Iterable, deadline_s: float) -> None:
        raise NotImplementedError

    def start_heartbeat(self, worker_id: int, interval_s: float, on_failure) -> None:
        raise NotImplementedError

    def leave(self, worker_id: int, stop_server: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
