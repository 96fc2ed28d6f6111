"""BatchNorm: per-channel normalisation to zero mean and unit variance (Caffe's
``BatchNormLayer``; no affine part: ResNet follows it with a Scale layer).

Prototxt: ``batch_norm_param { use_global_stats: <default phase == TEST>
moving_average_fraction: 0.999 eps: 1e-5 }``.

Shapes: bottom (N, C, ...) (a 1-axis bottom counts as one channel); top the same; in-place use
(``bottom: "x" top: "x"``) is supported. Statistics are over N and every axis after C.

Blobs (state, not learned): ``blobs[0]`` = running mean * s (C,), ``blobs[1]`` = running var * s
(C,), ``blobs[2]`` = s (1,). ``param_propagate_down`` is all False and ``layer_setup`` gives the
layer ``param { lr_mult: 0 decay_mult: 0 }`` for each blob (BVLC forces lr_mult 0; a non-zero
one in the prototxt is a NetError) so solvers leave them alone. They change in forward instead.

- Batch statistics (TRAIN default): ``mean``/``var`` (biased) over N*spatial; ``y = (x - mean) /
  sqrt(var + eps)``; then ``s <- s*f + 1``, ``blobs[0] <- blobs[0]*f + mean``, ``blobs[1] <-
  blobs[1]*f + var * m/(m-1)`` (m = values per channel; no correction when m == 1), f =
  moving_average_fraction. Backward: ``dx = (dy - mean(dy) - y * mean(dy * y)) / sqrt(var+eps)``.
- Global statistics (TEST default): ``mean = blobs[0]/s``, ``var = blobs[1]/s`` (both 0 if s is 0);
  backward ``dx = dy / sqrt(var + eps)``.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import register
from .base import TEST, Layer


@register("BatchNorm")
class BatchNormLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == TEST)
        self.fraction = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        shape = bottom[0].shape
        self.channels = 1 if len(shape) == 1 else shape[1]
        self.blobs = [self.new_blob((self.channels,)), self.new_blob((self.channels,)),
                      self.new_blob((1,))]
        self.param_propagate_down = [False] * 3
        specs = self.param.param
        for i in range(3):
            if i == len(specs):
                spec = specs.add()
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
            elif specs[i].lr_mult != 0:
                raise self.error("its statistics are not learnable parameters: remove the "
                                 f"param {{ }} blocks or give them lr_mult: 0 (param {i} has "
                                 f"lr_mult {specs[i].lr_mult:g})")
        self._x_norm = None   # y of the last batch-statistics forward (top may be overwritten)
        self._inv_std = None  # 1/sqrt(var + eps) per channel, shape (1, C, 1)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        channels = 1 if len(shape) == 1 else shape[1]
        if channels != self.channels:
            raise self.error(f"bottom shape {shape} has {channels} channels but the layer was "
                             f"set up for {self.channels}")
        if top[0] is not bottom[0]:
            top[0].reshape(shape)

    def _as3d(self, a):
        # (N, C, S): channel statistics reduce axes 0 and 2
        n = a.shape[0] if a.ndim else 1
        return a.reshape(n, self.channels, -1)

    def forward(self, bottom, top):
        x = self._as3d(bottom[0].data)
        # in place, the same view object: CuPy copies an input overlapping a distinct out=
        y = x if top[0] is bottom[0] else self._as3d(top[0].data)
        xp = get_array_module(x)
        if self.use_global_stats:
            s = self.blobs[2].data.reshape(-1)[0]
            if xp is np:
                factor = 0.0 if float(s) == 0 else 1.0 / float(s)
            else:   # stays on the device: float() would drain the GPU queue once per layer
                factor = xp.where(s == 0, 0.0, 1.0 / xp.where(s == 0, 1.0, s))
            mean = (self.blobs[0].data * factor).astype(x.dtype, copy=False)
            var = (self.blobs[1].data * factor).astype(x.dtype, copy=False)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            self._inv_std = inv_std.reshape(1, -1, 1)
            xp.subtract(x, mean.reshape(1, -1, 1), out=y)
            y *= self._inv_std
            self._x_norm = None
            return
        m = x.shape[0] * x.shape[2]
        mean = x.mean(axis=(0, 2))
        if self._x_norm is None or self._x_norm.shape != x.shape or self._x_norm.dtype != x.dtype:
            self._x_norm = xp.empty_like(x)
        xc = self._x_norm
        xp.subtract(x, mean.reshape(1, -1, 1), out=xc)
        # x is no longer needed, so y (possibly x itself) serves as scratch for the squares
        xp.multiply(xc, xc, out=y)
        var = y.mean(axis=(0, 2))
        f = self.fraction
        b_mean, b_var, b_s = (b.data for b in self.blobs)
        b_s *= f
        b_s += 1
        b_mean *= f
        b_mean += mean
        b_var *= f
        b_var += var * (m / (m - 1) if m > 1 else 1.0)
        self._inv_std = (1.0 / xp.sqrt(var + self.eps)).reshape(1, -1, 1)
        xc *= self._inv_std
        y[...] = xc

    def retained_top_data(self, top_index):
        # y of a batch-statistics forward: kept for backward, rewritten only by the next forward
        # (backward only reads it), so an in-place Scale after this layer may read it as its x
        return self._x_norm if top_index == 0 else None

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._as3d(top[0].diff)
        dx = dy if top[0] is bottom[0] else self._as3d(bottom[0].diff)  # in place: dy itself
        xp = get_array_module(dy)
        if self.use_global_stats:
            xp.multiply(dy, self._inv_std, out=dx)
            return
        y = self._x_norm
        tmp = dy * y
        mean_dy_y = tmp.mean(axis=(0, 2)).reshape(1, -1, 1)
        mean_dy = dy.mean(axis=(0, 2)).reshape(1, -1, 1)
        xp.multiply(y, mean_dy_y, out=tmp)
        xp.subtract(dy, tmp, out=dx)
        dx -= mean_dy
        dx *= self._inv_std
