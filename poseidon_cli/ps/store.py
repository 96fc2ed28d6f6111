"""State of one parameter-server shard, with no transport.

A :class:`ShardStore` owns the chunks ``keys.Layout.by_shard[shard_id]``. For each chunk it keeps
the current values, the updater's state dict, its applied clock and, per pending clock, the running
sum of the gradients received and the set of workers they came from. Rules (ps/README.md):

* exactly once: a (worker, clock, chunk) gradient is added at most once; a repeat is ignored and
  reported as a duplicate (``push`` returns False);
* once all P gradients of clock ``k`` have arrived for a chunk and clocks ``< k`` are applied, the
  sum is divided by P and the updater steps once (``updater.update(key, param, avg, state, k)``);
  a tensor of role STAT (``keys.STAT``) takes the average as its value instead (no updater, no state);
* a pull waits (``consistency.pull_ready``) until the chunk is initialised, its applied clock is
  ``>= max(0, c - s)`` and every worker's clock is ``>= c - s``;
* every wait has a deadline and raises :class:`ClusterError` naming the workers waited for; a lost
  worker (``worker_lost``, or no heartbeat for ``heartbeat_timeout_s``) fails every wait at once.
  Every ClusterError raised here has ``shard`` = this shard, and ``lost_workers`` when workers are
  lost (transports carry both fields; nobody parses the message);
* registration fixes P, s, the chunk size, the layout (names, shapes, dtypes, roles) and the job
  config; a worker that disagrees on any of them is rejected, the difference named.

Thread-safe: one lock + condition; the gRPC servicer and the in-process transport call it from many
threads.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..errors import ClusterError
from . import consistency
from .keys import STAT, ChunkKey, Layout, make_specs
from .protocol import PROTOCOL_VERSION


class _ChunkState:
    __slots__ = ("ck", "stat", "value", "state", "applied", "pending", "initialized", "spare", "version")

    def __init__(self, ck: ChunkKey, stat: bool):
        self.ck = ck
        self.stat = stat  # role STAT: the clock's average becomes the value, the updater is not called
        self.value = np.zeros(ck.size, dtype=ck.dtype)
        self.state: dict = {}
        self.applied = 0
        # clock -> [sum ndarray or None (= all zeros so far), set of worker ids]
        self.pending: dict[int, list] = {}
        self.initialized = False
        # The last applied clock's sum buffer, reused for the next one: fresh 1 MiB allocations per
        # chunk per clock cost page faults that showed up in the benchmark.
        self.spare: np.ndarray | None = None
        # Bumped (under the lock) whenever ``value`` changes: lets a transport send ``value`` without
        # holding the lock and then check nothing wrote it meanwhile (see ``unchanged_since``).
        self.version = 0


class ShardStore:
    """One shard. ``updater`` follows the contract in :mod:`poseidon_cli.ps.updaters`.

    ``deadline_s``: default bound on every blocking wait. ``heartbeat_timeout_s``: a registered worker
    silent for longer is declared lost (None disables; the gRPC server also reports broken streams).
    """

    def __init__(self, shard_id: int, num_shards: int, job_id: str, updater,
                 deadline_s: float = 60.0, heartbeat_timeout_s: float | None = None,
                 protocol_version: int = PROTOCOL_VERSION):
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id {shard_id} not in [0, {num_shards})")
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.job_id = job_id
        self.updater = updater
        self.deadline_s = deadline_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.protocol_version = protocol_version
        self._cond = threading.Condition(threading.Lock())
        self.layout: Layout | None = None
        self.num_workers = 0
        self.staleness = 0
        self.chunk_bytes = 0
        self._chunks: dict[int, _ChunkState] = {}
        self._registered: set[int] = set()
        self._worker_clock: dict[int, int] = {}
        self._barrier: dict[int, int] = {}
        self._last_seen: dict[int, float] = {}
        self._left: set[int] = set()
        self._lost: dict[int, str] = {}
        self.job_config = ""
        self.duplicates = 0
        self.stopped = False

    # ---------------------------------------------------------------- registration
    def _error(self, message: str, hint: str | None = None, lost_workers=()) -> ClusterError:
        return ClusterError(message, hint, lost_workers=lost_workers, shard=self.shard_id)

    def register(self, worker_id: int, job_id: str, protocol_version: int, num_workers: int,
                 staleness: int, num_shards: int, chunk_bytes: int, params: Sequence,
                 job_config: str = "") -> int:
        """Admit a worker. The first registration fixes P, s, chunk size, the layout and
        ``job_config`` (what else the workers must agree on, as ``field=value`` words); later ones
        must agree. Returns the number of chunks this shard owns.

        Raises ClusterError for another job id, protocol version or shard count, a duplicate or
        out-of-range worker id, or a differing P / s / chunk size / layout (names the param) / job
        config (names the differing fields with both values)."""
        who = f"shard {self.shard_id}: worker {worker_id}"
        if job_id != self.job_id:
            raise self._error(f"{who} registered for job {job_id!r} but this shard serves job {self.job_id!r}",
                              "a cluster's job id is a hash of its hosts file: give every client a "
                              "byte-identical copy")
        if protocol_version != self.protocol_version:
            raise self._error(f"{who} speaks protocol version {protocol_version}, this shard "
                              f"speaks {self.protocol_version}", "run the same poseidon version everywhere")
        if num_shards != self.num_shards:
            raise self._error(f"{who} expects {num_shards} shards but this shard is one of {self.num_shards}")
        with self._cond:
            if self.layout is None:
                if num_workers < 1 or staleness < 0:
                    raise self._error(f"{who} sent num_workers={num_workers}, staleness={staleness}")
                self.num_workers, self.staleness, self.chunk_bytes = num_workers, staleness, chunk_bytes
                self.job_config = job_config
                self.layout = Layout(make_specs(params), self.num_shards, chunk_bytes)
                self._chunks = {ck.key: _ChunkState(ck, self.layout.specs[ck.param_index].role == STAT)
                                for ck in self.layout.by_shard[self.shard_id]}
            else:
                for what, mine, theirs in (("num_workers", self.num_workers, num_workers),
                                           ("staleness", self.staleness, staleness),
                                           ("chunk_bytes", self.chunk_bytes, chunk_bytes)):
                    if mine != theirs:
                        raise self._error(f"{who} registered with {what}={theirs} but the job has {what}={mine}")
                diff = self.layout.describe_difference(params)
                if diff:
                    raise self._error(f"{who} has a different parameter layout: {diff}")
                if job_config != self.job_config:
                    raise self._error(f"{who} has a different job config: "
                                      f"{config_difference(self.job_config, job_config)}",
                                      "give every worker the same solver settings")
            if not 0 <= worker_id < self.num_workers:
                raise self._error(f"{who}: worker id out of range [0, {self.num_workers})")
            if worker_id in self._registered:
                raise self._error(f"{who} is already registered (duplicate worker id)",
                                  "give every worker its own id")
            self._registered.add(worker_id)
            self._worker_clock.setdefault(worker_id, 0)
            self._last_seen[worker_id] = time.monotonic()
            self._cond.notify_all()
            return len(self._chunks)

    # ---------------------------------------------------------------- liveness
    def heartbeat(self, worker_id: int) -> None:
        with self._cond:
            self._last_seen[worker_id] = time.monotonic()

    def is_registered(self, worker_id: int) -> bool:
        with self._cond:
            return worker_id in self._registered

    def chunk_nbytes(self, key: int) -> int | None:
        """Bytes of chunk ``key``'s values on this shard, None for a key it does not hold: what a
        data-plane header may announce for it. ClusterError before the first registration."""
        with self._cond:
            self._require_layout()
        cs = self._chunks.get(key)
        return None if cs is None else cs.value.nbytes

    def worker_lost(self, worker_id: int, reason: str) -> None:
        """Declare a worker dead (its channel broke or it stopped heart-beating): every current and
        future wait fails with a ClusterError naming it. A worker that has left cleanly is ignored.
        The servers call it only for a worker registered here, on its own authenticated stream or
        connection (server.py, tcp_server.py)."""
        with self._cond:
            if worker_id in self._left or worker_id in self._lost:
                return
            self._lost[worker_id] = reason
            self._cond.notify_all()

    def leave(self, worker_id: int) -> None:
        """A worker finished cleanly: its later disconnection is not a failure."""
        with self._cond:
            self._left.add(worker_id)
            self._cond.notify_all()

    def stop(self) -> None:
        """Fail every wait (the shard is shutting down)."""
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def _check_alive(self) -> None:
        """Raise if the job is failed. Caller holds the lock."""
        if self.heartbeat_timeout_s is not None:
            now = time.monotonic()
            for w, seen in self._last_seen.items():
                if w not in self._left and w not in self._lost and now - seen > self.heartbeat_timeout_s:
                    self._lost[w] = f"no heartbeat for {now - seen:.1f}s"
        if self._lost:
            desc = "; ".join(f"worker {w}: {r}" for w, r in sorted(self._lost.items()))
            raise self._error(f"shard {self.shard_id}: lost worker(s) {sorted(self._lost)} ({desc})",
                              "the job cannot continue without them", lost_workers=self._lost)
        if self.stopped:
            raise self._error(f"shard {self.shard_id} is shutting down")

    def _min_worker_clock(self) -> int:
        if len(self._worker_clock) < self.num_workers:
            return 0  # an unregistered worker is at clock 0
        return min(self._worker_clock.values())

    def _wait(self, waiter: int, ready: Callable[[], bool], deadline_s: float | None,
              explain: Callable[[float], str]) -> None:
        """Block worker ``waiter`` until ``ready()`` (called under the lock). Caller holds the lock."""
        limit = self.deadline_s if deadline_s is None else deadline_s
        t0 = time.monotonic()
        while True:
            # A worker blocked in a call to us is alive even if its heartbeat thread is starved.
            if waiter in self._last_seen:
                self._last_seen[waiter] = time.monotonic()
            self._check_alive()
            if ready():
                return
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                raise self._error(explain(limit))
            # Wake up periodically to notice heartbeat expiry even without a notify.
            self._cond.wait(min(left, 0.25))

    def _require_layout(self) -> None:
        if self.layout is None:
            raise self._error(f"shard {self.shard_id}: no worker has registered yet")

    # ---------------------------------------------------------------- data plane
    def push(self, worker_id: int, clock: int, key: int, grad=None) -> bool:
        """Add worker ``worker_id``'s gradient for ``clock`` to chunk ``key``; ``grad`` is a 1-D
        array-like of the chunk's length and dtype, or None for all zeros. Steps the updater for every
        clock that becomes complete. Returns False (and changes nothing) for a duplicate.
        Raises KeyError for a chunk this shard does not own, ValueError for a wrong length."""
        with self._cond:
            self._require_layout()
            cs = self._chunks[key]
            entry = cs.pending.get(clock)
            if consistency.is_duplicate(clock, cs.applied, entry[1] if entry else set(), worker_id):
                self.duplicates += 1
                return False
            if grad is not None:
                g = np.frombuffer(grad, dtype=cs.ck.dtype) if not isinstance(grad, np.ndarray) else grad
                if g.size != cs.ck.size:
                    raise ValueError(f"chunk {key} of {cs.ck.name!r} has {cs.ck.size} elements, got {g.size}")
            if entry is None:
                entry = cs.pending[clock] = [None, set()]
            if grad is not None:
                if entry[0] is None:
                    if cs.spare is not None:
                        entry[0], cs.spare = cs.spare, None
                        entry[0][...] = g
                    else:
                        entry[0] = np.array(g, dtype=cs.ck.dtype, copy=True)
                else:
                    entry[0] += g
            entry[1].add(worker_id)
            self._apply_ready(cs)
            return True

    def push_owned(self, worker_id: int, clock: int, key: int, buf: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """:meth:`push` of a gradient the caller hands over: ``buf`` is a writable, aligned byte array
        (``uint8``, the chunk's bytes) that the caller no longer uses. When it is the first gradient of
        ``clock`` for the chunk the store keeps ``buf`` as the running sum instead of copying it (a
        transport can receive straight into it). Returns ``(accepted, reusable)``: a byte array of the
        same size the caller may receive into next (``buf`` itself when it was not kept, else the
        chunk's spare sum buffer, or None). Same rules and errors as :meth:`push`."""
        with self._cond:
            self._require_layout()
            cs = self._chunks[key]
            if clock not in cs.pending and clock >= cs.applied and buf.nbytes == cs.value.nbytes:
                cs.pending[clock] = [buf.view(cs.ck.dtype), {worker_id}]
                back, cs.spare = cs.spare, None
                self._apply_ready(cs)
                return True, (back.view(np.uint8) if back is not None else None)
        # Not the first gradient of this clock (or a duplicate, or malformed): the ordinary path.
        return self.push(worker_id, clock, key, memoryview(buf)), buf

    def _apply_ready(self, cs: _ChunkState) -> None:
        """Step the updater for each complete clock in order. Caller holds the lock."""
        stepped = False
        while True:
            entry = cs.pending.get(cs.applied)
            if entry is None or not consistency.update_complete(entry[1], self.num_workers):
                break
            del cs.pending[cs.applied]
            avg = entry[0] if entry[0] is not None else np.zeros(cs.ck.size, cs.ck.dtype)
            if self.num_workers > 1:
                avg /= self.num_workers
            cs.version += 1
            if cs.stat:
                cs.value[...] = avg
            else:
                self.updater.update(cs.ck, cs.value, avg, cs.state, cs.applied)
            if entry[0] is not None:
                cs.spare = avg  # the updater contract says grad is scratch: safe to reuse
            cs.applied += 1
            stepped = True
        if stepped:
            self._cond.notify_all()

    def set_value(self, key: int, value) -> None:
        """Overwrite chunk ``key``'s values (initial values or a restore) and mark it initialised."""
        with self._cond:
            self._require_layout()
            cs = self._chunks[key]
            v = np.frombuffer(value, dtype=cs.ck.dtype) if not isinstance(value, np.ndarray) else value
            if v.size != cs.ck.size:
                raise ValueError(f"chunk {key} of {cs.ck.name!r} has {cs.ck.size} elements, got {v.size}")
            if v.dtype.kind == "f" and not np.isfinite(v).all():
                raise ValueError(f"chunk {key} of {cs.ck.name!r}: values that are not finite (NaN "
                                 "or infinity) were refused")
            cs.version += 1
            cs.value[...] = v.reshape(-1)
            cs.initialized = True
            self._cond.notify_all()

    def pull(self, worker_id: int, pull_clock: int, keys: Iterable[int], min_clock: int = 0,
             deadline_s: float | None = None,
             render: Callable[[ChunkKey, int, np.ndarray], object] | None = None) -> Iterator:
        """Yield ``render(chunk_key, applied_clock, values)`` for each chunk of ``keys`` as soon as it
        satisfies the pull rule for a worker at ``pull_clock`` (in readiness order, not key order).
        ``render`` runs under the lock (so it sees a consistent chunk) and must copy what it keeps;
        the default returns ``(key, applied_clock, values.tobytes())``.
        Raises ClusterError naming the workers still waited for when ``deadline_s`` expires."""
        render = render or (lambda ck, applied, v: (ck.key, applied, v.tobytes()))
        remaining = list(keys)
        limit = self.deadline_s if deadline_s is None else deadline_s
        t_end = time.monotonic() + limit
        s = self.staleness
        while remaining:
            ready = []
            with self._cond:
                self._require_layout()

                def ready_now():
                    mwc = self._min_worker_clock()
                    for k in remaining:
                        cs = self._chunks[k]
                        if cs.initialized and consistency.pull_ready(pull_clock, s, cs.applied, mwc, min_clock):
                            return True
                    return False

                self._wait(worker_id, ready_now, t_end - time.monotonic(),
                           lambda _l: self._explain_pull(worker_id, pull_clock, min_clock, remaining, limit))
                mwc = self._min_worker_clock()
                still = []
                for k in remaining:
                    cs = self._chunks[k]
                    if cs.initialized and consistency.pull_ready(pull_clock, s, cs.applied, mwc, min_clock):
                        ready.append(cs)
                    else:
                        still.append(k)
                remaining = still
                first = render(ready[0].ck, ready[0].applied, ready[0].value) if ready else None
            # Render (copy) one chunk per lock hold and hand it over before copying the next, so the
            # network starts on the first chunk at once. A chunk's applied clock only grows, so one that
            # was ready stays ready; each rendering is a consistent (values, applied clock) pair.
            if first is not None:
                yield first  # outside the lock: the consumer may be slow (network)
            for cs in ready[1:]:
                with self._cond:
                    item = render(cs.ck, cs.applied, cs.value)
                yield item

    def version_locked(self, key: int) -> int:
        """Chunk ``key``'s value version. Only with the lock held, i.e. from inside a ``pull`` render."""
        return self._chunks[key].version

    def unchanged_since(self, key: int, version: int) -> bool:
        """True if chunk ``key``'s values were not written since ``version_locked`` returned
        ``version``. Updates run entirely under the lock, so True means a read of ``value`` made
        between the two calls saw one consistent state."""
        with self._cond:
            return self._chunks[key].version == version

    def render_now(self, key: int, render: Callable[[ChunkKey, int, np.ndarray], object]):
        """``render(chunk_key, applied_clock, values)`` of chunk ``key`` as it is now, under the lock
        (the applied clock only grows, so a chunk once ready for a pull stays ready)."""
        with self._cond:
            cs = self._chunks[key]
            return render(cs.ck, cs.applied, cs.value)

    def _explain_pull(self, worker_id, pull_clock, min_clock, keys, limit) -> str:
        need = consistency.required_clock(pull_clock, self.staleness, min_clock)
        need_w = max(0, pull_clock - self.staleness)
        clocks = {w: self._worker_clock.get(w, 0) for w in range(self.num_workers)}
        behind = set(consistency.laggards(clocks, need_w))
        unregistered = [w for w in range(self.num_workers) if w not in self._registered]
        missing, stuck, uninit = set(), set(), set()
        for k in keys:
            cs = self._chunks[k]
            if not cs.initialized:
                uninit.add(cs.ck.name)
            elif cs.applied < need:
                stuck.add(cs.ck.name)
                got = cs.pending.get(cs.applied, [None, set()])[1]
                missing |= set(range(self.num_workers)) - got
        waited = sorted(behind | missing)
        parts = [f"shard {self.shard_id}: worker {worker_id}'s pull at clock {pull_clock} "
                 f"(staleness {self.staleness}) waited {limit:.1f}s"]
        if waited:
            parts.append(f"for worker(s) {waited}")
        if behind:
            parts.append("clocks " + ", ".join(f"worker {w}={clocks[w]}" for w in sorted(behind))
                         + f" < {need_w}")
        if missing:
            parts.append(f"gradients missing from worker(s) {sorted(missing)} for {sorted(stuck)[:3]}")
        if unregistered:
            parts.append(f"never registered: worker(s) {unregistered}")
        if uninit:
            parts.append(f"never initialised (worker 0 sends initial values): {sorted(uninit)[:3]}")
        return "; ".join(parts)

    # ---------------------------------------------------------------- control plane
    def clock(self, worker_id: int, clock: int) -> int:
        """Record that ``worker_id`` has completed ``clock`` clocks (monotone: a smaller value is
        ignored). Returns the slowest worker's clock."""
        with self._cond:
            if clock > self._worker_clock.get(worker_id, 0):
                self._worker_clock[worker_id] = clock
                self._cond.notify_all()
            self._last_seen[worker_id] = time.monotonic()
            return self._min_worker_clock()

    def barrier(self, worker_id: int, barrier_id: int, deadline_s: float | None = None) -> None:
        """Block until every worker has entered barrier ``barrier_id`` (or left the job)."""
        with self._cond:
            self._require_layout()
            self._barrier[worker_id] = max(self._barrier.get(worker_id, 0), barrier_id + 1)
            self._cond.notify_all()

            def missing():
                return [w for w in range(self.num_workers)
                        if self._barrier.get(w, 0) <= barrier_id and w not in self._left]

            self._wait(worker_id, lambda: not missing(), deadline_s,
                       lambda limit: f"shard {self.shard_id}: barrier {barrier_id} waited {limit:.1f}s "
                                     f"for worker(s) {missing()}")

    def get_solver_state(self, keys: Iterable[int] | None = None) -> list[tuple[int, str, np.ndarray]]:
        """Copies of the updater state: ``(key, slot, array)`` for each chunk and slot."""
        with self._cond:
            self._require_layout()
            ks = self._chunks.keys() if keys is None else keys
            return [(k, slot, np.array(a, copy=True)) for k in ks
                    for slot, a in sorted(self._chunks[k].state.items())]

    def set_solver_state(self, key: int, slot: str, array) -> None:
        """Replace one slot of chunk ``key``'s updater state (restore from a snapshot)."""
        with self._cond:
            self._require_layout()
            self._chunks[key].state[slot] = np.array(array, copy=True)

    def applied_clock(self, key: int) -> int:
        with self._cond:
            return self._chunks[key].applied

    def values(self) -> dict[int, np.ndarray]:
        """Copies of every owned chunk's values (tests, debugging)."""
        with self._cond:
            return {k: cs.value.copy() for k, cs in self._chunks.items()}

    def health(self) -> dict:
        with self._cond:
            return {"shard_id": self.shard_id, "serving": not self.stopped,
                    "worker_clocks": [self._worker_clock.get(w, -1) if w in self._registered else -1
                                      for w in range(self.num_workers)],
                    "dead_workers": sorted(self._lost),
                    "error": "; ".join(f"worker {w}: {r}" for w, r in sorted(self._lost.items()))}


def config_difference(mine: str, theirs: str) -> str:
    """Name what differs between two job configs given as ``field=value`` words: each differing
    field with both values (``base_lr=0.01 but the job has base_lr=0.05``); the whole texts when
    they are not of that form."""
    def fields(text):
        out = {}
        for word in text.split():
            key, eq, _ = word.partition("=")
            if not eq:
                return None
            out[key] = word
        return out

    a, b = fields(mine), fields(theirs)
    if a is None or b is None:
        return f"{theirs!r} but the job has {mine!r}"
    parts = [f"{b.get(k, f'no {k}')} but the job has {a.get(k, f'no {k}')}"
             for k in list(a) + [k for k in b if k not in a] if a.get(k) != b.get(k)]
    return "; ".join(parts)
