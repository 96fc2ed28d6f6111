"""Flatten: merge axes ``[axis, end_axis]`` into one (Caffe's ``FlattenLayer``).

Prototxt: ``flatten_param { axis: 1 end_axis: -1 }`` (defaults; negative counts from the end).
(N, C, H, W) with the defaults -> (N, C*H*W). No arithmetic: forward makes top's data a view of
bottom's, backward makes bottom's diff a view of top's (Caffe's ShareData/ShareDiff), so it costs
nothing per iteration. Not in-place (top must be a different blob).

Errors (NetError naming the layer): axes out of range, ``end_axis`` before ``axis``, in-place use.
"""
from __future__ import annotations

import math

from . import register
from .base import Layer
from .concat import canonical_axis


@register("Flatten")
class FlattenLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("cannot run in place: give the top a different name")
        shape = bottom[0].shape
        p = self.param.flatten_param
        start = canonical_axis(self, int(p.axis), len(shape), "flatten_param.axis")
        end = canonical_axis(self, int(p.end_axis), len(shape), "flatten_param.end_axis")
        if end < start:
            raise self.error(f"flatten_param.end_axis ({end}) comes before axis ({start}) for "
                             f"bottom shape {shape}")
        top[0].reshape(shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:])
        top[0].share_data(bottom[0])

    def forward(self, bottom, top):
        top[0].share_data(bottom[0])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].share_diff(top[0])
