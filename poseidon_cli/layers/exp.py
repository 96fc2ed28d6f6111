"""Exp: ``y = base ^ (shift + scale * x)``; ``base = -1`` (the default) means e.

Fields: ``exp_param.base`` (-1 or > 0), ``scale`` (1), ``shift`` (0). Computed as
``base^shift * exp(ln(base) * scale * x)``; backward ``dx = dy * y * ln(base) * scale`` reads
only the output, so the layer is safe in place. A base <= 0 other than -1 raises NetError.
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("Exp")
class ExpLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.exp_param
        base = float(p.base)
        if base != -1 and not base > 0:
            raise self.error(f"exp_param.base must be -1 (for e) or > 0, got {base:g}")
        log_base = 1.0 if base == -1 else math.log(base)
        self.inner_scale = log_base * float(p.scale)
        self.outer_scale = 1.0 if p.shift == 0 else (
            math.exp(float(p.shift)) if base == -1 else base ** float(p.shift))

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        xp.multiply(x, self.inner_scale, out=y)
        xp.exp(y, out=y)
        if self.outer_scale != 1:
            y *= self.outer_scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dx = top[0].data, bottom[0].diff
        xp = get_array_module(y)
        xp.multiply(top[0].diff, y, out=dx)
        if self.inner_scale != 1:
            dx *= self.inner_scale
