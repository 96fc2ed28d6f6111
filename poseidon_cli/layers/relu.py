"""ReLU: ``y = max(x, 0) + negative_slope * min(x, 0)`` (leaky when ``relu_param.negative_slope``).

Gradient ``dy`` where x > 0 (strictly) and ``negative_slope * dy`` elsewhere, so the gradient at 0
is the negative slope, as in Caffe. Safe in place: sign(y) = sign(x) for any slope >= 0, so
backward reads the sign from whatever ``bottom.data`` holds. Fields: ``relu_param.negative_slope``
(default 0; ``engine`` ignored).
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("ReLU")
class ReLULayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.negative_slope = float(self.param.relu_param.negative_slope)
        if self.negative_slope < 0:
            # sign(y) no longer tells sign(x); keep x when run in place
            self.backward_needs_bottom = True

    def forward(self, bottom, top):
        self.saved_bottom(bottom, top)
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        if self.negative_slope == 0:
            xp.maximum(x, 0, out=y)
        else:
            neg = xp.minimum(x, 0, out=self.scratch("work", x))
            neg *= self.negative_slope
            xp.maximum(x, 0, out=y)
            y += neg

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self.bottom_data(bottom)
        dy, dx = top[0].diff, bottom[0].diff
        xp = get_array_module(dy)
        if self.negative_slope == 0:
            xp.multiply(dy, x > 0, out=dx)
        else:
            one, slope = x.dtype.type(1), x.dtype.type(self.negative_slope)
            xp.multiply(dy, xp.where(x > 0, one, slope), out=dx)
