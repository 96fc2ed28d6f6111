"""TanH: ``y = tanh(x)``; backward ``dx = dy * (1 - y^2)`` from the output, so safe in place."""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("TanH")
class TanHLayer(NeuronLayer):
    def forward(self, bottom, top):
        get_array_module(bottom[0].data).tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        xp = get_array_module(y)
        d = xp.multiply(y, y, out=self.scratch("work", y))
        xp.subtract(1, d, out=d)
        xp.multiply(top[0].diff, d, out=bottom[0].diff)
