"""Local response normalisation (Caffe ``LRN``, BVLC ``lrn_layer.cpp``), NumPy or CuPy.

ACROSS_CHANNELS: ``scale[c] = k + alpha/n * sum_{c' in window(c)} x[c']**2`` over the ``n`` channels
centred on ``c`` (zero outside), ``y = x * scale**-beta``. alpha is divided by n (as in Caffe and
PyTorch, unlike the AlexNet paper).

WITHIN_CHANNEL: ``scale = 1 + alpha/n**2 * sum over the n x n spatial window`` (zero padded, same
size), ``y = x * scale**-beta``. Caffe fixes the additive constant at 1 here, so ``k`` is ignored.

Backward (both): ``dx = dy * scale**-beta - 2*alpha*beta/|window| * x * W(dy * y / scale)`` where
``W`` is the same (symmetric) window sum and ``|window|`` is n or n**2.
"""
from __future__ import annotations

from ..backend import get_array_module

ACROSS_CHANNELS = "ACROSS_CHANNELS"
WITHIN_CHANNEL = "WITHIN_CHANNEL"


def _window_sum(a, n, region):
    """Sum of ``a`` over the centred window (channel axis, or n x n spatial), zero padded."""
    xp = get_array_module(a)
    h = (n - 1) // 2
    N, C, H, W = a.shape
    if region == ACROSS_CHANNELS:
        ap = xp.zeros((N, C + n - 1, H, W), dtype=a.dtype)
        ap[:, h:h + C] = a
        out = ap[:, 0:C].copy()
        for i in range(1, n):
            out += ap[:, i:i + C]
        return out
    # separable n x n box: rows then columns (2n adds instead of n*n)
    ap = xp.zeros((N, C, H + n - 1, W), dtype=a.dtype)
    ap[:, :, h:h + H] = a
    rows = ap[:, :, 0:H].copy()
    for i in range(1, n):
        rows += ap[:, :, i:i + H]
    rp = xp.zeros((N, C, H, W + n - 1), dtype=a.dtype)
    rp[:, :, :, h:h + W] = rows
    out = rp[:, :, :, 0:W].copy()
    for j in range(1, n):
        out += rp[:, :, :, j:j + W]
    return out


def _check(x, local_size, region):
    if region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
        raise ValueError(f"unsupported LRN norm_region {region!r}")
    if local_size < 1 or local_size % 2 == 0:
        raise ValueError(f"LRN local_size must be a positive odd number, got {local_size}")
    if x.ndim != 4:
        raise ValueError(f"LRN expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")


def lrn_forward(x, local_size=5, alpha=1.0, beta=0.75, k=1.0, region=ACROSS_CHANNELS):
    """LRN forward.

    Args: x ``(N, C, H, W)``; local_size odd n; alpha, beta, k floats; region "ACROSS_CHANNELS" or
    "WITHIN_CHANNEL" (k ignored there).
    Returns: ``(y, scale)``, both shaped like x; pass ``scale`` to ``lrn_backward``.
    Raises: ValueError for an even local_size, an unknown region or a non-4-D input.
    """
    _check(x, local_size, region)
    xp = get_array_module(x)
    if region == ACROSS_CHANNELS:
        coef, base = alpha / local_size, k
    else:
        coef, base = alpha / (local_size * local_size), 1.0
    scale = _window_sum(x * x, local_size, region)
    scale *= coef
    scale += base
    y = x * xp.power(scale, -beta)
    return y, scale


def lrn_backward(x, y, scale, dy, local_size=5, alpha=1.0, beta=0.75, region=ACROSS_CHANNELS):
    """LRN backward: ``dx`` shaped like x (a fresh array), from the forward's ``y`` and ``scale``."""
    _check(x, local_size, region)
    xp = get_array_module(x)
    size = local_size if region == ACROSS_CHANNELS else local_size * local_size
    t = _window_sum(dy * y / scale, local_size, region)
    dx = dy * xp.power(scale, -beta)
    dx -= (2.0 * alpha * beta / size) * x * t
    return dx
