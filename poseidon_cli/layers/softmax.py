"""Softmax over ``softmax_param.axis`` (default 1, negative counts from the end), independently
at every other index, with max subtraction. One bottom, one top of the same shape; backward
``dx = (dy - sum(dy * y, axis)) * y`` reads only the output, so the layer is safe in place.
"""
from __future__ import annotations

from ..ops.softmax import softmax_backward, softmax_forward
from . import register
from .base import Layer


def canonical_axis(layer, axis: int, ndim: int) -> int:
    """``axis`` in [0, ndim) (negative counts from the end); NetError when out of range."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"axis {axis} is out of range for a {ndim}-axis bottom")
    return axis % ndim


@register("Softmax")
class SoftmaxLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, int(self.param.softmax_param.axis), bottom[0].ndim)
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        softmax_forward(bottom[0].data, self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            softmax_backward(top[0].data, top[0].diff, self.axis, out=bottom[0].diff)
