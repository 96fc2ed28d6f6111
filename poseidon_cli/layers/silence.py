"""Silence: consume blobs nobody else reads, so they are not net outputs (Caffe's
``SilenceLayer``). Any number (>= 1) of bottoms, no tops; forward does nothing; backward zeroes
the diff of every bottom that needs one (so upstream layers see a zero gradient, not garbage).
"""
from __future__ import annotations

from . import register
from .base import Layer


@register("Silence")
class SilenceLayer(Layer):
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, need in zip(bottom, propagate_down):
            if need:
                b.diff[...] = 0
