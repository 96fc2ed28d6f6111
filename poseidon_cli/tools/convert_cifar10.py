"""CIFAR-10 binary batches -> two LMDBs of Datum, like Caffe's ``convert_cifar_data``.

Input directory (or its ``cifar-10-batches-bin`` subdirectory): ``data_batch_1.bin`` ..
``data_batch_5.bin`` and ``test_batch.bin``; each record is 3073 bytes: one label byte (0-9) then
1024 R, 1024 G, 1024 B bytes (32 x 32 planes). Output: ``<out>/cifar10_train_lmdb`` (keys
``"%05d"`` of fileid * 10000 + item) and ``<out>/cifar10_test_lmdb`` (keys ``"%05d"`` of item); each
Datum is 3 x 32 x 32 uint8 in the file's R, G, B plane order (Caffe keeps it).

Errors (``DataError``, nothing written): missing batch file, a size that is not a whole number of
records (truncated), a label byte > 9 (not a CIFAR-10 file), existing outputs.
"""
from __future__ import annotations

import os

import numpy as np

from ..data.datum import array_to_datum
from ..data.lmdb_source import AtomicLMDBWriter
from ..errors import DataError
from .progress import progress

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def read_cifar_batch(path):
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) of one binary batch file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"'{path}': no such file",
                        "download and unpack the CIFAR-10 binary version (cifar-10-binary.tar.gz)")
    with open(path, "rb") as fh:
        buf = fh.read()
    if not buf or len(buf) % RECORD:
        raise DataError(f"'{path}': {len(buf)} bytes is not a whole number of {RECORD}-byte CIFAR-10 "
                        "records (truncated or not a CIFAR-10 binary batch)")
    recs = np.frombuffer(buf, dtype=np.uint8).reshape(-1, RECORD)
    labels = recs[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"'{path}': record {int(bad[0])} has label byte {int(labels[bad[0]])} "
                        "(CIFAR-10 labels are 0-9); is this the CIFAR-100 or Python version?")
    return recs[:, 1:].reshape(-1, 3, 32, 32), labels


def _input_dir(input_dir) -> str:
    d = os.fspath(input_dir)
    sub = os.path.join(d, "cifar-10-batches-bin")
    if not os.path.isfile(os.path.join(d, TEST_FILE)) and os.path.isdir(sub):
        return sub
    return d


def convert_cifar10(input_dir, output_dir) -> dict:
    """Write both LMDBs; returns {"train": path, "test": path, "train_count": n, "test_count": m}."""
    src = _input_dir(input_dir)
    out = os.fspath(output_dir)
    if not os.path.isdir(out):
        raise DataError(f"output directory '{out}' does not exist", "create it first")
    # Read and validate every input before writing anything.
    train = [read_cifar_batch(os.path.join(src, f)) for f in TRAIN_FILES]
    test = read_cifar_batch(os.path.join(src, TEST_FILE))
    paths = {"train": os.path.join(out, "cifar10_train_lmdb"),
             "test": os.path.join(out, "cifar10_test_lmdb")}
    total = sum(len(lbl) for _, lbl in train) + len(test[1])
    writers = []
    try:
        writers.append(AtomicLMDBWriter(paths["train"]))
        writers.append(AtomicLMDBWriter(paths["test"]))
        with progress(total, "convert-cifar10") as bar:
            for fileid, (images, labels) in enumerate(train):
                for item in range(len(labels)):
                    writers[0].put(f"{fileid * 10000 + item:05d}",
                                   array_to_datum(images[item], int(labels[item])).SerializeToString())
                bar.update(len(labels))
            images, labels = test
            for item in range(len(labels)):
                writers[1].put(f"{item:05d}",
                               array_to_datum(images[item], int(labels[item])).SerializeToString())
            bar.update(len(labels))
        for w in writers:
            w.flush()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.commit()
    return {**paths, "train_count": total - len(test[1]), "test_count": len(test[1])}
