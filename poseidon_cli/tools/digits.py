"""scikit-learn's bundled 8x8 digits (1,797 images, no download) -> train/test LMDBs.

A small, offline stand-in for MNIST: pixel values 0..16 are stretched to 0..255 (v * 255 // 16),
images are resized to ``size`` x ``size`` with bilinear filtering (28 by default, so LeNet's
prototxt fits unchanged; 8 keeps them as they are), and the last ``test_count`` images form the
test set. Output: ``<out>/digits_train_lmdb`` and ``<out>/digits_test_lmdb``, keys ``"%08d"``.
Needs scikit-learn (an optional extra); Pillow only when resizing.
"""
from __future__ import annotations

import os

import numpy as np

from ..data.datum import array_to_datum
from ..data.lmdb_source import AtomicLMDBWriter
from ..errors import DataError


def load_digits_uint8(size: int = 28):
    """(images uint8 (N, 1, size, size), labels int (N,))."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise DataError("the digits data set needs scikit-learn, which is not installed",
                        "pip install scikit-learn") from None
    d = load_digits()
    imgs = (d.images.astype(np.int64) * 255 // 16).astype(np.uint8)  # (N, 8, 8)
    if size != 8:
        from ..data.datum import _pil  # noqa: PLC0415
        Image = _pil()
        imgs = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
                         for im in imgs])
    return imgs[:, None], d.target.astype(np.int64)


def write_digits(out_dir, size: int = 28, test_count: int = 297) -> dict:
    out = os.fspath(out_dir)
    if size < 1:
        raise DataError(f"--size must be >= 1 pixel, got {size}", "use e.g. --size 28")
    os.makedirs(out, exist_ok=True)
    images, labels = load_digits_uint8(size)
    if not 0 < test_count < len(labels):
        raise DataError(f"--test-count must be between 1 and {len(labels) - 1}")
    split = len(labels) - test_count
    paths = {"train": os.path.join(out, "digits_train_lmdb"),
             "test": os.path.join(out, "digits_test_lmdb")}
    writers = []
    try:
        writers = [AtomicLMDBWriter(paths["train"]), AtomicLMDBWriter(paths["test"])]
        for i in range(len(labels)):
            w, j = (writers[0], i) if i < split else (writers[1], i - split)
            w.put(f"{j:08d}", array_to_datum(images[i], int(labels[i])).SerializeToString())
        for w in writers:
            w.flush()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        w.commit()
    return {**paths, "train_count": split, "test_count": test_count, "shape": images.shape[1:]}
