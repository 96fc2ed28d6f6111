"""EuclideanLoss: ``loss = sum((a - b)^2) / (2 N)`` with N = the first dimension of bottom[0].

Bottoms a, b must have the same number of values per item (count / N). One scalar top.
Backward: ``da = (a - b) * loss_weight / N``, ``db = -da``; both bottoms can take gradients
(unlike other losses, b is not treated as a label).
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from .base import Layer


@register("EuclideanLoss")
class EuclideanLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def reshape(self, bottom, top):
        a, b = bottom
        if a.count != b.count or a.num != b.num:
            raise self.error(f"bottoms must have the same size, got {a.shape} and {b.shape}")
        top[0].reshape(())
        self._diff = None

    def forward(self, bottom, top):
        a, b = bottom[0].data, bottom[1].data
        xp = get_array_module(a)
        if self._diff is None or self._diff.shape != a.shape or self._diff.dtype != a.dtype:
            self._diff = xp.empty_like(a)
        xp.subtract(a, b.reshape(a.shape), out=self._diff)
        d = self._diff.reshape(-1)
        top[0].data[...] = d.dot(d) / (2 * bottom[0].num)

    def allow_force_backward(self, bottom_index):
        return True

    def backward(self, top, propagate_down, bottom):
        alpha = top[0].diff.reshape(-1)[0] / bottom[0].num
        xp = get_array_module(self._diff)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                xp.multiply(self._diff.reshape(bottom[i].shape), sign * alpha,
                            out=bottom[i].diff)
