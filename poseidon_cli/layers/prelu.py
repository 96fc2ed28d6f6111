"""PReLU: ``y = max(x, 0) + a_c * min(x, 0)`` with a learnable slope per channel (axis 1).

Fields: ``prelu_param.channel_shared`` (default false: ``a`` has shape (C,); true: one slope,
shape ()), ``prelu_param.filler`` (default constant 0.25). Bottom must have at least 2 axes unless
channel_shared. ``self.blobs[0]`` holds the slopes; backward accumulates
``sum(dy * x * (x <= 0))`` over every axis except the channel into its diff and writes
``dx = dy * (x > 0 ? 1 : a_c)``. In place (slopes may be negative), forward keeps a copy of x.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("PReLU")
class PReLULayer(NeuronLayer):
    backward_needs_bottom = True

    def layer_setup(self, bottom, top):
        p = self.param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        shape = bottom[0].shape
        if not self.channel_shared and len(shape) < 2:
            raise self.error(f"needs a bottom with a channel axis (>= 2 axes), got shape {shape}")
        if self.blobs:
            return  # weights already set (e.g. copied from a model)
        blob = self.new_blob(() if self.channel_shared else (shape[1],))
        if p.HasField("filler") and p.filler.type != "constant":
            from ..fillers import fill  # noqa: PLC0415  (only non-default fillers need it)
            fill(blob, p.filler, self.rng)
        else:
            blob.data[...] = p.filler.value if p.HasField("filler") else 0.25
        self.blobs = [blob]
        self.param_propagate_down = [True]

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if not self.channel_shared and (len(shape) < 2 or shape[1] != self.blobs[0].count):
            raise self.error(f"bottom shape {shape} does not match {self.blobs[0].count} slope(s)")
        super().reshape(bottom, top)

    def _slope(self, x):
        """Slopes broadcastable against x (N, C, ...)."""
        a = self.blobs[0].data
        if self.channel_shared:
            return a
        return a.reshape((1, a.size) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        neg = xp.minimum(x, 0, out=self.scratch("work", x))
        neg *= self._slope(x)
        xp.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom):
        x = self.bottom_data(bottom)
        dy = top[0].diff
        xp = get_array_module(x)
        if self.param_propagate_down and self.param_propagate_down[0]:
            # must be read before dx overwrites dy when run in place
            g = xp.minimum(x, 0, out=self.scratch("work", x))   # x where x <= 0, else 0
            g *= dy
            if self.channel_shared:
                self.blobs[0].diff += g.sum()
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                self.blobs[0].diff += g.sum(axis=axes)
        if propagate_down[0]:
            a = self._slope(x)
            # factor = 1 where x > 0, a elsewhere, as pos * (1 - a) + a
            f = xp.multiply(x > 0, 1 - a, out=self.scratch("work", x))
            f += a
            xp.multiply(dy, f, out=bottom[0].diff)
