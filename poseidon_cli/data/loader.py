"""Turning ``(key, value)`` LMDB records into transformed batches (the prefetch thread's work).

``DatumBatchLoader(reader, batch_size, transformer, color=None)``:
- ``image_shape``: the (C, H, W) of the first record this worker reads; every later record must
  have the same shape (``DataError`` naming the key otherwise).
- ``next_batch() -> (data float32 (N, C, H', W'), labels float32 (N,))``.

Fast path for raw uint8 records (Caffe's converters): parse every Datum, join their ``data`` bytes
and view them with one ``np.frombuffer``, then transform the whole batch at once. ``float_data`` and
encoded (JPEG/PNG) records take a per-record path.
"""
from __future__ import annotations

import collections

import numpy as np

from .._proto import caffe_pb2
from ..errors import DataError
from .datum import _where, datum_to_array, parse_datum


class DatumBatchLoader:
    def __init__(self, reader, batch_size: int, transformer, color=None, source: str | None = None):
        self.reader = reader
        self.batch_size = int(batch_size)
        self.transformer = transformer
        self.color = color
        self.source = source or reader.path
        key, value = reader.peek()
        first = parse_datum(value, key, self.source)
        self.encoded = bool(first.encoded)
        self.image_shape = tuple(datum_to_array(first, key, self.source, color).shape)
        self._header = (first.channels, first.height, first.width)
        self._nbytes = int(np.prod(self.image_shape))
        self._staging = None
        self._pool = collections.deque()  # recycled output arrays (append/pop are thread-safe)

    def _bad_shape(self, key, got):
        return DataError(f"{_where(key, self.source)}: record shape {'x'.join(map(str, got))} "
                         f"differs from the first record's {'x'.join(map(str, self.image_shape))}",
                         "every record of a DB must have the same channels/height/width")

    def read_images(self, records):
        """Decode records into an (N, C, H, W) array (uint8 when possible) and int labels."""
        n = len(records)
        labels = np.empty(n, dtype=np.float32)
        parse = caffe_pb2.Datum.FromString
        datums = []
        raw = not self.encoded
        for i, (key, value) in enumerate(records):
            try:
                d = parse(value)
            except Exception:
                d = parse_datum(value, key, self.source)  # raises the one-line DataError
            datums.append(d)
            labels[i] = d.label
            if raw and (d.encoded or len(d.data) != self._nbytes
                        or (d.channels, d.height, d.width) != self._header):
                raw = False
        if raw and self._nbytes < 16384:
            # Small images: one join + one frombuffer beats n numpy assignments.
            buf = b"".join([d.data for d in datums])
            return np.frombuffer(buf, dtype=np.uint8).reshape((n,) + self.image_shape), labels
        if raw:
            images = self._stage(n)
            for i, d in enumerate(datums):
                images[i] = np.frombuffer(d.data, dtype=np.uint8).reshape(self.image_shape)
            return images, labels
        images = None
        for i, ((key, _), d) in enumerate(zip(records, datums)):
            if not d.encoded and (d.channels, d.height, d.width) != self.image_shape:
                raise self._bad_shape(key, (d.channels, d.height, d.width))
            if not d.encoded and not d.data and not d.float_data:
                parse_datum(d.SerializeToString(), key, self.source)  # "holds no pixels"
            img = datum_to_array(d, key, self.source, self.color)
            if img.shape != self.image_shape:
                raise self._bad_shape(key, img.shape)
            if images is None:
                images = np.empty((n,) + self.image_shape,
                                  dtype=np.float32 if img.dtype != np.uint8 else np.uint8)
            if img.dtype != images.dtype:  # a DB mixing float_data and data records
                images = images.astype(np.float32)
            images[i] = img
        return images, labels

    def _stage(self, n):
        # Reused between batches: fresh multi-MB allocations cost page faults on every batch.
        if self._staging is None or self._staging.shape[0] != n:
            self._staging = np.empty((n,) + self.image_shape, dtype=np.uint8)
        return self._staging

    def next_batch(self):
        records = self.reader.next_records(self.batch_size)
        images, labels = self.read_images(records)
        out = None
        try:
            out = self._pool.pop()
        except IndexError:
            pass
        return self.transformer.transform_batch(images, out=out), labels

    def recycle(self, data):
        """Hand a batch's data array back for reuse once its contents have been copied out."""
        if len(self._pool) < 2:
            self._pool.append(data)

    __call__ = next_batch
