"""BNLL (binomial normal log likelihood, softplus): ``y = log(1 + exp(x))``, computed as
``logaddexp(0, x)`` so it neither overflows for large x nor loses precision for very negative x.

Backward ``dx = dy * sigmoid(x)``, with ``sigmoid(x) = 1 - exp(-y)`` evaluated as ``-expm1(-y)``:
it reads only the output, so the layer is safe in place.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("BNLL")
class BNLLLayer(NeuronLayer):
    def forward(self, bottom, top):
        x = bottom[0].data
        get_array_module(x).logaddexp(x, 0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        xp = get_array_module(y)
        s = xp.negative(y)
        xp.expm1(s, out=s)
        xp.negative(s, out=s)
        xp.multiply(top[0].diff, s, out=bottom[0].diff)
