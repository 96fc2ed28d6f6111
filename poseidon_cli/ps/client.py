"""Worker-side parameter-server client: per-tensor futures over S shards.

Typical use by one worker (rank ``w`` of ``P``)::

    client = PSClient(transports, job_id="j", worker_id=w, num_workers=P, params=[("conv1.0", (96, 3, 11, 11)), ...],
                      staleness=s, deadline_s=60)
    client.connect()                      # waits for every shard (retry + backoff), registers, heart-beats
    if w == 0:
        client.init_params(initial_values)  # {name: ndarray}; blocks until stored
    for t in range(max_iter):             # client.clock_value == t here
        ready = {n: client.pull(n) for n in names}   # Future[ndarray] per tensor, fresh per the SSP rule
        ... forward layer by layer, each waiting only for ready[its params].result() ...
        ... backward: client.push(name, grad) the moment a param's gradient is final ...
        client.clock()                    # iteration t done
    client.finish()                       # flush pushes, barrier, leave cleanly

``transports[i]`` reaches shard ``i`` (:func:`make_transport` over the network, ``LocalTransport``
in-process). Every blocking call is bounded by ``deadline_s`` and raises ClusterError naming the
shard or workers, in its message and in its ``shard`` / ``lost_workers`` fields.

Statistics (values to average over workers, e.g. the loss for the log) are tensors of role STAT in
``params`` (``(name, shape, dtype, keys.STAT)``) read with :meth:`PSClient.mean_over_workers`.
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import weakref
from typing import Mapping, Sequence

import numpy as np

from ..errors import ClusterError
from . import consistency
from .keys import DEFAULT_CHUNK_BYTES, STAT, Layout
from .pools import started_pool
from .protocol import DATA_PLANES, DEFAULT_DATA_PLANE, GRADIENT, PROTOCOL_VERSION, VALUE, ZERO_GRADIENT
from .transport import ShardTransport

#: seconds that leaving the shards may take in all: a hung shard must not hold a finished or
#: failing worker past its deadline (a leave is a courtesy; shards also notice a closed stream)
LEAVE_TIMEOUT_S = 2.0


def make_transport(address: str, shard_id: int, job_id: str, data_plane: str = DEFAULT_DATA_PLANE,
                   **kwargs) -> ShardTransport:
    """The network transport to shard ``shard_id`` whose gRPC server is at ``address``.

    ``data_plane="tcp"``: Push / Pull payloads on plain TCP sockets, control over gRPC
    (``tcp_transport.TcpTransport``; the shard must serve ``data_plane="tcp"``, the ShardServer
    default); ``"grpc"``: everything over gRPC (``grpc_transport.GrpcTransport``). ``kwargs``
    (``channels``, ``protocol_version``) go to the transport. ValueError for another data plane."""
    if data_plane == "tcp":
        from .tcp_transport import TcpTransport
        return TcpTransport(address, shard_id, job_id, **kwargs)
    if data_plane == "grpc":
        from .grpc_transport import GrpcTransport
        return GrpcTransport(address, shard_id, job_id, **kwargs)
    raise ValueError(f"data_plane must be one of {DATA_PLANES}, got {data_plane!r}")


def _gather(parts: Sequence[cf.Future], finish) -> cf.Future:
    """A future that completes with ``finish()`` once all ``parts`` succeed, or with the first error."""
    out: cf.Future = cf.Future()
    left = [len(parts)]
    lock = threading.Lock()

    def done(f):
        with lock:
            if out.done():
                return
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            left[0] -= 1
            if left[0]:
                return
        try:
            out.set_result(finish())
        except BaseException as e:  # noqa: BLE001 - delivered through the future
            out.set_exception(e)

    if not parts:
        out.set_result(finish())
    for p in parts:
        p.add_done_callback(done)
    return out


class PSClient:
    """Parameter-server client of one worker.

    ``params``: the layout, ``[(name, shape[, dtype[, role]])]`` in net order -- identical on every
    worker. ``job_config``: what else every worker must agree on (``field=value`` words, e.g. the
    solver settings); a shard rejects a worker whose config differs, naming the fields.
    ``streams_per_shard``: how many concurrent streams one tensor may use towards one shard (a big
    layer's chunks are split among them). ``heartbeat_s``: heartbeat period (None: none).
    """

    def __init__(self, transports: Sequence[ShardTransport], job_id: str, worker_id: int,
                 num_workers: int, params: Sequence, staleness: int = 0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, deadline_s: float = 60.0,
                 connect_timeout_s: float = 30.0, heartbeat_s: float | None = 1.0,
                 streams_per_shard: int = 2, max_threads: int | None = None,
                 protocol_version: int = PROTOCOL_VERSION, job_config: str = ""):
        self.transports = list(transports)
        self.job_config = job_config
        self.layout = Layout(params, len(self.transports), chunk_bytes)
        self.job_id, self.worker_id, self.num_workers = job_id, worker_id, num_workers
        self.staleness, self.deadline_s = staleness, deadline_s
        self.connect_timeout_s, self.heartbeat_s = connect_timeout_s, heartbeat_s
        self.streams_per_shard = max(1, streams_per_shard)
        self.protocol_version = protocol_version
        self.clock_value = 0
        self._barrier_id = 0
        self._known_min_clock = 0
        self._pushed: set[str] = set()
        self._push_futures: list[cf.Future] = []
        self._cache: dict[str, tuple[np.ndarray, int]] = {}
        # Output buffers of pulls whose arrays nobody references any more, per param (see _buffer).
        self._free: dict[str, list[np.ndarray]] = {}
        self._failure: tuple[str, int] | None = None  # (message, shard) of a broken heartbeat
        self._lock = threading.Lock()
        n = max_threads or max(8, 2 * len(self.transports) * self.streams_per_shard + 4)
        # all n threads at once: the pool reaches its peak within the first iterations anyway, and a
        # pool that keeps growing at rare new peaks would look like a thread leak in a long run
        self._pool = started_pool(n, n, thread_name_prefix=f"ps-w{worker_id}")

    # ---------------------------------------------------------------- start-up
    def connect(self) -> None:
        """Wait for every shard to answer health (retrying with exponential backoff up to
        ``connect_timeout_s``), register on all of them and start heart-beating.
        Raises ClusterError naming the shards that never answered or that rejected the worker."""
        t_end = time.monotonic() + self.connect_timeout_s
        pending = dict(enumerate(self.transports))
        delay, last_err = 0.02, {}
        while pending:
            for i, tr in list(pending.items()):
                try:
                    tr.health(min(2.0, max(0.1, t_end - time.monotonic())))
                    del pending[i]
                except ClusterError as e:
                    last_err[i] = str(e)
            if not pending:
                break
            left = t_end - time.monotonic()
            if left <= 0:
                names = ", ".join(f"shard {i} at {tr.address} ({last_err.get(i, '?')})"
                                  for i, tr in pending.items())
                raise ClusterError(f"worker {self.worker_id}: no answer within "
                                   f"{self.connect_timeout_s:.1f}s from {names}",
                                   "check the hosts file and that every host is started",
                                   shard=min(pending))
            # keep trying until the deadline itself, not one backoff step short of it
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
        specs = [(s.name, s.shape, s.dtype, s.role) for s in self.layout.specs]
        args = (self.worker_id, self.job_id, self.protocol_version, self.num_workers, self.staleness,
                len(self.transports), self.layout.chunk_bytes, specs, self.job_config)
        # Shard 0 first: it is the one referee of the job's layout, so when two workers disagree
        # (different net or solver) the one that registers second is told what differs, instead
        # of each shard siding with whoever reached it first.
        self.transports[0].register(*args)
        futs = [self._pool.submit(tr.register, *args) for tr in self.transports[1:]]
        for f in futs:
            f.result()
        if self.heartbeat_s:
            for i, tr in enumerate(self.transports):
                tr.start_heartbeat(self.worker_id, self.heartbeat_s,
                                   lambda msg, i=i: self._fail(f"shard {i}: {msg}", i))

    def _fail(self, msg: str, shard: int) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = (msg, shard)

    def _check(self) -> None:
        if self._failure:
            msg, shard = self._failure
            raise ClusterError(f"worker {self.worker_id}: {msg}", shard=shard)

    def _groups(self, name: str):
        """(transport, chunks) groups for tensor ``name``: per shard, split into at most
        ``streams_per_shard`` contiguous groups so a big layer uses several streams at once."""
        try:
            chunks = self.layout.by_param[name]
        except KeyError:
            raise KeyError(f"unknown parameter {name!r}") from None
        by_shard: dict[int, list] = {}
        for ck in chunks:
            by_shard.setdefault(ck.shard, []).append(ck)
        for shard, cks in by_shard.items():
            n = min(self.streams_per_shard, len(cks))
            step = -(-len(cks) // n)
            for j in range(0, len(cks), step):
                yield self.transports[shard], cks[j:j + step]

    # ---------------------------------------------------------------- data plane
    def init_params(self, values: Mapping[str, np.ndarray]) -> None:
        """Store initial (or restored) values of the given params on their shards; blocks."""
        self._check()
        futs = []
        for name, arr in values.items():
            spec = self.layout.spec_by_name[name]
            arr = np.ascontiguousarray(arr, dtype=spec.dtype).reshape(-1)
            if arr.size != spec.size:
                raise ValueError(f"{name}: {arr.size} values for shape {spec.shape}")
            for tr, cks in self._groups(name):
                items = [(ck.key, VALUE, arr[ck.start:ck.stop]) for ck in cks]
                futs.append(self._pool.submit(tr.push, self.worker_id, self.clock_value, items, self.deadline_s))
        for f in futs:
            f.result()

    def push(self, name: str, grad: np.ndarray, copy: bool = True) -> cf.Future:
        """Send this worker's gradient of ``name`` for the current clock. Returns a Future that
        completes when every shard has it. With ``copy=False`` the caller must not modify ``grad``
        until the future is done (saves one copy of the tensor)."""
        self._check()
        spec = self.layout.spec_by_name[name]
        flat = np.array(grad, dtype=spec.dtype, copy=copy).reshape(-1)
        if flat.size != spec.size:
            raise ValueError(f"{name}: gradient has {flat.size} elements, param shape {spec.shape}")
        clock = self.clock_value
        parts = [self._pool.submit(tr.push, self.worker_id, clock,
                                   [(ck.key, GRADIENT, flat[ck.start:ck.stop]) for ck in cks], self.deadline_s)
                 for tr, cks in self._groups(name)]
        fut = _gather(parts, lambda: None)
        with self._lock:
            self._pushed.add(name)
            self._push_futures.append(fut)
        return fut

    def pull(self, name: str, min_clock: int = 0) -> cf.Future:
        """Future of ``name``'s values (read-only ndarray of the param's shape) fresh enough for the
        current clock ``c``: every worker's updates of clocks ``<= c - s - 1`` (and, with
        ``min_clock``, applied clock ``>= min_clock``). Served from the local cache when the cached
        copy already satisfies the rule."""
        self._check()
        spec = self.layout.spec_by_name[name]
        c = self.clock_value
        need = consistency.required_clock(c, self.staleness, min_clock)
        cached = self._cache.get(name)
        # The cache answers only when it already holds every update up to this clock (nothing
        # fresher can exist). Otherwise ask the shard, which answers as soon as the staleness
        # bound holds, with the freshest values it has: staleness is an upper bound on how old a
        # read may be, not a reason to read old values when new ones are there (Bösen's SSPPush
        # keeps client caches fresh the same way). Reading at the bound every time made stale
        # runs diverge (digits with s=2 went to NaN).
        if (cached is not None and cached[1] >= max(need, c)
                and self._known_min_clock >= c - self.staleness):
            f = cf.Future()
            f.set_result(cached[0])
            return f
        out = self._buffer(name, spec)
        starts = {ck.key: ck.start for ck in self.layout.by_param[name]}
        sizes = {ck.key: ck.size for ck in self.layout.by_param[name]}
        applied = [1 << 62]

        out_bytes = out.view(np.uint8)
        item = out.itemsize

        def into(key, nbytes):
            # Transports with ``pull_into`` (tcp) receive straight into the output tensor.
            if sizes.get(key, -1) * item != nbytes:
                raise ValueError(f"{name}: a shard sent {nbytes} bytes for chunk {key}")
            b0 = starts[key] * item
            return memoryview(out_bytes[b0:b0 + nbytes])

        def fetch(tr, cks):
            lowest = 1 << 62
            keys = [ck.key for ck in cks]
            for key, clk in tr.pull_into(self.worker_id, c, keys, min_clock, self.deadline_s, into):
                lowest = min(lowest, clk)
            with self._lock:
                applied[0] = min(applied[0], lowest)

        def finish():
            arr = out.reshape(spec.shape)
            arr.flags.writeable = False
            weakref.finalize(arr, self._recycle, name, out).atexit = False
            self._cache[name] = (arr, applied[0])
            return arr

        return _gather([self._pool.submit(fetch, tr, cks) for tr, cks in self._groups(name)], finish)

    def _buffer(self, name: str, spec) -> np.ndarray:
        """A flat output array for a pull of ``name``: one whose earlier result is no longer referenced
        anywhere (its array was garbage-collected, so no caller can see it change), else a new one.
        Fresh arrays cost a page fault per 4 KiB on first write: ~0.1 s per AlexNet pull."""
        with self._lock:
            free = self._free.get(name)
            if free:
                return free.pop()
        return np.empty(spec.size, dtype=spec.dtype)

    def _recycle(self, name: str, buf: np.ndarray) -> None:
        with self._lock:
            free = self._free.setdefault(name, [])
            if len(free) < 2:
                free.append(buf)

    def pull_all(self, min_clock: int = 0) -> dict[str, np.ndarray]:
        """Blocking pull of every param."""
        futs = {s.name: self.pull(s.name, min_clock) for s in self.layout.specs}
        return {n: f.result() for n, f in futs.items()}

    def clock(self) -> int:
        """End the current clock: params not pushed during it get a zero gradient (so every shard can
        complete the clock), every shard learns the new clock. Returns the new clock value. Raises
        the first error of an earlier push."""
        self._check()
        with self._lock:
            missing = [s.name for s in self.layout.specs if s.name not in self._pushed]
            self._pushed = set()
            done = [f for f in self._push_futures if f.done()]
            self._push_futures = [f for f in self._push_futures if not f.done()]
        for f in done:
            f.result()
        c = self.clock_value
        for name in missing:
            parts = [self._pool.submit(tr.push, self.worker_id, c,
                                       [(ck.key, ZERO_GRADIENT, None) for ck in cks], self.deadline_s)
                     for tr, cks in self._groups(name)]
            self._push_futures.append(_gather(parts, lambda: None))
        self.clock_value = c + 1
        futs = [self._pool.submit(tr.clock, self.worker_id, self.clock_value, self.deadline_s)
                for tr in self.transports]
        self._known_min_clock = max(self._known_min_clock, min(f.result() for f in futs))
        return self.clock_value

    def flush(self) -> None:
        """Wait for every outstanding push (raises the first error)."""
        with self._lock:
            futs, self._push_futures = self._push_futures, []
        for f in futs:
            f.result()

    def barrier(self) -> None:
        """Wait until every worker has reached the same barrier (held on shard 0)."""
        self._check()
        self.transports[0].barrier(self.worker_id, self._barrier_id, self.deadline_s)
        self._barrier_id += 1

    # ---------------------------------------------------------------- statistics
    def mean_over_workers(self, name: str, values) -> np.ndarray:
        """The mean over all P workers of ``values`` (1-D, at most the tensor's size) through the
        STAT tensor ``name``, for the current clock: every worker must call it at the same clock
        (a worker that does not contributes zeros at ``clock()``). Blocks until all P have pushed;
        returns a float array of ``len(values)``. ValueError for an unknown or non-STAT tensor or
        too many values; ClusterError (naming the workers waited for) after ``deadline_s``."""
        spec = self.layout.spec_by_name.get(name)
        if spec is None or spec.role != STAT:
            raise ValueError(f"{name!r} is not a statistics tensor (role STAT) of this layout")
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if vals.size > spec.size:
            raise ValueError(f"{name!r} holds {spec.size} values, got {vals.size}")
        buf = np.zeros(spec.size, dtype=spec.dtype)
        buf[:vals.size] = vals
        self.push(name, buf, copy=False)
        # applied clock >= c + 1: this clock's average of every worker is in
        out = self.pull(name, min_clock=self.clock_value + 1).result(timeout=self.deadline_s + 5.0)
        return np.array(out[:vals.size], dtype=np.float64)

    # ---------------------------------------------------------------- snapshots
    def get_solver_state(self) -> dict[str, dict[str, np.ndarray]]:
        """The updater's per-element state as ``{param: {slot: ndarray of the param's shape}}``."""
        self._check()
        futs = [self._pool.submit(tr.get_solver_state, self.worker_id,
                                  [ck.key for ck in self.layout.by_shard[i]], self.deadline_s)
                for i, tr in enumerate(self.transports)]
        out: dict[str, dict[str, np.ndarray]] = {}
        for f in futs:
            for key, slot, arr in f.result():
                ck = self.layout.chunks[key]
                spec = self.layout.spec_by_name[ck.name]
                if arr.size != ck.size:
                    raise ValueError(f"state slot {slot!r} of {ck.name!r} is not per-element")
                full = out.setdefault(ck.name, {}).setdefault(slot, np.zeros(spec.size, arr.dtype))
                full[ck.start:ck.stop] = arr.reshape(-1)
        return {n: {s: a.reshape(self.layout.spec_by_name[n].shape) for s, a in d.items()}
                for n, d in out.items()}

    def set_solver_state(self, state: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Restore what :meth:`get_solver_state` returned (blocks)."""
        self._check()
        per_shard: dict[int, list] = {}
        for name, slots in state.items():
            for slot, arr in slots.items():
                flat = np.ascontiguousarray(arr).reshape(-1)
                for ck in self.layout.by_param[name]:
                    per_shard.setdefault(ck.shard, []).append((ck.key, slot, flat[ck.start:ck.stop]))
        futs = [self._pool.submit(self.transports[i].set_solver_state, self.worker_id, entries, self.deadline_s)
                for i, entries in per_shard.items()]
        for f in futs:
            f.result()

    # ---------------------------------------------------------------- shutdown
    def finish(self) -> None:
        """Flush pushes, pass a final barrier and leave every shard cleanly."""
        self.flush()
        self.barrier()
        self.close()

    def close(self, stop_servers: bool = False, skip_shards=()) -> None:
        """Leave every shard (best effort, all at once, within ``LEAVE_TIMEOUT_S``; shards in
        ``skip_shards`` and one whose heartbeat failed are not asked: they are dead or hung) and
        release threads and channels."""
        skip = set(skip_shards) | ({self._failure[1]} if self._failure else set())
        leaves = [threading.Thread(target=self._leave, args=(tr, stop_servers), daemon=True)
                  for i, tr in enumerate(self.transports) if i not in skip]
        for t in leaves:
            t.start()
        end = time.monotonic() + LEAVE_TIMEOUT_S
        for t in leaves:
            t.join(max(0.0, end - time.monotonic()))
        for tr in self.transports:
            tr.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _leave(self, tr, stop_servers):
        try:
            tr.leave(self.worker_id, stop_servers)
        except ClusterError:
            pass
