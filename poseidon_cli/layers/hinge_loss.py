"""HingeLoss (one-vs-all): for scores x (N, K...) flattened to (N, D) and labels l (N values),
``s = x`` with ``s[n, l_n]`` negated, ``loss = sum(max(0, 1 + s)^p) / N`` with p = 1 (L1, the
default) or 2 (L2) from ``hinge_loss_param.norm``.

Backward: with m = max(0, 1 + s) and the label column's sign flipped back,
L1: ``dx = sign(m) * flip * loss_weight / N``; L2: ``dx = 2 m * flip * loss_weight / N``.
Labels outside [0, D) raise NetError; so does asking for a gradient of the labels.
"""
from __future__ import annotations

from .._proto import caffe_pb2
from ..backend import get_array_module
from . import register
from .base import Layer
from .softmax_with_loss import labels_as_index

_HP = caffe_pb2.HingeLossParameter


@register("HingeLoss")
class HingeLossLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 1
    is_loss = True

    def layer_setup(self, bottom, top):
        self.norm = self.param.hinge_loss_param.norm
        if self.norm not in (_HP.L1, _HP.L2):
            raise self.error(f"unknown hinge_loss_param.norm {self.norm}")

    def reshape(self, bottom, top):
        self.num = bottom[0].num
        self.dim = bottom[0].count // max(self.num, 1)
        if bottom[1].count != self.num:
            raise self.error(f"needs one label per item: {self.num} items in {bottom[0].shape}, "
                             f"{bottom[1].count} labels")
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        xp = get_array_module(x)
        lab, _ = labels_as_index(self, bottom[1].data, self.num, 1, self.dim, None)
        # flat positions of the true-class scores
        self._index = xp.arange(self.num) * self.dim + lab.reshape(-1)
        m = x.copy()
        flat = m.reshape(-1)
        flat[self._index] *= -1
        m += 1
        xp.maximum(m, 0, out=m)
        self._margin = m
        if self.norm == _HP.L1:
            loss = m.sum()
        else:
            f = m.reshape(-1)
            loss = f.dot(f)
        top[0].data[...] = loss / self.num

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if not propagate_down[0]:
            return
        xp = get_array_module(self._margin)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        if self.norm == _HP.L1:
            xp.sign(self._margin, out=dx)
        else:
            xp.multiply(self._margin, 2, out=dx)
        dx.reshape(-1)[self._index] *= -1
        dx *= top[0].diff.reshape(-1)[0] / self.num
