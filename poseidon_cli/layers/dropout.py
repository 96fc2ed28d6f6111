"""Dropout (inverted): at TRAIN ``y = x * mask / (1 - ratio)``, mask ~ Bernoulli(1 - ratio);
at TEST ``y = x`` (no scaling), as in Caffe.

Field: ``dropout_param.dropout_ratio`` (default 0.5, must be in [0, 1)). The mask is drawn from
``self.rng`` (the Net seeds it), so re-seeding the layer repeats the mask; on the GPU a device
generator seeded from ``self.rng`` draws it instead of copying a host mask. Backward multiplies
by the same scaled mask, so the layer is safe in place.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from . import register
from ._neuron import NeuronLayer
from .base import TRAIN


@register("Dropout")
class DropoutLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self.ratio = float(self.param.dropout_param.dropout_ratio)
        if not 0 <= self.ratio < 1:
            raise self.error(f"dropout_param.dropout_ratio must be in [0, 1), got {self.ratio:g}")
        self.scale = 1.0 / (1.0 - self.ratio)
        self._mask = None       # scaled mask (0 or 1/(1-ratio)) of the last TRAIN forward
        self._device_rng = None

    def _uniform(self, xp, shape):
        """U[0, 1) samples of ``shape`` on ``xp``, drawn from (or seeded by) ``self.rng``."""
        if xp is np:
            return self.rng.random(shape, dtype=np.float32)
        seed = int(self.rng.integers(0, 2**63 - 1))
        if self._device_rng is None:
            # Philox: cheap to re-seed every iteration (XORWOW re-initialises big state)
            self._device_rng = xp.random.RandomState(
                seed, method=xp.cuda.curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
        else:
            self._device_rng.seed(seed)
        return self._device_rng.random_sample(shape, dtype=np.float32)

    def forward(self, bottom, top):
        x, y = bottom[0].data, top[0].data
        xp = get_array_module(x)
        if self.phase != TRAIN:
            if y is not x:
                y[...] = x
            return
        u = self._uniform(xp, x.shape)
        # keep iff u >= ratio, i.e. with probability 1 - ratio
        mask = (u >= self.ratio).astype(x.dtype)
        mask *= self.scale
        self._mask = mask
        xp.multiply(x, mask, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.phase != TRAIN:
            if dx is not dy:
                dx[...] = dy
            return
        get_array_module(dy).multiply(dy, self._mask, out=dx)
