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
from ..data.datum import _pil, array_to_datum, encode_image, pil_to_chw
from ..data.lmdb_source import AtomicLMDBWriter
from ..errors import DataError
from .progress import progress


def read_image_list(list_path):
    """[(path, label)] from a Caffe image list (DataError naming the bad line)."""
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataError(f"image list '{list_path}': no such file")
    entries = []
    with open(list_path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path, sep, label = text.rpartition(" ")
            try:
                if not sep or not path.strip():
                    raise ValueError
                entries.append((path.strip(), int(label)))
            except ValueError:
                raise DataError(f"{list_path}:{lineno}: expected '<image path> <integer label>', "
                                f"got {text!r}") from None
    if not entries:
        raise DataError(f"image list '{list_path}' has no entries")
    return entries


def load_image(path, color: bool = True, height: int = 0, width: int = 0, where: str = ""):
    """Read an image file as CHW uint8 (BGR planes or one gray plane), optionally resized."""
    Image = _pil()
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{where}'{path}': no such image file") from None
    except Exception as exc:
        raise DataError(f"{where}'{path}': cannot decode image ({exc.__class__.__name__})") from None
    img = img.convert("RGB" if color else "L")
    if height > 0 and width > 0 and img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return pil_to_chw(img, color)


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
