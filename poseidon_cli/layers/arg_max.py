"""ArgMax: indices (and optionally values) of the top-k entries (Caffe's ``ArgMaxLayer``).

Prototxt: ``argmax_param { out_max_val: false top_k: 1 axis: <unset> }``.

- ``axis`` unset: each item n of the batch is one flat vector of ``count / N`` values. Top shape
  is (N, 1, top_k) padded with 1s to the bottom's rank (at least 3 axes); with ``out_max_val``
  it is (N, 2, top_k, ...): channel 0 holds the indices, channel 1 the values.
- ``axis`` set (negative counts from the end): top is the bottom's shape with that axis replaced
  by ``top_k``, holding the indices, or the values when ``out_max_val``.

Entries are ordered by decreasing value; equal values put the larger index first (Caffe sorts
(value, index) pairs in descending order). Indices are stored as floats in the top's dtype.
No backward (Caffe has none).

Errors (NetError naming the layer): ``top_k`` < 1 or larger than the compared dimension, axis out
of range.
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from . import register
from .base import Layer
from .concat import canonical_axis


@register("ArgMax")
class ArgMaxLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = bool(p.out_max_val)
        self.top_k = int(p.top_k)
        self.has_axis = p.HasField("axis")
        self._axis_param = int(p.axis)
        if self.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        k = self.top_k
        if self.has_axis:
            self.axis = canonical_axis(self, self._axis_param, len(shape), "argmax_param.axis")
            dim = shape[self.axis]
            out = list(shape)
            out[self.axis] = k
        else:
            dim = math.prod(shape[1:])
            out = [1] * max(len(shape), 3)
            out[0] = shape[0]
            out[2] = k
            if self.out_max_val:
                out[1] = 2
        if k > dim:
            raise self.error(f"argmax_param.top_k {k} exceeds the {dim} values compared "
                             f"(bottom shape {shape})")
        self._dim = dim
        top[0].reshape(tuple(out))

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        if self.has_axis:
            v = xp.moveaxis(x, self.axis, -1)
        else:
            v = x.reshape(x.shape[0], -1)
        dim, k = self._dim, self.top_k
        # Reverse so a stable descending sort puts the larger original index first on ties.
        rev = v[..., ::-1]
        if k == 1:
            pos = xp.argmax(rev, axis=-1)[..., None]
        else:
            pos = xp.argsort(-rev, axis=-1, kind="stable")[..., :k]
        vals = xp.take_along_axis(rev, pos, axis=-1)
        idx = (dim - 1 - pos).astype(top[0].dtype)
        y = top[0].data
        if self.has_axis:
            y[...] = xp.moveaxis(vals if self.out_max_val else idx, -1, self.axis)
        else:
            y2 = y.reshape(x.shape[0], -1)
            if self.out_max_val:
                y2[:, :k] = idx
                y2[:, k:] = vals
            else:
                y2[...] = idx

    def backward(self, top, propagate_down, bottom):
        """ArgMax is not differentiable; Caffe raises if asked, we leave diffs untouched."""
