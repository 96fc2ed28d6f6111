"""Scale: multiply by a per-slice factor, optionally add a bias (Caffe's ``ScaleLayer``; with
BatchNorm it forms ResNet's learned affine part).

Prototxt: ``scale_param { axis: 1 num_axes: 1 filler { ... } bias_term: false bias_filler { ... } }``.

- One bottom: a learned ``gamma = blobs[0]`` shaped ``bottom.shape[axis : axis + num_axes]``
  (``num_axes: -1`` = to the end, 0 = a scalar), filled by ``filler`` (default constant 1).
- Two bottoms: the factor is ``bottom[1]`` (shape ``bottom[0].shape[axis : axis + bottom[1].ndim]``;
  a 0-axis bottom[1] is a scalar); ``num_axes`` is ignored.
- ``bias_term: true`` adds a learned bias of gamma's shape as the next blob (``blobs[1]``, or
  ``blobs[0]`` with two bottoms), filled by ``bias_filler`` (default constant 0).

``y = x * gamma (+ beta)`` broadcast over the other axes. In-place use is supported: forward then
keeps a copy of x when backward will need it for gamma's gradient (or, in a Net, borrows the copy
a BatchNorm right before it keeps anyway: ``Layer.bottom_snapshot``). Backward: ``dx = dy * gamma``;
gamma's gradient is ``sum(dy * x)`` over every axis but its own (accumulated into the blob, or
written to ``bottom[1].diff``); beta's is ``sum(dy)``.

Errors (NetError naming the layer): axes out of range, factor shape not matching bottom[0].
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from .base import Layer
from .bias import broadcast_dims, fill_param, in_place, learned_param_shape


@register("Scale")
class ScaleLayer(Layer):
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1
    uses_bottom_snapshot = True

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self.blobs = []
        if len(bottom) == 1:
            shape = learned_param_shape(self, bottom[0].shape, int(p.axis), int(p.num_axes),
                                        "scale_param")
            gamma = self.new_blob(shape)
            fill_param(self, gamma, p.filler, p.HasField("filler"), 1.0)
            self.blobs.append(gamma)
        else:
            shape = bottom[1].shape
        self.bias_index = None
        if p.bias_term:
            beta = self.new_blob(shape)
            fill_param(self, beta, p.bias_filler, p.HasField("bias_filler"), 0.0)
            self.bias_index = len(self.blobs)
            self.blobs.append(beta)
        self.param_propagate_down = [True] * len(self.blobs)
        self._x_copy = None

    def _gamma(self, bottom):
        return self.blobs[0] if len(bottom) == 1 else bottom[1]

    def reshape(self, bottom, top):
        self._dims = broadcast_dims(self, bottom[0].shape, self._gamma(bottom).shape,
                                    int(self.param.scale_param.axis), "scale_param", "scale")
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def _needs_gamma_grad(self, bottom, propagate_down=None):
        if len(bottom) == 1:
            return bool(self.param_propagate_down[0])
        return True if propagate_down is None else bool(propagate_down[1])

    def forward(self, bottom, top):
        outer, dim, inner = self._dims
        x = bottom[0].data.reshape(outer, dim, inner)
        # in place, the same view object: CuPy copies an input overlapping a distinct out=
        y = x if top[0] is bottom[0] else top[0].data.reshape(outer, dim, inner)
        xp = get_array_module(x)
        self._x_copy = None
        snap = self.take_bottom_snapshot(bottom)
        if self._needs_gamma_grad(bottom) and in_place(bottom, top):
            # x is overwritten below but gamma's gradient needs it: borrow the copy the layer
            # before keeps (BatchNorm's normalised output) when the Net lends one, else copy
            self._x_copy = x.copy() if snap is None else snap.reshape(outer, dim, inner)
        src = x if self._x_copy is None else self._x_copy   # no overlap with y when copied
        xp.multiply(src, self._gamma(bottom).data.reshape(1, dim, 1), out=y)
        if self.bias_index is not None:
            y += self.blobs[self.bias_index].data.reshape(1, dim, 1)

    def backward(self, top, propagate_down, bottom):
        outer, dim, inner = self._dims
        dy = top[0].diff.reshape(outer, dim, inner)
        # parameter gradients first: in place, dx overwrites dy
        if self._needs_gamma_grad(bottom, propagate_down):
            x = self._x_copy if self._x_copy is not None else \
                bottom[0].data.reshape(outer, dim, inner)
            g = (dy * x).sum(axis=(0, 2))
            if len(bottom) == 1:
                self.blobs[0].diff += g.reshape(self.blobs[0].shape)
            else:
                bottom[1].diff[...] = g.reshape(bottom[1].shape)
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            beta = self.blobs[self.bias_index]
            beta.diff += dy.sum(axis=(0, 2)).reshape(beta.shape)
        if propagate_down[0]:
            xp = get_array_module(dy)
            dx = dy if top[0] is bottom[0] else bottom[0].diff.reshape(outer, dim, inner)
            xp.multiply(dy, self._gamma(bottom).data.reshape(1, dim, 1), out=dx)
