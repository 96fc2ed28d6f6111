"""Power: ``y = (shift + scale * x) ^ power``.

Fields: ``power_param.power`` (default 1), ``scale`` (1), ``shift`` (0). Backward
``dx = dy * power * scale * (shift + scale * x) ^ (power - 1)``; it is 0 when power * scale = 0
and the constant ``scale * dy`` when power = 1. A negative base with a fractional power gives NaN,
as in Caffe. In place, forward keeps a copy of x for backward.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("Power")
class PowerLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale
        # only the general case needs x again in backward
        self.backward_needs_bottom = self.diff_scale != 0 and self.power != 1

    def _affine(self, x, out=None):
        xp = get_array_module(x)
        out = xp.multiply(x, self.scale, out=out)
        if self.shift != 0:
            out += self.shift
        return out

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        if self.diff_scale == 0:
            # y is constant: shift^power (0^0 = 1, like std::pow)
            y[...] = 1.0 if self.power == 0 else float(np.power(self.shift, self.power))
            return
        self._affine(x, out=y)
        if self.power != 1:
            xp.power(y, self.power, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        xp = get_array_module(dy)
        if self.diff_scale == 0:
            dx[...] = 0
        elif self.power == 1:
            xp.multiply(dy, self.diff_scale, out=dx)
        else:
            g = self._affine(self.bottom_data(bottom))
            if self.power != 2:
                xp.power(g, self.power - 1, out=g)
            g *= self.diff_scale
            xp.multiply(dy, g, out=dx)
