"""Reshape: give the bottom a new shape without touching its values (Caffe's ``ReshapeLayer``).

Prototxt: ``reshape_param { shape { dim: 0 dim: -1 dim: 4 } axis: 0 num_axes: -1 }``.
The bottom axes ``[axis, axis + num_axes)`` (``num_axes: -1`` = to the end; negative ``axis``
counts from the end with -1 meaning "after the last axis") are replaced by ``shape``'s dims, where
``0`` copies the bottom's dim at the same position and one ``-1`` is inferred from the count.
Like Flatten it only aliases arrays (top data views bottom data; bottom diff views top diff).

Errors (NetError naming the layer): a dim below -1, more than one -1, a 0 past the bottom's axes,
``axis``/``num_axes`` out of range, a count that cannot match the bottom's, in-place use.
"""
from __future__ import annotations

import math

from . import register
from .base import Layer


@register("Reshape")
class ReshapeLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        dims = [int(d) for d in self.param.reshape_param.shape.dim]
        if any(d < -1 for d in dims):
            raise self.error(f"reshape_param.shape {dims} has a dim below -1 "
                             "(use 0 to copy a bottom dim, -1 to infer one)")
        if dims.count(-1) > 1:
            raise self.error(f"reshape_param.shape {dims} has more than one -1 (at most one dim "
                             "can be inferred)")
        self._dims = dims

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("cannot run in place: give the top a different name")
        shape = bottom[0].shape
        nd = len(shape)
        p = self.param.reshape_param
        axis, num_axes = int(p.axis), int(p.num_axes)
        start = axis if axis >= 0 else nd + axis + 1
        if not 0 <= start <= nd:
            raise self.error(f"reshape_param.axis {axis} is out of range for bottom shape {shape}")
        if num_axes < -1:
            raise self.error(f"reshape_param.num_axes {num_axes} must be >= -1")
        end = nd if num_axes == -1 else start + num_axes
        if end > nd:
            raise self.error(f"reshape_param axis {axis} + num_axes {num_axes} exceeds the "
                             f"{nd} axes of bottom shape {shape}")
        new = []
        for i, d in enumerate(self._dims):
            if d == 0:
                if start + i >= nd:
                    raise self.error(f"reshape_param.shape dim {i} is 0 (copy) but bottom shape "
                                     f"{shape} has no axis {start + i}")
                d = shape[start + i]
            new.append(d)
        out = list(shape[:start]) + new + list(shape[end:])
        count = math.prod(shape)
        if -1 in new:
            known = math.prod(d for d in out if d != -1)
            if known == 0 or count % known:
                raise self.error(f"cannot infer the -1 in reshape_param.shape {self._dims}: "
                                 f"bottom shape {shape} ({count} values) is not a multiple of "
                                 f"{known}")
            out[out.index(-1)] = count // known
        if math.prod(out) != count:
            raise self.error(f"reshape_param.shape {self._dims} gives top shape {tuple(out)} with "
                             f"{math.prod(out)} values but bottom shape {shape} has {count}")
        top[0].reshape(tuple(out))
        top[0].share_data(bottom[0])

    def forward(self, bottom, top):
        top[0].share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].share_diff(top[0])
