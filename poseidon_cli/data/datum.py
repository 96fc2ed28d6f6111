"""Caffe ``Datum`` records <-> NumPy arrays.

A Datum (caffe.proto: channels=1, height=2, width=3, data=4, label=5, float_data=6, encoded=7) holds
one image as CHW planar uint8 bytes in ``data``, or as floats in ``float_data`` when ``data`` is
empty, or (``encoded: true``) a JPEG/PNG file in ``data`` that Caffe decodes with OpenCV into BGR
planes. This module is the only place that knows those rules.

Functions:
- ``parse_datum(value, key=None, source=None) -> Datum``; raises ``DataError`` naming the key when
  the bytes are not a Datum.
- ``datum_to_array(datum, key=None, source=None, color=None) -> ndarray (C, H, W)``: uint8 for
  ``data``/encoded, float32 for ``float_data``.
- ``array_to_datum(array, label=0) -> Datum``: uint8 arrays go to ``data``, floats to ``float_data``.
- ``encode_image(array_chw_bgr, fmt) -> bytes`` and ``decode_image(bytes, color=None) -> CHW uint8
  (BGR)``: Pillow, imported lazily; a clear ``DataError`` when Pillow is missing.
"""
from __future__ import annotations

import io

import numpy as np

from .._proto import caffe_pb2
from ..errors import DataError


def _where(key, source) -> str:
    parts = []
    if source is not None:
        parts.append(str(source))
    if key is not None:
        k = bytes(key).decode("utf-8", "replace") if not isinstance(key, str) else key
        parts.append(f"key '{k}'")
    return ": ".join(parts) if parts else "record"


def parse_datum(value, key=None, source=None):
    """Parse one LMDB value as a ``Datum``; ``DataError`` naming ``source``/``key`` if it is not."""
    datum = caffe_pb2.Datum()
    try:
        datum.ParseFromString(bytes(value))
    except Exception as exc:  # protobuf raises DecodeError (a subclass of Exception) or RuntimeError
        raise DataError(f"{_where(key, source)}: record is not a Caffe Datum ({exc})",
                        "was this database written by a Caffe/poseidon converter?") from None
    if not datum.encoded and not datum.data and not datum.float_data:
        raise DataError(f"{_where(key, source)}: Datum holds no pixels (empty data and float_data)",
                        "was this database written by a Caffe/poseidon converter?")
    return datum


def datum_shape(datum) -> tuple:
    """(C, H, W) as declared by the Datum's header fields (not meaningful for encoded records)."""
    return (datum.channels, datum.height, datum.width)


def datum_to_array(datum, key=None, source=None, color=None) -> np.ndarray:
    """The Datum's image as a (C, H, W) array.

    uint8 when the pixels are in ``data`` (raw or encoded), float32 when they are in ``float_data``.
    ``color`` applies to encoded records only: True forces 3 channels, False forces 1, None keeps
    the file's own (OpenCV's "native" decode). Raises ``DataError`` when the byte count does not match
    channels*height*width.
    """
    if datum.encoded:
        return decode_image(datum.data, color=color, where=_where(key, source))
    c, h, w = datum_shape(datum)
    if datum.data:
        if len(datum.data) != c * h * w:
            raise DataError(f"{_where(key, source)}: Datum data has {len(datum.data)} bytes but "
                            f"channels*height*width = {c}*{h}*{w} = {c * h * w}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data) != c * h * w:
        raise DataError(f"{_where(key, source)}: Datum float_data has {len(datum.float_data)} values "
                        f"but channels*height*width = {c}*{h}*{w} = {c * h * w}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)


def array_to_datum(array, label: int = 0):
    """A Datum holding ``array`` (C, H, W) or (H, W) (one channel) and ``label``.

    uint8 arrays are stored as ``data`` bytes (Caffe's converters), anything else as ``float_data``.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"a Datum holds a (C, H, W) image, got shape {a.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(s) for s in a.shape)
    if a.dtype == np.uint8:
        datum.data = np.ascontiguousarray(a).tobytes()
    else:
        datum.float_data.extend(a.astype(np.float32).ravel().tolist())
    datum.label = int(label)
    return datum


def _pil():
    try:
        from PIL import Image  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise DataError("decoding/encoding JPEG or PNG images needs Pillow, which is not installed",
                        "pip install pillow, or convert without --encoded") from None
    return Image


def decode_image(payload, color=None, where: str = "image") -> np.ndarray:
    """Decode a JPEG/PNG byte string into CHW uint8 in Caffe's channel order (BGR for colour).

    ``color``: True -> 3 channels, False -> 1 channel, None -> grayscale files stay 1 channel and
    everything else becomes 3 (OpenCV's IMREAD_ANYCOLOR).
    """
    Image = _pil()
    try:
        img = Image.open(io.BytesIO(bytes(payload)))
        img.load()
    except Exception as exc:
        raise DataError(f"{where}: cannot decode encoded image ({exc.__class__.__name__}: {exc})") from None
    return pil_to_chw(img, color)


def pil_to_chw(img, color=None) -> np.ndarray:
    """A PIL image as CHW uint8, BGR planes for colour (what OpenCV gives Caffe)."""
    gray = img.mode in ("L", "1", "I", "I;16", "F") if color is None else not color
    if gray:
        arr = np.asarray(img.convert("L"), dtype=np.uint8)
        return arr[None].copy()
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, RGB)
    return np.ascontiguousarray(arr[:, :, ::-1].transpose(2, 0, 1))


def encode_image(chw: np.ndarray, fmt: str = "png") -> bytes:
    """Encode a CHW uint8 image (1 channel, or 3 BGR planes) as PNG or JPEG bytes."""
    Image = _pil()
    a = np.asarray(chw, dtype=np.uint8)
    if a.shape[0] == 1:
        img = Image.fromarray(np.ascontiguousarray(a[0]))  # 2-D uint8 -> mode "L"
    else:
        img = Image.fromarray(np.ascontiguousarray(a[::-1].transpose(1, 2, 0)))
    buf = io.BytesIO()
    fmt = fmt.lower()
    img.save(buf, format="JPEG" if fmt in ("jpg", "jpeg") else fmt.upper())
    return buf.getvalue()

