"""MAX / AVE 2-D pooling with Caffe's exact semantics (caffe-semantics.md §2.4), NumPy or CuPy.

- Output size: CEIL rule ``P = ceil((H + 2*pad - k) / stride) + 1``; when ``pad > 0`` and the last
  window would start at or beyond ``H + pad``, ``P`` is decremented (``pool_out_size``).
- Window of output ``ph``: ``hstart = ph*stride - pad``, ``hend = min(hstart + k, H + pad)``.
- AVE: divisor ``(hend - hstart) * (wend - wstart)`` taken before clamping to the image, so zero
  padding counts but the ceil overhang past ``H + pad`` does not; the sum covers the image part only.
- MAX: the window is clamped to the image (padding never wins); strict ">" scan in row-major window
  order, so the first maximum wins; backward routes each output's gradient to that single input,
  accumulating where windows overlap.
- Global pooling: ``k = (H, W)``, stride 1, pad 0 (pad must be 0).

Vectorised as a kh*kw loop of strided shifted slices over a padded copy of the input.
"""
from __future__ import annotations

import math

from ..backend import get_array_module

MAX = "MAX"
AVE = "AVE"


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a (h, w) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def pool_out_size(H, k, pad=0, stride=1):
    """Caffe pooling output length (ceil rule with the pad clipping rule). Raises ValueError when
    the kernel does not fit (``k > H + 2*pad``) or ``pad >= k``."""
    if stride < 1 or k < 1:
        raise ValueError(f"pooling kernel {k} / stride {stride} must be >= 1")
    if pad >= k:
        raise ValueError(f"pooling pad {pad} must be smaller than the kernel {k}")
    if k > H + 2 * pad:
        raise ValueError(f"pooling kernel {k} larger than the padded input {H} + 2*{pad}")
    out = int(math.ceil(float(H + 2 * pad - k) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= H + pad:
        out -= 1  # the last window must start inside the image or its left/top pad
    return out


def _geometry(x_shape, kernel, stride, pad, global_pooling):
    N, C, H, W = (int(s) for s in x_shape)
    if global_pooling:
        if _pair(pad, "pad") != (0, 0):
            raise ValueError("global pooling requires pad 0")
        return N, C, H, W, H, W, 1, 1, 0, 0, 1, 1
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(pad, "pad")
    Ph, Pw = pool_out_size(H, kh, ph, sh), pool_out_size(W, kw, pw, sw)
    return N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw


def _padded(x, ph, pw, Hp, Wp, fill):
    """x placed at offset (ph, pw) in an (N, C, Hp, Wp) array filled with ``fill``; Hp/Wp cover the
    last (possibly overhanging) window so every shifted slice is in bounds."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.full((N, C, Hp, Wp), fill, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, dtype):
    hs = xp.arange(Ph) * sh - ph
    ws = xp.arange(Pw) * sw - pw
    hcount = xp.minimum(hs + kh, H + ph) - hs
    wcount = xp.minimum(ws + kw, W + pw) - ws
    return (hcount[:, None] * wcount[None, :]).astype(dtype)


def pool2d_forward(x, mode, kernel=1, stride=1, pad=0, global_pooling=False):
    """Pooling forward.

    Args:
        x: ``(N, C, H, W)``. mode: "MAX" or "AVE". kernel/stride/pad: int or ``(h, w)``.
        global_pooling: pool the whole plane (kernel/stride ignored, pad must be 0).
    Returns:
        ``(y, mask)``: y ``(N, C, Ph, Pw)``; for MAX, ``mask`` is int32 of y's shape holding Caffe's
        argmax mask (flat index ``h*W + w`` into the input plane); for AVE, None.
    Raises:
        ValueError for an unknown mode or a kernel that does not fit.
    """
    xp = get_array_module(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = _geometry(x.shape, kernel, stride, pad,
                                                           global_pooling)
    Hp, Wp = (Ph - 1) * sh + kh, (Pw - 1) * sw + kw
    Hp, Wp = max(Hp, H + ph), max(Wp, W + pw)
    hspan, wspan = sh * (Ph - 1) + 1, sw * (Pw - 1) + 1
    if mode == MAX:
        xpad = _padded(x, ph, pw, Hp, Wp, -xp.inf)
        y = xpad[:, :, 0:hspan:sh, 0:wspan:sw].copy()
        best = xp.zeros((N, C, Ph, Pw), dtype=xp.int32)  # window offset i*kw + j of the max
        for i in range(kh):
            for j in range(kw):
                if i == 0 and j == 0:
                    continue
                cand = xpad[:, :, i:i + hspan:sh, j:j + wspan:sw]
                better = cand > y  # strict: an equal later value never replaces the first max
                xp.copyto(y, cand, where=better)
                xp.copyto(best, i * kw + j, where=better)
        # offset -> Caffe's flat input index; the max is never padding, so indices are in range
        hrow = (xp.arange(Ph, dtype=xp.int32) * sh - ph)[:, None]
        wcol = (xp.arange(Pw, dtype=xp.int32) * sw - pw)[None, :]
        mask = (hrow + best // kw) * W + (wcol + best % kw)
        return y, mask.astype(xp.int32)
    if mode == AVE:
        xpad = _padded(x, ph, pw, Hp, Wp, 0)
        acc = xpad[:, :, 0:hspan:sh, 0:wspan:sw].copy()
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    acc += xpad[:, :, i:i + hspan:sh, j:j + wspan:sw]
        acc /= _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, x.dtype)
        return acc, None
    raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")


def pool2d_backward(dy, mask, x_shape, mode, kernel=1, stride=1, pad=0, global_pooling=False):
    """Pooling backward: returns ``dx`` of shape ``x_shape`` (a fresh array).

    Args: ``dy`` ``(N, C, Ph, Pw)``; ``mask`` as returned by ``pool2d_forward`` (MAX; ignored for
    AVE); the same geometry arguments as the forward call.
    """
    xp = get_array_module(dy)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = _geometry(x_shape, kernel, stride, pad,
                                                           global_pooling)
    if tuple(dy.shape) != (N, C, Ph, Pw):
        raise ValueError(f"dy shape {tuple(dy.shape)} != pooled shape {(N, C, Ph, Pw)}")
    Hp, Wp = max((Ph - 1) * sh + kh, H + ph), max((Pw - 1) * sw + kw, W + pw)
    hspan, wspan = sh * (Ph - 1) + 1, sw * (Pw - 1) + 1
    dxpad = xp.zeros((N, C, Hp, Wp), dtype=dy.dtype)
    if mode == MAX:
        if mask is None:
            raise ValueError("MAX pooling backward needs the forward's mask")
        hrow = (xp.arange(Ph, dtype=xp.int32) * sh - ph)[:, None]
        wcol = (xp.arange(Pw, dtype=xp.int32) * sw - pw)[None, :]
        # decode the flat index into the window offset (i, j) of the argmax
        off = (mask // W - hrow) * kw + (mask % W - wcol)
        zero = xp.zeros((), dtype=dy.dtype)
        for i in range(kh):
            for j in range(kw):
                # within one offset the targets are distinct, so a plain += accumulates correctly
                dxpad[:, :, i:i + hspan:sh, j:j + wspan:sw] += xp.where(off == i * kw + j, dy, zero)
    elif mode == AVE:
        g = dy / _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, dy.dtype)
        for i in range(kh):
            for j in range(kw):
                dxpad[:, :, i:i + hspan:sh, j:j + wspan:sw] += g
    else:
        raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")
    return xp.ascontiguousarray(dxpad[:, :, ph:ph + H, pw:pw + W])
