"""Threshold: ``y = 1 if x > threshold else 0`` (``threshold_param.threshold``, default 0).

No gradient: like Caffe, a backward that must propagate to the bottom raises NetError (the step
function's derivative is zero wherever it exists, so training through it is a net mistake).
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.threshold = float(self.param.threshold_param.threshold)

    def forward(self, bottom, top):
        x = bottom[0].data
        get_array_module(x).greater(x, self.threshold, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("has no gradient; set propagate_down: false for its bottom or move "
                             "the layer out of the backward path")
