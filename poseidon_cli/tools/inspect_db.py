"""Summarise an LMDB of Datum: record count, image shape and storage, label histogram, first keys.

``inspect_db(db, first=5, scan=True) -> dict`` with keys ``path``, ``count``, ``shape`` (C, H, W of
the first record), ``storage`` ("uint8", "float", or "encoded"), ``labels`` ({label: count}, over
every record when ``scan``), ``first_keys``. Records that are not Datums raise ``DataError`` naming
the key.
"""
from __future__ import annotations

import collections
import os

from .._proto import caffe_pb2
from ..data.datum import datum_to_array, parse_datum
from ..data.lmdb_source import iter_records, open_env
from ..errors import DataError


def inspect_db(db, first: int = 5, scan: bool = True) -> dict:
    db = os.fspath(db)
    env = open_env(db)
    try:
        count = int(env.stat()["entries"])
        if count == 0:
            raise DataError(f"LMDB '{db}' is empty (0 records)")
        labels = collections.Counter()
        keys = []
        shape = storage = None
        parse = caffe_pb2.Datum.FromString
        for i, (key, value) in enumerate(iter_records(db, env)):
            if i < first:
                keys.append(key.decode("utf-8", "replace"))
            if shape is None:
                d = parse_datum(value, key, db)
                shape = tuple(datum_to_array(d, key, db).shape)
                storage = "encoded" if d.encoded else ("uint8" if d.data else "float")
            else:
                try:
                    d = parse(value)
                except Exception:
                    d = parse_datum(value, key, db)
            labels[int(d.label)] += 1
            if not scan and i + 1 >= first:
                break
    finally:
        env.close()
    return {"path": db, "count": count, "shape": shape, "storage": storage,
            "labels": dict(sorted(labels.items())), "first_keys": keys}


def format_report(info: dict) -> str:
    lines = [f"{info['path']}: {info['count']} records",
             f"  shape (C x H x W): {'x'.join(map(str, info['shape']))} ({info['storage']})",
             "  labels: " + ", ".join(f"{k}: {v}" for k, v in info["labels"].items()),
             "  first keys: " + ", ".join(info["first_keys"])]
    return "\n".join(lines)
