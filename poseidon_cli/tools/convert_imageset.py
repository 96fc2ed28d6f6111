"""An image list -> LMDB of Datum, like Caffe's ``convert_imageset``.

``LIST`` has one ``<path> <label>`` per line (the label is the last space-separated token, so paths
may contain spaces; blank lines and ``#`` comments are skipped); paths are relative to ``ROOT``.
Images are read with Pillow and stored as OpenCV would give them to Caffe: colour as B, G, R planes,
``gray`` as one plane. ``resize_height``/``resize_width`` (both > 0) resize with bilinear filtering
(OpenCV's INTER_LINEAR does not antialias when shrinking, Pillow does: pixels may differ slightly
from Caffe's for downscaled images). ``shuffle`` permutes the lines with ``seed`` first. Keys are
``"%08d_<path as written in the list>"`` of the line index after shuffling.

``encoded``: store the compressed file instead of pixels (Datum ``encoded: true``, header fields
unset, as BVLC does); the original file bytes are kept when there is no resize/gray conversion and
its format matches ``encode_type`` (or ``encode_type`` is empty), else the image is re-encoded.

Errors (``DataError``, nothing written): missing list, malformed line (names the line), missing or
undecodable image (names the line and file), existing output, Pillow not installed.
"""
from __future__ import annotations

import os

import numpy as np

from .._proto import caffe_pb2
from ..data.datum import _pil, array_to_datum, encode_image
from ..data.image_list import load_image, read_image_list
from ..data.lmdb_source import AtomicLMDBWriter
from ..errors import DataError
from .progress import progress


def convert_imageset(root, list_path, out_path, resize_height: int = 0, resize_width: int = 0,
                     gray: bool = False, shuffle: bool = False, seed: int = 0,
                     encoded: bool = False, encode_type: str = "") -> int:
    """Write the LMDB; returns the number of records."""
    entries = read_image_list(list_path)
    if (resize_height > 0) != (resize_width > 0):
        raise DataError("give both --resize-height and --resize-width, or neither")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    _pil()  # fail before creating the output when Pillow is missing
    root = os.fspath(root)
    with AtomicLMDBWriter(out_path) as db, progress(len(entries), "convert-imageset") as bar:
        for i, (rel, label) in enumerate(entries):
            full = os.path.join(root, rel)
            where = f"{list_path} entry {i} "
            if encoded:
                value = _encoded_datum(full, label, gray, resize_height, resize_width,
                                       encode_type, where)
            else:
                img = load_image(full, not gray, resize_height, resize_width, where)
                value = array_to_datum(img, label).SerializeToString()
            db.put(f"{i:08d}_{rel}", value)
            bar.update(1)
    return len(entries)


def _encoded_datum(full, label, gray, height, width, encode_type, where) -> bytes:
    ext = os.path.splitext(full)[1].lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    want = encode_type.lower().lstrip(".")
    want = "jpg" if want == "jpeg" else want
    img = load_image(full, not gray, height, width, where)  # validates the file in any case
    if not gray and height <= 0 and (not want or want == ext):
        with open(full, "rb") as fh:
            payload = fh.read()
    else:
        payload = encode_image(img, want or ext or "png")
    datum = caffe_pb2.Datum()
    datum.data = payload
    datum.label = int(label)
    datum.encoded = True
    return datum.SerializeToString()
