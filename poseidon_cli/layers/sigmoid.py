"""Sigmoid: ``y = 1 / (1 + exp(-x))``, computed as ``0.5 * tanh(x / 2) + 0.5`` (no overflow).

Backward ``dx = dy * y * (1 - y)`` uses the output only, so the layer is safe in place.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


def sigmoid(x, out=None):
    """Numerically stable logistic function; ``out`` may alias ``x``."""
    xp = get_array_module(x)
    out = xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):
    def forward(self, bottom, top):
        sigmoid(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dx = top[0].data, bottom[0].diff
        d = self.scratch("work", y)
        get_array_module(y).subtract(1, y, out=d)
        d *= y
        get_array_module(y).multiply(top[0].diff, d, out=dx)
