"""The per-pixel mean image of an LMDB, as Caffe's ``compute_image_mean`` writes it.

Output: a BlobProto with legacy dims num=1, channels, height, width and ``data`` = sum / count in CHW
order on the 0-255 scale (float32), readable by Caffe and by ``transform_param.mean_file``. Encoded
records are decoded (native colour). Every record must have the first record's shape (DataError
naming the key otherwise).
"""
from __future__ import annotations

import os

import numpy as np

from .. import config
from .._proto import caffe_pb2
from ..data.datum import datum_to_array, parse_datum
from ..data.lmdb_source import iter_records, open_env
from ..errors import DataError
from .progress import progress


def compute_mean(db) -> np.ndarray:
    """float64 (C, H, W) mean over every record of ``db``."""
    db = os.fspath(db)
    env = open_env(db)
    try:
        total = int(env.stat()["entries"])
        if total == 0:
            raise DataError(f"LMDB '{db}' is empty (0 records); no mean to compute")
        acc = None
        n = 0
        with progress(total, "compute-mean") as bar:
            for key, value in iter_records(db, env):
                img = datum_to_array(parse_datum(value, key, db), key, db)
                if acc is None:
                    acc = np.zeros(img.shape, dtype=np.float64)
                elif img.shape != acc.shape:
                    raise DataError(f"{db}: key '{key.decode('utf-8', 'replace')}': record shape "
                                    f"{'x'.join(map(str, img.shape))} differs from the first "
                                    f"record's {'x'.join(map(str, acc.shape))}")
                acc += img
                n += 1
                if n % 1000 == 0:
                    bar.update(1000)
    finally:
        env.close()
    return acc / n


def mean_to_blobproto(mean: np.ndarray):
    blob = caffe_pb2.BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = (int(s) for s in mean.shape)
    blob.data.extend(np.asarray(mean, dtype=np.float32).ravel().tolist())
    return blob


def write_mean(db, out_path) -> np.ndarray:
    """Compute and write the mean file atomically; returns the mean (float64 C, H, W)."""
    mean = compute_mean(db)
    out_dir = os.path.dirname(os.path.abspath(os.fspath(out_path)))
    if not os.path.isdir(out_dir):
        raise DataError(f"output directory '{out_dir}' does not exist",
                        "create it first or write the mean file elsewhere")
    config.write_binary(mean_to_blobproto(mean), os.fspath(out_path))
    return mean
