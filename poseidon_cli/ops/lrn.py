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

import numpy

from ..backend import get_array_module

ACROSS_CHANNELS = "ACROSS_CHANNELS"
WITHIN_CHANNEL = "WITHIN_CHANNEL"


def _window_sum(a, n, region, fill=None, out=None):
    """Sum of ``a`` over the centred window (channel axis, or n x n spatial), zero padded.

    ``fill(dst)``, when given instead of ``a``, writes the summand into ``dst`` (a view of the
    zero-padded buffer), so it is formed there without an array of its own; ``a`` then only
    supplies shape and dtype. ``out``: optional buffer for the sum (shape and dtype of ``a``)."""
    xp = get_array_module(a)
    h = (n - 1) // 2
    N, C, H, W = a.shape

    def place(dst):
        if fill is None:
            dst[...] = a
        else:
            fill(dst)

    def first(src):
        if out is None:
            return src.copy()
        out[...] = src
        return out

    if region == ACROSS_CHANNELS:
        ap = xp.zeros((N, C + n - 1, H, W), dtype=a.dtype)
        place(ap[:, h:h + C])
        res = first(ap[:, 0:C])
        for i in range(1, n):
            res += ap[:, i:i + C]
        return res
    # separable n x n box: rows then columns (2n adds instead of n*n)
    ap = xp.zeros((N, C, H + n - 1, W), dtype=a.dtype)
    place(ap[:, :, h:h + H])
    rows = ap[:, :, 0:H].copy()
    for i in range(1, n):
        rows += ap[:, :, i:i + H]
    del ap
    rp = xp.zeros((N, C, H, W + n - 1), dtype=a.dtype)
    rp[:, :, :, h:h + W] = rows
    del rows
    res = first(rp[:, :, :, 0:W])
    for j in range(1, n):
        res += rp[:, :, :, j:j + W]
    return res


def _fits(buf, like):
    return buf is not None and buf.shape == like.shape and buf.dtype == like.dtype


def _check(x, local_size, region):
    if region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
        raise ValueError(f"unsupported LRN norm_region {region!r}")
    if local_size < 1 or local_size % 2 == 0:
        raise ValueError(f"LRN local_size must be a positive odd number, got {local_size}")
    if x.ndim != 4:
        raise ValueError(f"LRN expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")


# Input bytes per CPU chunk of images: the window sums' temporaries (padded copy, partial sums)
# are then a few chunk-sized arrays rather than several copies of the whole batch.
_CHUNK_BYTES = 1 << 22


def _image_chunks(xp, x):
    """``(n0, n1)`` ranges of images, about ``_CHUNK_BYTES`` of x each on the CPU (the whole batch
    on an accelerator). LRN never mixes images, so chunking changes no result."""
    N = x.shape[0]
    if xp is not numpy or N == 0:
        return [(0, N)]
    step = max(1, _CHUNK_BYTES // max(1, x.nbytes // N))
    return [(a, min(N, a + step)) for a in range(0, N, step)]


def lrn_forward(x, local_size=5, alpha=1.0, beta=0.75, k=1.0, region=ACROSS_CHANNELS, out=None,
                scale_out=None):
    """LRN forward.

    Args: x ``(N, C, H, W)``; local_size odd n; alpha, beta, k floats; region "ACROSS_CHANNELS" or
    "WITHIN_CHANNEL" (k ignored there); ``out`` / ``scale_out``: optional buffers for y and scale
    (used when shaped and typed like x; they must not overlap x or each other).
    Returns: ``(y, scale)``, both shaped like x; pass ``scale`` to ``lrn_backward``.
    Raises: ValueError for an even local_size, an unknown region or a non-4-D input.
    """
    _check(x, local_size, region)
    xp = get_array_module(x)
    if region == ACROSS_CHANNELS:
        coef, base = alpha / local_size, k
    else:
        coef, base = alpha / (local_size * local_size), 1.0
    y = out if _fits(out, x) else xp.empty_like(x)
    scale = scale_out if _fits(scale_out, x) else xp.empty_like(x)
    for n0, n1 in _image_chunks(xp, x):
        xc, sc, yc = x[n0:n1], scale[n0:n1], y[n0:n1]
        # x*x is formed inside the padded window buffer: no array of its own
        _window_sum(xc, local_size, region, fill=lambda dst: xp.multiply(xc, xc, out=dst),
                    out=sc)
        sc *= coef
        sc += base
        xp.power(sc, -beta, out=yc)
        yc *= xc   # x * scale**-beta (the product is the same either way round)
    return y, scale


def lrn_backward(x, y, scale, dy, local_size=5, alpha=1.0, beta=0.75, region=ACROSS_CHANNELS,
                 out=None):
    """LRN backward: ``dx`` shaped like x (a fresh array, or ``out`` when it is shaped and typed
    like x; it must not overlap the inputs), from the forward's ``y`` and ``scale``."""
    _check(x, local_size, region)
    xp = get_array_module(x)
    size = local_size if region == ACROSS_CHANNELS else local_size * local_size
    dx = out if _fits(out, x) else xp.empty_like(x)
    for n0, n1 in _image_chunks(xp, x):
        xc, yc, sc, dyc, dxc = x[n0:n1], y[n0:n1], scale[n0:n1], dy[n0:n1], dx[n0:n1]

        def ratio(dst):   # dy * y / scale, formed in the padded window buffer
            xp.multiply(dyc, yc, out=dst)
            dst /= sc
        t = _window_sum(xc, local_size, region, fill=ratio)
        xp.power(sc, -beta, out=dxc)
        dxc *= dyc   # dy * scale**-beta
        cx = xc * (2.0 * alpha * beta / size)
        t *= cx   # (c * x) * t, into t's own buffer
        dxc -= t
    return dx
