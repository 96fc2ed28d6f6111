"""Concat: join bottoms along one axis (Caffe's ``ConcatLayer``).

Prototxt: ``concat_param { axis: 1 }`` (negative counts from the end) or the legacy
``concat_dim`` (non-negative; wins when set, as V1 files from Poseidon use it).

Shapes: every bottom has the same number of axes and the same size on every axis except
``axis``; top's ``axis`` is the sum of the bottoms'. One bottom: the top aliases it (no work).
Backward slices top diff back to each bottom that needs it.

Errors (NetError naming the layer): axis out of range, differing ranks or sizes.
"""
from __future__ import annotations

from ..backend import get_array_module
from . import register
from .base import Layer


def canonical_axis(layer, axis: int, ndim: int, field: str) -> int:
    """Caffe's CanonicalAxisIndex: ``axis`` in [-ndim, ndim) -> [0, ndim), else NetError."""
    if not -ndim <= axis < ndim:
        raise layer.error(f"{field} {axis} is out of range for a {ndim}-axis bottom "
                          f"(valid: {-ndim}..{ndim - 1})")
    return axis % ndim if ndim else 0


@register("Concat")
class ConcatLayer(Layer):
    min_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.concat_param
        self._axis_param = int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis)
        self._field = "concat_dim" if p.HasField("concat_dim") else "axis"

    def reshape(self, bottom, top):
        first = bottom[0].shape
        axis = canonical_axis(self, self._axis_param, len(first), f"concat_param.{self._field}")
        total = 0
        for i, b in enumerate(bottom):
            s = b.shape
            if len(s) != len(first) or s[:axis] != first[:axis] or s[axis + 1:] != first[axis + 1:]:
                raise self.error(
                    f"bottom[{i}] has shape {s} but bottom[0] has {first}: all dimensions except "
                    f"axis {axis} must match")
            total += s[axis]
        self.axis = axis
        shape = first[:axis] + (total,) + first[axis + 1:]
        if len(bottom) == 1:
            top[0].reshape(shape)
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])
        else:
            top[0].reshape(shape)

    def _slices(self, bottom):
        start = 0
        lead = (slice(None),) * self.axis
        for b in bottom:
            stop = start + b.shape[self.axis]
            yield lead + (slice(start, stop),)
            start = stop

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return  # top aliases bottom
        xp = get_array_module(top[0].data)
        xp.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        dy = top[0].diff
        for b, sl, need in zip(bottom, self._slices(bottom), propagate_down):
            if need:
                b.diff[...] = dy[sl]
