"""Accuracy: fraction of positions whose true class is within the top ``top_k`` scores (BVLC).

Bottoms: scores (N, C, ...) along ``accuracy_param.axis`` (default 1) and labels, one per position
outside that axis. A position counts as correct iff fewer than ``top_k`` classes score ``>=`` the
true class's score other than the true class itself, so ties count AGAINST (all-equal scores are
never correct for top_k < C). Positions labelled ``ignore_label`` are skipped; the output is
correct / counted (0 when nothing is counted). Optional 2nd top, shape (C,): per-class accuracy
(0 for a class that never occurs). Fields: ``accuracy_param.top_k`` (default 1, at most C),
``axis``, ``ignore_label``.

No gradient: backward writes zero bottom diffs if asked (the output is piecewise constant).
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import register
from .base import Layer
from .softmax import canonical_axis
from .softmax_with_loss import labels_as_index


@register("Accuracy")
class AccuracyLayer(Layer):
    exact_num_bottom = 2
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore_label = int(p.ignore_label) if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self, int(self.param.accuracy_param.axis), len(shape))
        self.outer = int(np.prod(shape[:self.axis], dtype=np.int64))
        self.channels = shape[self.axis]
        self.inner = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        if self.top_k > self.channels:
            raise self.error(f"accuracy_param.top_k {self.top_k} exceeds the {self.channels} "
                             f"classes of bottom shape {shape}")
        if bottom[1].count != self.outer * self.inner:
            raise self.error(f"label count {bottom[1].count} (shape {bottom[1].shape}) must equal "
                             f"{self.outer * self.inner} for scores of shape {shape}")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.channels,))

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(self.outer, self.channels, self.inner)
        xp = get_array_module(scores)
        lab, valid = labels_as_index(self, bottom[1].data, self.outer, self.inner,
                                     self.channels, self.ignore_label)
        true = xp.take_along_axis(scores, lab.reshape(self.outer, 1, self.inner), axis=1)
        # the true class itself is always >= its own score, hence the - 1
        better = (scores >= true).sum(axis=1) - 1
        correct = better < self.top_k
        dtype = top[0].data.dtype
        if valid is not None:
            correct &= valid
            count = valid.sum()    # an array: xp.where keeps it on the device
            top[0].data[...] = xp.where(count > 0, correct.sum() / xp.maximum(count, 1), 0)
        else:
            # count is a Python int here; CuPy's where() needs an array condition
            top[0].data[...] = correct.sum() / max(self.outer * self.inner, 1)
        if len(top) > 1:
            labels = lab.reshape(-1)
            weights = (valid.reshape(-1) if valid is not None
                       else xp.ones(labels.shape, dtype=bool)).astype(dtype)
            seen = xp.bincount(labels, weights=weights, minlength=self.channels)
            hit = xp.bincount(labels, weights=correct.reshape(-1).astype(dtype),
                              minlength=self.channels)
            top[1].data[...] = xp.where(seen > 0, hit / xp.maximum(seen, 1), 0)

    def allow_force_backward(self, bottom_index):
        return False

    def backward(self, top, propagate_down, bottom):
        for down, blob in zip(propagate_down, bottom):
            if down:
                blob.diff[...] = 0
