"""Split: one bottom feeds k tops; backward sums the k top diffs into the bottom diff.

Inserted by the Net wherever one blob feeds several bottoms (see ``net.insert_splits``); it is
rarely written by hand. Each top has a diff of its own. A top's data is either its own copy of
the bottom (the default, and what a Split used on its own does) or, as in Caffe, an alias of
the bottom's data: the Net asks for aliases (``alias_tops``) for every top whose memory no later
in-place layer writes, so a branch can never alter what another branch reads, yet no copy is
made for branches that only read.
"""
from __future__ import annotations

from . import register
from .base import Layer


@register("Split")
class SplitLayer(Layer):
    exact_num_bottom = 1
    min_top = 1

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        #: per top: True = its data aliases the bottom's data (no copy), False = a copy
        self.alias_tops = ()

    def _aliased(self, k):
        return k < len(self.alias_tops) and self.alias_tops[k]

    def reshape(self, bottom, top):
        for k, t in enumerate(top):
            t.reshape(bottom[0].shape)
            if self._aliased(k):
                t.share_data(bottom[0])

    def forward(self, bottom, top):
        x = bottom[0].data
        for k, t in enumerate(top):
            if self._aliased(k):
                # again each time: a producer may have given its blob a fresh array since reshape
                t.share_data(bottom[0])
            else:
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
