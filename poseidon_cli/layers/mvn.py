"""MVN: mean-variance normalisation per item (Caffe's ``MVNLayer``).

Prototxt: ``mvn_param { normalize_variance: true across_channels: false eps: 1e-9 }``.

Shapes: bottom (N, C, ...) (at least 2 axes), top the same; in-place use is supported. Each
row (one channel of one item, or with ``across_channels`` the whole item) gets
``y = x - mean`` and, with ``normalize_variance``, ``y = (x - mean) / (std + eps)`` where ``std`` is
the biased standard deviation. Note Caffe adds eps to the standard deviation, not the variance.

Backward is the exact gradient of that function: with ``c = x - mean``, ``s = std``,
``dx = (dy - mean(dy) - (c / s) * mean(dy * y)) / (s + eps)`` (rows with s = 0 drop the last
term); without variance normalisation ``dx = dy - mean(dy)``. Caffe uses ``y`` in place of ``c/s``,
which differs only by O(eps).

Errors (NetError naming the layer): a bottom with fewer than 2 axes.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from .base import Layer


@register("MVN")
class MVNLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across_channels = bool(p.across_channels)
        self.eps = float(p.eps)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.error(f"needs a bottom with at least 2 axes (N, C, ...), got {shape}")
        self._rows = shape[0] if self.across_channels else shape[0] * shape[1]
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self._rows, -1)
        # in place, the same view object: CuPy copies an input overlapping a distinct out=
        y = x if top[0] is bottom[0] else top[0].data.reshape(self._rows, -1)
        xp = get_array_module(x)
        mean = x.mean(axis=1, keepdims=True)
        xp.subtract(x, mean, out=y)
        if not self.normalize_variance:
            return
        std = xp.sqrt((y * y).mean(axis=1, keepdims=True))
        self._std = std
        self._denom = std + self.eps
        y /= self._denom

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self._rows, -1)
        dx = dy if top[0] is bottom[0] else bottom[0].diff.reshape(self._rows, -1)  # in place: dy
        mean_dy = dy.mean(axis=1, keepdims=True)
        if not self.normalize_variance:
            xp = get_array_module(dy)
            xp.subtract(dy, mean_dy, out=dx)
            return
        xp = get_array_module(dy)
        y = top[0].data.reshape(self._rows, -1)
        mean_dy_y = (dy * y).mean(axis=1, keepdims=True)
        # c / s = y * (s + eps) / s, and 0 where the row is constant (c = 0)
        ratio = xp.where(self._std > 0, self._denom / xp.where(self._std > 0, self._std, 1), 0)
        tmp = y * (ratio * mean_dy_y)
        xp.subtract(dy, tmp, out=dx)
        dx -= mean_dy
        dx /= self._denom
