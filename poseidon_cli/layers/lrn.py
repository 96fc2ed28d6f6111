"""LRN: local response normalisation (Caffe semantics, math in ``ops/lrn.py``).

Fields (``lrn_param``): ``local_size`` n (5, odd), ``alpha`` (1), ``beta`` (0.75), ``k`` (1),
``norm_region`` (ACROSS_CHANNELS: scale = k + alpha/n * sum of x^2 over n neighbouring channels;
WITHIN_CHANNEL: scale = 1 + alpha/n^2 * sum over the n x n spatial window). y = x * scale^-beta.

Shapes: top = bottom, (N, C, H, W). Errors (NetError): even local_size, non-4-D bottom, in-place
use (backward needs both x and y).
"""
from __future__ import annotations

from .._proto import caffe_pb2
from ..ops import lrn as lrn_ops
from . import register
from .base import Layer


@register("LRN")
class LRNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size < 1 or self.size % 2 == 0:
            raise self.error(f"local_size must be a positive odd number, got {self.size}")
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.region = (lrn_ops.WITHIN_CHANNEL
                       if p.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
                       else lrn_ops.ACROSS_CHANNELS)
        if top[0] is bottom[0]:
            raise self.error("cannot run in place (top == bottom); give the top its own name")
        self._scale = None

    def reshape(self, bottom, top):
        if len(bottom[0].shape) != 4:
            raise self.error(f"needs a 4-D (N, C, H, W) bottom, got shape {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        # y straight into the top and scale into last call's buffer: no temporaries of their own
        y, self._scale = lrn_ops.lrn_forward(bottom[0].data, self.size, self.alpha, self.beta,
                                             self.k, self.region, out=top[0].data,
                                             scale_out=self._scale)
        if y is not top[0].data:
            top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = lrn_ops.lrn_backward(bottom[0].data, top[0].data, self._scale, top[0].diff,
                                  self.size, self.alpha, self.beta, self.region,
                                  out=bottom[0].diff)
        if dx is not bottom[0].diff:
            bottom[0].diff[...] = dx
