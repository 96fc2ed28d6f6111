"""Softmax along one axis, forward and backward (pure array math, NumPy or CuPy).

Caffe's semantics: the softmax is taken over ``axis`` independently at every other index (for an
N,C,H,W blob and axis 1: over channels at every pixel), after subtracting the per-position maximum
so large scores never overflow. Inputs keep their dtype; ``out`` may alias the input (in-place).
"""
from __future__ import annotations

from ..backend import get_array_module


def softmax_forward(x, axis=1, out=None):
    """``y = exp(x - max) / sum(exp(x - max))`` along ``axis``; returns ``out`` (allocated if None).

    ``out`` may be ``x`` itself.
    """
    xp = get_array_module(x)
    m = x.max(axis=axis, keepdims=True)
    if out is None:
        out = xp.empty_like(x)
    xp.subtract(x, m, out=out)
    xp.exp(out, out=out)
    s = out.sum(axis=axis, keepdims=True)
    out /= s
    return out


def softmax_backward(y, dy, axis=1, out=None):
    """Gradient w.r.t. the input given the output ``y`` and its gradient ``dy``:
    ``dx = (dy - sum(dy * y, axis)) * y``. ``out`` may alias ``dy`` (in-place layers)."""
    xp = get_array_module(y, dy)
    dot = (dy * y).sum(axis=axis, keepdims=True)
    if out is None:
        out = xp.empty_like(dy)
    xp.subtract(dy, dot, out=out)
    out *= y
    return out


def log_softmax(x, axis=1):
    """``log(softmax(x))`` computed stably (no log of an underflowed 0)."""
    xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    z -= xp.log(xp.exp(z).sum(axis=axis, keepdims=True))
    return z
