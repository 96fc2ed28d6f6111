"""Bias: add a per-slice offset (Caffe's ``BiasLayer``); also the helpers Scale shares.

Prototxt: ``bias_param { axis: 1 num_axes: 1 filler { type: "constant" value: 0 } }``.

- One bottom: a learned ``blobs[0]`` shaped ``bottom.shape[axis : axis + num_axes]``
  (``num_axes: -1`` = to the end, 0 = a scalar), filled by ``filler`` (default constant 0).
- Two bottoms: the bias is ``bottom[1]``, whose shape must equal ``bottom[0].shape[axis : axis +
  bottom[1].ndim]`` (a 0-axis bottom[1] is a scalar); ``num_axes`` is ignored.

``y = x + b`` broadcast over the other axes; in-place use is supported. Backward: ``dx = dy``;
the bias gradient is ``dy`` summed over every axis but the bias axes (accumulated into
``blobs[0].diff``, or written to ``bottom[1].diff``).

Errors (NetError naming the layer): axes out of range, bias shape not matching bottom[0].
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from . import register
from .base import Layer
from .concat import canonical_axis


def learned_param_shape(layer, bottom_shape, axis_param: int, num_axes: int, field: str):
    """Shape of a learned Scale/Bias blob: ``bottom_shape[axis : axis + num_axes]``."""
    axis = canonical_axis(layer, axis_param, len(bottom_shape), f"{field}.axis")
    if num_axes < -1:
        raise layer.error(f"{field}.num_axes {num_axes} must be >= -1")
    if num_axes != -1 and axis + num_axes > len(bottom_shape):
        raise layer.error(f"{field} axis {axis_param} + num_axes {num_axes} exceeds the "
                          f"{len(bottom_shape)} axes of bottom shape {tuple(bottom_shape)}")
    end = len(bottom_shape) if num_axes == -1 else axis + num_axes
    return tuple(bottom_shape[axis:end])


def broadcast_dims(layer, bottom_shape, param_shape, axis_param: int, field: str, what: str):
    """(outer, dim, inner) such that x.reshape(outer, dim, inner) lines up with the parameter.

    A 0-axis (scalar) parameter applies at axis 0, as in Caffe."""
    axis = 0 if len(param_shape) == 0 else canonical_axis(layer, axis_param, len(bottom_shape),
                                                          f"{field}.axis")
    end = axis + len(param_shape)
    if tuple(bottom_shape[axis:end]) != tuple(param_shape):
        raise layer.error(f"{what} shape {tuple(param_shape)} does not match bottom[0] shape "
                          f"{tuple(bottom_shape)} at axes {axis}..{end - 1}")
    return (math.prod(bottom_shape[:axis]), math.prod(param_shape),
            math.prod(bottom_shape[end:]))


def fill_param(layer, blob, filler_param, has_filler: bool, default_value: float):
    """Fill a Scale/Bias blob: constant ``default_value`` unless a filler is given."""
    if not has_filler:
        blob.data[...] = default_value
    elif filler_param.type == "constant":
        blob.data[...] = filler_param.value
    else:
        from .. import fillers  # the full filler set lives with the engine
        fillers.fill(blob, filler_param, layer.rng)


def in_place(bottom, top) -> bool:
    """top[0] writes into bottom[0]'s memory (the same blob, or blobs aliasing one array)."""
    a, b = bottom[0].data, top[0].data
    return bottom[0] is top[0] or get_array_module(a).may_share_memory(a, b)


@register("Bias")
class BiasLayer(Layer):
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1:
            shape = learned_param_shape(self, bottom[0].shape, int(p.axis), int(p.num_axes),
                                        "bias_param")
            blob = self.new_blob(shape)
            fill_param(self, blob, p.filler, p.HasField("filler"), 0.0)
            self.blobs = [blob]
            self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        b = self.blobs[0] if len(bottom) == 1 else bottom[1]
        self._dims = broadcast_dims(self, bottom[0].shape, b.shape, int(self.param.bias_param.axis),
                                    "bias_param", "bias")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def _bias(self, bottom):
        return (self.blobs[0] if len(bottom) == 1 else bottom[1])

    def forward(self, bottom, top):
        outer, dim, inner = self._dims
        x = bottom[0].data.reshape(outer, dim, inner)
        # in place, the same view object: CuPy copies an input overlapping a distinct out=
        y = x if top[0] is bottom[0] else top[0].data.reshape(outer, dim, inner)
        xp = get_array_module(x)
        xp.add(x, self._bias(bottom).data.reshape(1, dim, 1), out=y)

    def backward(self, top, propagate_down, bottom):
        outer, dim, inner = self._dims
        dy = top[0].diff
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff += dy.reshape(outer, dim, inner).sum(axis=(0, 2)).reshape(
                    self.blobs[0].shape)
        elif propagate_down[1]:
            bottom[1].diff[...] = dy.reshape(outer, dim, inner).sum(axis=(0, 2)).reshape(
                bottom[1].shape)
        if propagate_down[0] and bottom[0].diff is not dy:
            bottom[0].diff[...] = dy
