"""SoftmaxWithLoss: softmax over ``softmax_param.axis`` (default 1) followed by the multinomial
logistic loss, ``loss = -sum(log(max(p[label], FLT_MIN))) / normalizer`` (BVLC semantics).

Bottoms: scores (N, C, ...) and labels with N * prod(dims after the axis) values (class indices
stored as floats). Tops: the scalar loss; optionally the probabilities (shape of the scores).
Fields (``loss_param``): ``ignore_label`` (positions with that label add neither loss nor
gradient), ``normalization`` FULL (all positions) / VALID (non-ignored positions, the default) /
BATCH_SIZE (outer count, N for axis 1) / NONE (1), or when unset the legacy ``normalize``
(true -> VALID, false -> BATCH_SIZE); the normalizer is at least 1. The FLT_MIN clamp caps one
term at -log(FLT_MIN) = 87.3365 (float32's FLT_MIN even for float64 blobs, matching Caffe).

Backward: ``dx = (p - onehot(label)) * loss_weight / normalizer``, 0 at ignored positions.
Labels out of [0, C) at counted positions, a label count that does not match, or a request to
backpropagate into the labels raise NetError.
"""
from __future__ import annotations

import numpy as np

from .._proto import caffe_pb2
from ..backend import get_array_module
from ..ops.softmax import softmax_forward
from . import register
from .base import Layer
from .softmax import canonical_axis

FLT_MIN = float(np.finfo(np.float32).tiny)
_LP = caffe_pb2.LossParameter


def normalization_mode(loss_param, default):
    """The effective ``LossParameter.NormalizationMode``: ``normalization`` when set, else the
    legacy ``normalize`` (true -> VALID, false -> BATCH_SIZE), else ``default``."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _LP.VALID if loss_param.normalize else _LP.BATCH_SIZE
    return default


def normalizer(mode, outer, inner, valid_count=None):
    """Caffe's ``get_normalizer``: the loss divisor, never below 1. ``valid_count`` (maybe a
    device scalar) is used for VALID when labels can be ignored; None means every position."""
    if mode == _LP.FULL:
        return float(max(outer * inner, 1))
    if mode == _LP.VALID:
        if valid_count is None:
            return float(max(outer * inner, 1))
        xp = get_array_module(valid_count)
        return xp.maximum(valid_count, 1)
    if mode == _LP.BATCH_SIZE:
        return float(max(outer, 1))
    if mode == _LP.NONE:
        return 1.0
    raise ValueError(f"unknown normalization mode {mode}")


def labels_as_index(layer, label, outer, inner, num_classes, ignore_label):
    """Integer labels (outer, inner), a validity mask (or None) and the labels with ignored
    positions replaced by 0, so they can index. Raises NetError on out-of-range labels."""
    if label.size != outer * inner:
        raise layer.error(f"label blob has {label.size} values but the scores need "
                          f"{outer * inner} ({outer} x {inner}, one per position)")
    xp = get_array_module(label)
    lab = label.reshape(outer, inner).astype(np.int64)
    valid = None
    if ignore_label is not None:
        valid = lab != ignore_label
        lab = xp.where(valid, lab, 0)
    if lab.size and bool(((lab < 0) | (lab >= num_classes)).any()):
        bad = int(lab[(lab < 0) | (lab >= num_classes)].reshape(-1)[0])
        raise layer.error(f"label {bad} is out of range for {num_classes} classes "
                          f"(labels must be in [0, {num_classes - 1}] or the ignore_label)")
    return lab, valid


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(Layer):
    exact_num_bottom = 2
    min_top = 1
    max_top = 2
    is_loss = True

    def layer_setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore_label = int(lp.ignore_label) if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(lp, _LP.VALID)
        self._prob = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self, int(self.param.softmax_param.axis), len(shape))
        self.outer = int(np.prod(shape[:self.axis], dtype=np.int64))
        self.channels = shape[self.axis]
        self.inner = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        if bottom[1].count != self.outer * self.inner:
            raise self.error(f"label count {bottom[1].count} (shape {bottom[1].shape}) must equal "
                             f"{self.outer * self.inner} for scores of shape {shape} "
                             f"(one label per position outside axis {self.axis})")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        xp = get_array_module(x)
        if len(top) > 1:
            prob = top[1].data
        else:
            if self._prob is None or self._prob.shape != x.shape or self._prob.dtype != x.dtype:
                self._prob = xp.empty_like(x)
            prob = self._prob
        softmax_forward(x, self.axis, out=prob)
        self._prob_ref = prob
        lab, valid = labels_as_index(self, bottom[1].data, self.outer, self.inner,
                                     self.channels, self.ignore_label)
        c, n = self.channels, self.inner
        # flat index of p[o, label, i] in the (outer, C, inner) view
        self._index = (xp.arange(self.outer).reshape(-1, 1) * (c * n) + lab * n
                       + xp.arange(n).reshape(1, -1))
        self._valid = valid
        p = prob.reshape(-1)[self._index]
        logp = xp.log(xp.maximum(p, FLT_MIN))
        if valid is not None:
            logp *= valid
        valid_count = valid.sum() if valid is not None else None
        self._norm = normalizer(self.mode, self.outer, self.inner, valid_count)
        top[0].data[...] = -logp.sum() / self._norm

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        dx[...] = self._prob_ref
        flat = dx.reshape(-1)
        if self._valid is None:
            flat[self._index] -= 1
        else:
            flat[self._index] -= self._valid.astype(dx.dtype)
            dx.reshape(self.outer, self.channels, self.inner)[...] *= \
                self._valid.reshape(self.outer, 1, self.inner)
        dx *= top[0].diff.reshape(-1)[0] / self._norm
