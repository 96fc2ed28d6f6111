"""Reading (and atomically writing) LMDB databases of Caffe ``Datum`` records, with Poseidon's
per-node partitioning.

Partitioning (``partition_source``), for a worker described by a ``RunContext`` (``num_clients``
clients x ``workers_per_client`` workers; global rank = client_id * T + worker_id):

- ``shared_file_system: true``: every client opens ``source`` itself; the worker starts at record
  ``rank`` and takes every ``world_size``-th record (records are dealt round-robin per record).
- ``shared_file_system: false`` (Poseidon's default) and ``num_clients > 1``: client k opens its own
  partition ``<source>_<k>`` (made by ``poseidon data partition``) and worker t of that client starts
  at record t and takes every T-th record.
- ``num_clients == 1`` (a single process, the default): there is nothing to partition, so the client
  opens ``source`` itself (NOT ``source_0``) whatever ``shared_file_system`` says, and its T workers
  start at records 0..T-1 with stride T. This is what makes ``poseidon train`` on one machine read the
  same DB as ``caffe train``.

Cursors walk records in key order (LMDB sorts keys bytewise) and wrap to the first record at the end,
so a stride that crosses the end continues from the beginning, exactly like a cursor that is advanced
``stride`` times with a wrap after each step.

Errors are ``DataError`` with one line: a missing DB names the exact path, the rule that produced it
and the tool that makes it; an empty DB, a directory that is not an LMDB, a LevelDB directory.
"""
from __future__ import annotations

import os
import threading
import shutil
from dataclasses import dataclass

from ..errors import DataError

#: Caffe opens LMDBs with a 1 TB map; LMDB only reserves address space, the file stays small.
READ_MAP_SIZE = 1 << 40


@dataclass(frozen=True)
class SourceSpec:
    """Which DB a worker opens and which of its records it takes."""
    path: str
    start: int
    stride: int
    rule: str  # one phrase explaining why this path (for error messages)
    partitioned: bool = False


def partition_source(source: str, context, shared_file_system: bool) -> SourceSpec:
    """Apply Poseidon's naming/striding rules (see module docstring) for one worker."""
    nc, t = int(context.num_clients), int(context.workers_per_client)
    if nc <= 1:
        return SourceSpec(source, context.rank, context.world_size,
                          "a single client reads 'source' itself")
    if shared_file_system:
        return SourceSpec(source, context.rank, context.world_size,
                          f"shared_file_system: true, so all {nc} clients read 'source' itself")
    path = f"{source}_{context.client_id}"
    return SourceSpec(path, context.worker_id, t,
                      f"shared_file_system: false, so client {context.client_id} of {nc} reads "
                      f"'<source>_{context.client_id}'", partitioned=True)


def is_lmdb_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb"))


def is_leveldb_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "CURRENT")) and not is_lmdb_dir(path)


def missing_db_error(spec: SourceSpec, num_parts: int | None = None) -> DataError:
    if spec.partitioned:
        base = spec.path.rsplit("_", 1)[0]
        parts = num_parts or "<num_clients>"
        hint = (f"make the partitions with `poseidon data partition {base} --parts {parts}` and put "
                f"{os.path.basename(spec.path)} on this host, or set shared_file_system: true")
    else:
        hint = ("make it with a `poseidon data` converter (convert-mnist, convert-cifar10, "
                "convert-imageset, digits)")
    return DataError(f"LMDB '{spec.path}' does not exist ({spec.rule})", hint)


def open_env(path: str, spec: SourceSpec | None = None, num_parts: int | None = None):
    """Open an LMDB directory read-only, with clear errors."""
    import lmdb  # noqa: PLC0415 (imported lazily: tools that never touch LMDB stay light)
    if not os.path.exists(path):
        raise missing_db_error(spec or SourceSpec(path, 0, 1, "given path"), num_parts)
    if is_leveldb_dir(path):
        raise leveldb_error(path)
    if not is_lmdb_dir(path):
        what = "a directory without data.mdb" if os.path.isdir(path) else "a file"
        raise DataError(f"'{path}' is not an LMDB database ({what})",
                        "point data_param.source at the directory a `poseidon data` converter wrote")
    try:
        return lmdb.open(path, readonly=True, lock=False, readahead=False, subdir=True,
                         map_size=READ_MAP_SIZE, max_readers=512)
    except lmdb.Error as exc:
        raise DataError(f"'{path}': cannot open LMDB ({exc})") from None


# LMDB allows one environment per database per process; readers of the same DB in one process
# (several workers, or train and test nets reading one DB) share it, reference-counted.
# Re-entrant: a garbage collection inside open_env (under the lock) may run an old Data layer's
# finalizer, which releases its environment on the same thread; a plain Lock deadlocked there.
_SHARED_ENVS: dict = {}
_SHARED_LOCK = threading.RLock()


def acquire_env(path: str, spec: SourceSpec | None = None, num_parts: int | None = None):
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        entry = _SHARED_ENVS.get(key)
        if entry is None:
            entry = _SHARED_ENVS[key] = [open_env(path, spec, num_parts), 0]
        entry[1] += 1
        return entry[0]


def release_env(path: str):
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        entry = _SHARED_ENVS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _SHARED_ENVS[key]
            entry[0].close()


def leveldb_error(path: str) -> DataError:
    return DataError(f"'{path}' is a LevelDB database; poseidon reads LMDB only",
                     "re-create it as LMDB with a `poseidon data` converter (or Caffe's tools with "
                     "--backend=lmdb) and set `backend: LMDB` in data_param")


def count_records(path: str) -> int:
    env = open_env(path)
    try:
        return int(env.stat()["entries"])
    finally:
        env.close()


def iter_records(path: str, env=None):
    """Yield ``(key, value)`` bytes of every record of the DB at ``path`` in key order, once."""
    own = env is None
    env = env or open_env(path)
    try:
        with env.begin(buffers=False) as txn:
            for key, value in txn.cursor():
                yield key, value
    finally:
        if own:
            env.close()


class LMDBReader:
    """An endless, wrapping, strided cursor over one LMDB.

    ``next_records(n)`` returns the next ``n`` ``(key, value)`` pairs taken by this worker: the
    record at index ``start`` first, then every ``stride``-th record, wrapping at the end.
    ``skip(k)`` advances by ``k`` of this worker's records (``rand_skip``). ``count`` is the number
    of records in the DB, ``epoch`` how many times the cursor wrapped.

    ``buffers=True`` returns keys/values as memoryviews into the memory map (no copy); they stay
    valid until ``close()``, but callers should consume them at once.

    Not thread-safe: one reader per consumer thread (LMDB read transactions are per thread).
    """

    def __init__(self, path: str, start: int = 0, stride: int = 1, spec: SourceSpec | None = None,
                 num_parts: int | None = None, buffers: bool = False):
        self.buffers = buffers
        if stride < 1 or start < 0:
            raise ValueError(f"bad start/stride {start}/{stride}")
        self.path = path
        self.stride = stride
        self.env = acquire_env(path, spec, num_parts)
        self.count = int(self.env.stat()["entries"])
        if self.count == 0:
            release_env(path)
            raise DataError(f"LMDB '{path}' is empty (0 records)",
                            "was the converter interrupted? re-run it")
        self.epoch = 0
        self._txn = None
        self._cur = None
        self._thread = None
        self._start = start

    def _ensure_cursor(self):
        # The transaction is created lazily in the thread that reads (LMDB binds read txns to it).
        if self._cur is None:
            self._txn = self.env.begin(buffers=self.buffers)
            self._cur = self._txn.cursor()
            self._cur.first()
            self._advance(self._start)

    def _advance(self, steps: int):
        cur = self._cur
        # Whole laps are skipped arithmetically; only the remainder walks the cursor.
        laps, steps = divmod(steps, self.count)
        self.epoch += laps
        for _ in range(steps):
            if not cur.next():
                cur.first()
                self.epoch += 1

    def peek(self):
        """The ``(key, value)`` the next ``next_records`` call returns first, without consuming it."""
        self._ensure_cursor()
        return self._cur.key(), self._cur.value()

    def skip(self, k: int):
        self._ensure_cursor()
        self._advance(k * self.stride)

    def next_records(self, n: int):
        self._ensure_cursor()
        cur = self._cur
        out = []
        append = out.append
        if self.stride == 1:
            for _ in range(n):
                append(cur.item())
                if not cur.next():
                    cur.first()
                    self.epoch += 1
            return out
        for _ in range(n):
            append(cur.item())
            self._advance(self.stride)
        return out

    def close(self):
        if self._txn is not None:
            try:
                self._txn.abort()
            except Exception:  # already closed with the env
                pass
            self._txn = self._cur = None
        if self.env is not None:
            release_env(self.path)
            self.env = None


class AtomicLMDBWriter:
    """Write a new LMDB at ``path`` so that no partial DB is ever left there.

    Records go into ``<path>.partial-<pid>`` (a sibling directory) in transactions of ``txn_size``
    records; ``commit()`` renames it to ``path``; ``abort()`` (or leaving the ``with`` block with an
    exception) deletes it. The map grows by doubling on ``MapFullError``, so no map size guess is
    needed. Refuses to overwrite an existing ``path`` (``DataError``) unless ``overwrite``.
    """

    def __init__(self, path: str, txn_size: int = 1000, overwrite: bool = False,
                 map_size: int = 1 << 28):
        import lmdb  # noqa: PLC0415
        self._lmdb = lmdb
        self.path = os.path.abspath(os.fspath(path))
        if os.path.exists(self.path) and not overwrite:
            raise DataError(f"output '{self.path}' already exists",
                            "delete it or choose another output name")
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise DataError(f"output directory '{parent}' does not exist",
                            "create it first or write elsewhere")
        self.tmp = f"{self.path}.partial-{os.getpid()}"
        if os.path.exists(self.tmp):
            shutil.rmtree(self.tmp)
        self.overwrite = overwrite
        self.map_size = map_size
        self.env = lmdb.open(self.tmp, map_size=map_size, subdir=True, meminit=False,
                             map_async=True, writemap=False)
        self.txn_size = txn_size
        self._pending = []
        self.written = 0
        self._done = False

    def put(self, key, value: bytes):
        self._pending.append((key.encode() if isinstance(key, str) else key, value))
        if len(self._pending) >= self.txn_size:
            self.flush()

    def flush(self):
        if not self._pending:
            return
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self._pending:
                        txn.put(k, v)
                break
            except self._lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)
        self.written += len(self._pending)
        self._pending = []

    def commit(self):
        self.flush()
        self.env.sync(True)
        self.env.close()
        if self.overwrite and os.path.exists(self.path):
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)
        self._done = True

    def abort(self):
        if self._done:
            return
        self._done = True
        try:
            self.env.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False
