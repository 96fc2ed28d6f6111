"""MemoryData: tops read from arrays handed over in Python (``Net.set_input_arrays``).

Fields (``memory_data_param``): ``batch_size``, ``channels``, ``height``, ``width``. Tops:
``data`` (batch_size, channels, height, width) and ``label`` (batch_size,).

``reset(data, labels)``: ``data`` a 4-D float32 C-contiguous array (N, channels, height, width),
``labels`` float32 (N, 1, 1, 1), N a multiple of batch_size (Caffe's checks). The arrays are kept;
each forward copies the next batch_size rows and wraps around at N. As in Caffe, arrays given this
way are not transformed (``transform_param`` does not apply).

Errors: ``NetError`` for a forward before ``reset``, wrong dtype/layout/shape, or N not a multiple
of batch_size.
"""
from __future__ import annotations

import numpy as np

from . import register
from .base import Layer


@register("MemoryData")
class MemoryDataLayer(Layer):
    exact_num_bottom = 0
    exact_num_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.item_shape = (int(p.channels), int(p.height), int(p.width))
        if self.batch_size < 1 or min(self.item_shape) < 1:
            raise self.error("memory_data_param needs batch_size, channels, height and width > 0 "
                             f"(got {self.batch_size}, {self.item_shape})")
        self._data = self._labels = None
        self._pos = 0

    def reshape(self, bottom, top):
        top[0].reshape((self.batch_size,) + self.item_shape)
        top[1].reshape((self.batch_size,))

    def reset(self, data, labels):
        for name, arr in (("data", data), ("labels", labels)):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32:
                raise self.error(f"set_input_arrays: {name} must be a float32 numpy array "
                                 f"(got {getattr(arr, 'dtype', type(arr).__name__)})")
            if not arr.flags.c_contiguous:
                raise self.error(f"set_input_arrays: {name} must be C-contiguous")
        if data.ndim != 4 or data.shape[1:] != self.item_shape:
            dims = ", ".join(map(str, self.item_shape))
            raise self.error(f"set_input_arrays: data must have shape (N, {dims}), "
                             f"got {data.shape}")
        if labels.shape != (data.shape[0], 1, 1, 1):
            raise self.error(f"set_input_arrays: labels must have shape ({data.shape[0]}, 1, 1, 1) "
                             f"or ({data.shape[0]},), got {labels.shape}")
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            raise self.error(f"set_input_arrays: N = {data.shape[0]} is not a multiple of "
                             f"batch_size {self.batch_size}")
        self._data, self._labels, self._pos = data, labels.reshape(-1), 0

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error("no arrays: call net.set_input_arrays(data, labels) first")
        s, e = self._pos, self._pos + self.batch_size
        top[0].data[...] = self.xp.asarray(self._data[s:e])
        top[1].data[...] = self.xp.asarray(self._labels[s:e])
        self._pos = e % self._data.shape[0]
