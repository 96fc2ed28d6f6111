"""Log: ``y = log_base(shift + scale * x)``; ``base = -1`` (the default) means the natural log.

Fields: ``log_param.base`` (-1 or > 0, != 1), ``scale`` (1), ``shift`` (0). Backward
``dx = dy * scale / (ln(base) * (shift + scale * x))``; in place, forward keeps a copy of x.
Invalid bases raise NetError.
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("Log")
class LogLayer(NeuronLayer):
    backward_needs_bottom = True

    def layer_setup(self, bottom, top):
        p = self.param.log_param
        base = float(p.base)
        if base != -1 and not (base > 0 and base != 1):
            raise self.error(f"log_param.base must be -1 (for e) or > 0 and != 1, got {base:g}")
        self.base_scale = 1.0 if base == -1 else 1.0 / math.log(base)
        self.scale, self.shift = float(p.scale), float(p.shift)

    def _affine(self, x, out=None):
        xp = get_array_module(x)
        out = xp.multiply(x, self.scale, out=out)
        if self.shift != 0:
            out += self.shift
        return out

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        y = top[0].data
        self._affine(bottom[0].data, out=y)
        get_array_module(y).log(y, out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = self._affine(self.bottom_data(bottom))
        xp = get_array_module(g)
        xp.divide(self.scale * self.base_scale, g, out=g)
        xp.multiply(top[0].diff, g, out=bottom[0].diff)
