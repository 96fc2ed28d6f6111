"""SigmoidCrossEntropyLoss: cross-entropy between sigmoid(x) and targets t in [0, 1].

``loss = sum(max(x, 0) - x t + log(1 + exp(-|x|))) / normalizer`` (the overflow-free form).
Bottoms: scores x and targets t with the same count; one scalar top. Fields (``loss_param``):
``ignore_label`` (positions whose target, cast to int, equals it add neither loss nor gradient),
``normalization``/legacy ``normalize`` as in SoftmaxWithLoss but defaulting to BATCH_SIZE
(N = first dimension of x) when both are unset: that is BVLC's choice for this layer, kept for
backward compatibility with its older "divide by num" behaviour. VALID counts non-ignored
positions, FULL every position, NONE divides by 1; never below 1.

Backward: ``dx = (sigmoid(x) - t) * loss_weight / normalizer`` (0 where ignored); asking for a
gradient of the targets raises NetError.
"""
from __future__ import annotations

import numpy as np

from .._proto import caffe_pb2
from ..backend import get_array_module
from . import register
from .base import Layer
from .sigmoid import sigmoid
from .softmax_with_loss import normalization_mode, normalizer

_LP = caffe_pb2.LossParameter


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def layer_setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(lp, _LP.BATCH_SIZE)

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"scores {bottom[0].shape} and targets {bottom[1].shape} must have "
                             f"the same count")
        self.outer = bottom[0].num
        self.inner = bottom[0].count // max(self.outer, 1)
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        xp = get_array_module(x)
        self._sig = sigmoid(x)
        term = xp.abs(x)
        xp.negative(term, out=term)
        xp.exp(term, out=term)
        xp.log1p(term, out=term)
        term += xp.maximum(x, 0)
        term -= x * t
        valid = None
        if self.ignore_label is not None:
            valid = t.astype(np.int64) != self.ignore_label
            term *= valid
        self._valid = valid
        self._norm = normalizer(self.mode, self.outer, self.inner,
                                valid.sum() if valid is not None else None)
        top[0].data[...] = term.sum() / self._norm

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the target input")
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        xp = get_array_module(dx)
        xp.subtract(self._sig, bottom[1].data.reshape(dx.shape), out=dx)
        if self._valid is not None:
            dx *= self._valid
        dx *= top[0].diff.reshape(-1)[0] / self._norm
