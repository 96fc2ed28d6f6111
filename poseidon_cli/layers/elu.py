"""ELU: ``y = x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise (``elu_param.alpha``, default 1).

Backward: ``dy`` where x > 0, ``dy * (y + alpha)`` elsewhere. For alpha >= 0, sign(y) tells
sign(x), so in-place use needs no copy; a negative alpha makes forward keep x.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("ELU")
class ELULayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.alpha = float(self.param.elu_param.alpha)
        self.backward_needs_bottom = self.alpha < 0

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        neg = xp.minimum(x, 0, out=self.scratch("work", x))
        xp.expm1(neg, out=neg)
        neg *= self.alpha
        xp.maximum(x, 0, out=y)
        y += neg

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # x when kept, else the in-place output whose sign matches x (alpha >= 0)
        x = self.bottom_data(bottom)
        y, dy = top[0].data, top[0].diff
        xp = get_array_module(y)
        # factor = 1 where x > 0, y + alpha elsewhere (y + alpha = alpha * e^x there), as
        # (y + alpha) * [x <= 0] + [x > 0]: plain ufuncs, exact (a masked copyto is ~25x slower)
        g = xp.add(y, self.alpha, out=self.scratch("work", y))
        g *= x <= 0
        g += x > 0
        xp.multiply(dy, g, out=bottom[0].diff)
