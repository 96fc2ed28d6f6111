"""In-process :class:`~poseidon_cli.ps.transport.ShardTransport`: a worker thread calls a
:class:`~poseidon_cli.ps.store.ShardStore` directly (same thread, no serialization), so a test can run
P workers and S shards as threads of one process with the store's rules unchanged. The store's
ClusterErrors (with their fields) reach the caller as they are.
"""
from __future__ import annotations

import threading

from .protocol import VALUE, ZERO_GRADIENT
from .store import ShardStore
from .transport import ShardTransport


class LocalTransport(ShardTransport):
    """In-process transport onto ``store``. ``kill(worker_id)`` simulates that worker's death (its
    heartbeat stops and the shard is told its channel broke)."""

    def __init__(self, store: ShardStore):
        self.store = store
        self.address = f"local shard {store.shard_id}"
        self._hb_stop = threading.Event()

    def health(self, timeout_s):
        return self.store.health()

    def register(self, worker_id, job_id, protocol_version, num_workers, staleness, num_shards,
                 chunk_bytes, specs, job_config=""):
        return self.store.register(worker_id, job_id, protocol_version, num_workers, staleness,
                                   num_shards, chunk_bytes, specs, job_config)

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
