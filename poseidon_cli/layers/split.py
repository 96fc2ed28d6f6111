"""Split: copy one bottom into k tops; backward sums the k top diffs into the bottom diff.

Inserted by the Net wherever one blob feeds several bottoms (see ``net.insert_splits``); it is
rarely written by hand. Tops are copies rather than aliases of the bottom, so an in-place layer on
one branch can never alter what another branch reads.
"""
from __future__ import annotations

from . import register
from .base import Layer


@register("Split")
class SplitLayer(Layer):
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        for t in top:
            t.data[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        d = bottom[0].diff
        if len(top) == 1:
            d[...] = top[0].diff
            return
        xp.add(top[0].diff, top[1].diff, out=d)
        for t in top[2:]:
            d += t.diff
