"""Blob: a named pair of same-shaped arrays, ``data`` (values) and ``diff`` (gradients).

Shapes are tuples of ints (Caffe's N,C,H,W for images, any rank allowed). Arrays are float32 on the
blob's array module (NumPy or CuPy). ``reshape`` reallocates only when the element count grows, like
Caffe, and keeps the arrays C-contiguous. ``share_data``/``share_diff`` make two blobs alias the same
arrays (used for in-place layers and for test nets sharing the train net's weights).
"""
from __future__ import annotations

import numpy as np

from . import backend


class Blob:
    __slots__ = ("_shape", "_data", "_diff", "xp", "dtype")

    def __init__(self, shape=(), xp=None, dtype=np.float32):
        self.xp = xp or backend.default_xp()
        self.dtype = dtype
        self._shape = tuple(int(s) for s in shape)
        self._data = self.xp.zeros(self._shape, dtype=dtype)
        self._diff = self.xp.zeros(self._shape, dtype=dtype)

    # -- shape -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._shape

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) if self._shape else 1

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def num(self):
        return self._shape[0] if self._shape else 1

    # Caffe's legacy accessors (pycaffe blob.channels...): axes past the blob's rank read as 1.
    @property
    def channels(self):
        return self._shape[1] if len(self._shape) > 1 else 1

    @property
    def height(self):
        return self._shape[2] if len(self._shape) > 2 else 1

    @property
    def width(self):
        return self._shape[3] if len(self._shape) > 3 else 1

    def reshape(self, *shape):
        """Give the blob a new shape; contents are undefined if the count changed."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"negative blob dimension in {shape}")
        if shape == self._shape:
            return
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count == self._data.size:
            self._data = self._data.reshape(shape)
            self._diff = self._diff.reshape(shape)
        else:
            self._data = self.xp.zeros(shape, dtype=self.dtype)
            self._diff = self.xp.zeros(shape, dtype=self.dtype)
        self._shape = shape

    def reshape_like(self, other: "Blob"):
        self.reshape(other.shape)

    # -- arrays ------------------------------------------------------------------------------------
    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._data[...] = value

    @property
    def diff(self):
        return self._diff

    @diff.setter
    def diff(self, value):
        self._diff[...] = value

    def set_data_array(self, arr):
        """Replace the data array object itself (shape must match)."""
        if tuple(arr.shape) != self._shape:
            raise ValueError(f"shape {tuple(arr.shape)} != blob shape {self._shape}")
        self._data = arr

    def share_data(self, other: "Blob"):
        """Alias ``other``'s data array (same count required)."""
        if other.count != self.count:
            raise ValueError(f"cannot share data of {other.shape} with {self.shape}")
        self._data = other._data.reshape(self._shape)

    def share_diff(self, other: "Blob"):
        if other.count != self.count:
            raise ValueError(f"cannot share diff of {other.shape} with {self.shape}")
        self._diff = other._diff.reshape(self._shape)

    def to(self, xp):
        """Move both arrays to array module ``xp`` in place."""
        if xp is self.xp:
            return self
        if xp is np:
            self._data = backend.to_host(self._data)
            self._diff = backend.to_host(self._diff)
        else:
            self._data = xp.asarray(self._data)
            self._diff = xp.asarray(self._diff)
        self.xp = xp
        return self

    def __repr__(self):
        return f"Blob(shape={self._shape})"
