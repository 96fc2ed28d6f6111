"""Split an LMDB into per-client partitions ``DB_0 .. DB_{P-1}`` (Poseidon's ``partition_data``,
which only did LevelDB; this one does LMDB).

Record i (in key order) goes to partition ``i mod P`` with its key unchanged, so each partition
keeps the original relative order. Client k of a ``shared_file_system: false`` cluster then reads
``DB_k``. Every output is written to a temporary directory and renamed into place only when all
partitions are complete; existing outputs are refused before anything is written.
"""
from __future__ import annotations

import os

from ..data.lmdb_source import AtomicLMDBWriter, count_records, iter_records, open_env
from ..errors import DataError
from .progress import progress


def partition_paths(db: str, parts: int) -> list[str]:
    return [f"{os.fspath(db).rstrip(os.sep)}_{k}" for k in range(parts)]


def partition_db(db, parts: int) -> list[tuple[str, int]]:
    """Write the partitions; returns [(path, record count)]."""
    db = os.fspath(db).rstrip(os.sep)
    if parts < 1:
        raise DataError(f"--parts must be >= 1, got {parts}")
    env = open_env(db)
    total = int(env.stat()["entries"])
    if total == 0:
        env.close()
        raise DataError(f"LMDB '{db}' is empty (0 records); nothing to partition")
    paths = partition_paths(db, parts)
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        env.close()
        raise DataError(f"partition output '{existing[0]}' already exists",
                        "delete the old partitions first")
    writers = []
    try:
        writers = [AtomicLMDBWriter(p) for p in paths]
        with progress(total, f"partition into {parts}") as bar:
            for i, (key, value) in enumerate(iter_records(db, env)):
                writers[i % parts].put(key, value)
                if i % 1000 == 999:
                    bar.update(1000)
        for w in writers:
            w.flush()
    except BaseException:
        for w in writers:
            w.abort()
        env.close()
        raise
    env.close()
    counts = [w.written for w in writers]
    for w in writers:
        w.commit()
    return list(zip(paths, counts))


__all__ = ["partition_db", "partition_paths", "count_records"]
