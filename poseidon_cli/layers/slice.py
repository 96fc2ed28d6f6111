"""Slice: cut one bottom into several tops along an axis (Caffe's ``SliceLayer``).

Prototxt: ``slice_param { axis: 1 slice_point: 2 slice_point: 5 }`` or the legacy ``slice_dim``
(non-negative; used when set). With ``slice_point`` (strictly increasing, inside the axis, exactly
one fewer than the tops) top i takes ``[point[i-1], point[i])``; without, the axis is split into
equal parts (its size must be divisible by the number of tops). One top: it aliases the bottom.

Errors (NetError naming the layer): axis out of range, wrong number of slice points, points not
increasing or outside the axis, an axis not divisible by the number of tops.
"""
from __future__ import annotations

from . import register
from .base import Layer
from .concat import canonical_axis


@register("Slice")
class SliceLayer(Layer):
    exact_num_bottom = 1
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("slice_dim"):
            self._axis_param, self._field = int(p.slice_dim), "slice_param.slice_dim"
        else:
            self._axis_param, self._field = int(p.axis), "slice_param.axis"
        self._points = [int(v) for v in p.slice_point]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, self._axis_param, len(shape), self._field)
        dim = shape[axis]
        n = len(top)
        if self._points:
            if len(self._points) != n - 1:
                raise self.error(f"has {len(self._points)} slice_point(s) for {n} tops: "
                                 f"give exactly {n - 1}")
            bounds = [0] + self._points + [dim]
            if any(a >= b for a, b in zip(bounds, bounds[1:])):
                raise self.error(f"slice_point {self._points} must be strictly increasing and "
                                 f"inside (0, {dim}) for axis {axis} of bottom shape {shape}")
        else:
            if dim % n:
                raise self.error(f"axis {axis} of bottom shape {shape} has size {dim}, not "
                                 f"divisible into {n} equal tops: give slice_point values")
            step = dim // n
            bounds = [i * step for i in range(n + 1)]
        self.axis = axis
        lead = (slice(None),) * axis
        self._slices = [lead + (slice(a, b),) for a, b in zip(bounds, bounds[1:])]
        for t, a, b in zip(top, bounds, bounds[1:]):
            t.reshape(shape[:axis] + (b - a,) + shape[axis + 1:])
        if n == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        if len(top) == 1:
            return  # top aliases bottom
        x = bottom[0].data
        for t, sl in zip(top, self._slices):
            t.data[...] = x[sl]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        dx = bottom[0].diff
        for t, sl in zip(top, self._slices):
            dx[sl] = t.diff
