"""MNIST IDX files -> LMDB of Datum, like Caffe's ``convert_mnist_data``.

IDX format: a big-endian uint32 magic (2051 = 0x00000803 for uint8 images with 3 dims, 2049 =
0x00000801 for uint8 labels with 1 dim), then one big-endian uint32 per dimension, then the bytes.
``.gz`` files are read through gzip. Records: key ``"%08d"`` of the item index, Datum 1 x rows x cols
uint8 ``data`` and the label.

Errors (``DataError``, nothing written): missing file, wrong magic, truncated file, image and label
counts that differ, existing output.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..data.datum import array_to_datum
from ..data.lmdb_source import AtomicLMDBWriter
from ..errors import DataError
from .progress import progress

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


def _read_bytes(path) -> bytes:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"'{path}': no such file", "download the MNIST IDX files first")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            return fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"'{path}': cannot read ({exc})") from None


def read_idx(path, magic: int) -> np.ndarray:
    """An IDX file of uint8 values as an array of its declared shape (DataError if malformed)."""
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"'{path}': truncated IDX file ({len(buf)} bytes, no header)")
    got = int.from_bytes(buf[:4], "big")
    if got != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise DataError(f"'{path}': wrong magic number {got} for an IDX {kind} file "
                        f"(expected {magic})", "are the image and label files swapped?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"'{path}': truncated IDX header ({len(buf)} of {header} bytes)")
    dims = tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    need = int(np.prod(dims))
    have = len(buf) - header
    if have < need:
        raise DataError(f"'{path}': truncated IDX file: {'x'.join(map(str, dims))} needs {need} "
                        f"bytes of data, found {have}")
    return np.frombuffer(buf, dtype=np.uint8, count=need, offset=header).reshape(dims)


def convert_mnist(images_path, labels_path, out_path) -> int:
    """Write the LMDB; returns the number of records."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"'{images_path}' has {len(images)} images but '{labels_path}' has "
                        f"{len(labels)} labels")
    with AtomicLMDBWriter(out_path) as db, progress(len(images), "convert-mnist") as bar:
        for i, (img, label) in enumerate(zip(images, labels)):
            db.put(f"{i:08d}", array_to_datum(img[None], int(label)).SerializeToString())
            if i % 1000 == 999:
                bar.update(1000)
    return len(images)
