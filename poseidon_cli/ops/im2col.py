"""Column (patch) matrices for convolution, built from strided views (no per-pixel Python loops).

Two layouts, chosen by the caller for speed (both hold the same numbers):

- *NHWC rows* (``cols_nhwc``): a ``(m, Ho, Wo, kh, kw, C)`` array; reshaped to ``(m*Ho*Wo, kh*kw*C)``
  it is the patch matrix with one row per output pixel. Built by ONE copy from a strided view of the
  zero-padded NHWC input, whose innermost run is ``C`` contiguous floats: fast when C is not tiny.
- *channel-major* (``cols_cmajor``): a ``(C, kh, kw, m, Ho, Wo)`` array, i.e. ``(C*kh*kw, m*Ho*Wo)``,
  Caffe's own im2col order. Built by kh*kw slice copies whose runs are ``Wo`` floats: better for
  C = 1..3 (first layers), where NHWC runs would be 1-3 floats long.

``col2im_nhwc_add`` is the adjoint of ``cols_nhwc``: it scatter-adds a patch array back onto a
padded NHWC gradient with kh*kw vectorised shifted-slice adds.

All functions work on NumPy or CuPy arrays (``xp = get_array_module(x)``).
"""
from __future__ import annotations

from ..backend import get_array_module


def padded_nhwc(x, pad_h, pad_w, extra_h=0, extra_w=0):
    """Zero-padded NHWC copy of NCHW ``x``: shape ``(N, H + 2ph + extra_h, W + 2pw + extra_w, C)``.

    ``extra_*`` adds zero rows/cols at the bottom/right only (used when a view needs more room)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.zeros((N, H + 2 * pad_h + extra_h, W + 2 * pad_w + extra_w, C), dtype=x.dtype)
    out[:, pad_h:pad_h + H, pad_w:pad_w + W, :] = x.transpose(0, 2, 3, 1)
    return out


def padded_nchw(x, pad_h, pad_w):
    """Zero-padded copy of NCHW ``x`` (returns ``x`` itself when both pads are 0)."""
    if pad_h == 0 and pad_w == 0:
        return x
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.zeros((N, C, H + 2 * pad_h, W + 2 * pad_w), dtype=x.dtype)
    out[:, :, pad_h:pad_h + H, pad_w:pad_w + W] = x
    return out


def patch_view_nhwc(xh, kh, kw, Ho, Wo, sh, sw, dh, dw):
    """Read-only strided view ``(N, Ho, Wo, kh, kw, C)`` of padded NHWC ``xh``:
    ``view[n, h, w, i, j, c] = xh[n, h*sh + i*dh, w*sw + j*dw, c]``. No copy."""
    xp = get_array_module(xh)
    sN, sH, sW, sC = xh.strides
    N, C = xh.shape[0], xh.shape[3]
    return xp.lib.stride_tricks.as_strided(
        xh, shape=(N, Ho, Wo, kh, kw, C),
        strides=(sN, sH * sh, sW * sw, sH * dh, sW * dw, sC))


def cols_nhwc(view, n0, n1, out):
    """Copy images ``n0:n1`` of a ``patch_view_nhwc`` view into ``out[:n1-n0]`` and return that part
    (shape ``(n1-n0, Ho, Wo, kh, kw, C)``, C-contiguous)."""
    xp = get_array_module(out)
    dst = out[:n1 - n0]
    xp.copyto(dst, view[n0:n1])
    return dst


def cols_cmajor(xpad, n0, n1, c0, c1, kh, kw, Ho, Wo, sh, sw, dh, dw, out):
    """Caffe-order columns of images ``n0:n1``, channels ``c0:c1`` of padded NCHW ``xpad`` into
    ``out[:, :, :, :n1-n0]`` (``out`` shape ``(C', kh, kw, nb, Ho, Wo)``); returns that part."""
    m = n1 - n0
    dst = out[:, :, :, :m]
    src = xpad[n0:n1, c0:c1].transpose(1, 0, 2, 3)
    for i in range(kh):
        hi = i * dh
        for j in range(kw):
            wj = j * dw
            dst[:, i, j] = src[:, :, hi:hi + sh * (Ho - 1) + 1:sh, wj:wj + sw * (Wo - 1) + 1:sw]
    return dst


def col2im_nhwc_add(cols, dxh, n0, sh, sw, dh, dw):
    """Adjoint of the NHWC patch view: ``dxh[n0+n, h*sh + i*dh, w*sw + j*dw, c] += cols[n, h, w, i,
    j, c]`` for every index. ``cols`` is ``(m, Ho, Wo, kh, kw, C)``; ``dxh`` is padded NHWC and
    accumulated in place. kh*kw vectorised adds: within one (i, j) the targets are distinct."""
    m, Ho, Wo, kh, kw, _ = cols.shape
    for i in range(kh):
        hi = i * dh
        for j in range(kw):
            wj = j * dw
            dxh[n0:n0 + m, hi:hi + sh * (Ho - 1) + 1:sh, wj:wj + sw * (Wo - 1) + 1:sw, :] += \
                cols[:, :, :, i, j, :]
