"""AbsVal: ``y = |x|``; backward ``dx = sign(x) * dy`` (0 at x = 0).

Caffe forbids running it in place; here in-place use works (forward keeps a copy of x).
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("AbsVal")
class AbsValLayer(NeuronLayer):
    backward_needs_bottom = True

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        get_array_module(bottom[0].data).abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self.bottom_data(bottom)
        xp = get_array_module(x)
        xp.multiply(top[0].diff, xp.sign(x), out=bottom[0].diff)
