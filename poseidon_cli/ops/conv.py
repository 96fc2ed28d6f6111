"""2-D convolution and deconvolution (Caffe semantics), forward and backward, on NumPy or CuPy.

Semantics (BVLC ``conv_layer.cpp``, ``im2col.cpp``): cross-correlation (no kernel flip), zero
padding, stride, dilation, ``group`` contiguous channel blocks (output block g sees input block g
only), optional per-output-channel bias. Layout NCHW; weight ``(O, C/group, kh, kw)``. Works for any float dtype
(float32 in the engine, float64 in gradient tests); the result has ``x``'s dtype.

Method: im2col + one GEMM per (group, batch chunk). On the CPU the batch is cut into chunks whose
column matrix is about 1 MB, so the column copy and the GEMM that consumes it stay in cache
(faster than one batch-wide column matrix, which is memory-bound on CPUs).
On a GPU a chunk holds up to 1 GB of columns, usually the whole batch (``_chunk``). Columns are
built from a strided view in one copy (NHWC rows, see ``im2col.py``), or in Caffe's channel-major
order when a group has <= 4 channels. 1x1 / stride 1 / pad 0 convolutions skip columns: a
batched GEMM.

Backward-data with stride 1 is a forward convolution of ``dy`` with the flipped, transposed kernel
(pad ``d*(k-1) - pad``), which reuses the fast forward; other strides use a GEMM to column
gradients and a kh*kw shifted-slice scatter-add (``col2im_nhwc_add``).

Deconvolution (Caffe ``Deconvolution``, weight ``(C_in, C_out/group, kh, kw)``) is the adjoint:
forward = convolution backward-data, backward-data = convolution forward, see ``deconv2d_*``.

Errors: ``ValueError`` for inconsistent shapes (channels not divisible by ``group``, weight channel
count mismatch, kernel larger than the padded input).
"""
from __future__ import annotations

import numpy

from ..backend import get_array_module
from . import threads
from .im2col import col2im_nhwc_add, cols_cmajor, cols_nhwc, patch_view_nhwc

# Bytes of column matrix per CPU chunk (at least one image). On the 2-core EPYC (L2 512 KB/core,
# shared L3) 0.5-2 MB measured best (CIFAR-10 quick conv2 forward, 1 thread: 31-33 ms vs 42 ms
# at 4 MB); a GEMM of one image's columns (32 x 800 x 256) still runs at ~55 GFLOP/s.
_CHUNK_BYTES = 1 << 20
# Bytes of column matrix per GPU chunk: large GEMMs for cuBLAS without exhausting device memory.
_GPU_CHUNK_BYTES = 1 << 30
# Groups with at most this many channels use Caffe-order columns (runs of Wo floats, not C floats).
_CMAJOR_MAX_CHANNELS = 4


def _pair(v, name):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a (h, w) pair, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def conv_out_size(H, k, pad=0, stride=1, dilation=1):
    """Convolution output length along one axis (floor rule):
    ``(H + 2*pad - (dilation*(k-1) + 1)) // stride + 1``. Raises ValueError if it is < 1."""
    k_eff = dilation * (k - 1) + 1
    out = (H + 2 * pad - k_eff) // stride + 1
    if out < 1 or stride < 1 or k < 1 or dilation < 1:
        raise ValueError(f"convolution of size {H} with kernel {k} (dilation {dilation}), pad {pad}, "
                         f"stride {stride} has no output")
    return out


def deconv_out_size(H, k, pad=0, stride=1, dilation=1):
    """Deconvolution output length: ``stride*(H-1) + dilation*(k-1) + 1 - 2*pad`` (Caffe's rule)."""
    out = stride * (H - 1) + dilation * (k - 1) + 1 - 2 * pad
    if out < 1:
        raise ValueError(f"deconvolution of size {H} with kernel {k}, pad {pad}, stride {stride} "
                         f"has no output")
    return out


class _Geom:
    """Validated geometry of one convolution (conv view: x (N,C,H,W) -> y (N,O,Ho,Wo))."""

    def __init__(self, x_shape, w_shape, stride, pad, dilation, group):
        N, C, H, W = (int(s) for s in x_shape)
        O, Cg, kh, kw = (int(s) for s in w_shape)
        group = int(group)
        if group < 1 or C % group or O % group:
            raise ValueError(f"channels ({C} in, {O} out) must be divisible by group {group}")
        if Cg * group != C:
            raise ValueError(f"weight shape {tuple(w_shape)} expects {Cg * group} input channels "
                             f"(group {group}), input has {C}")
        self.N, self.C, self.H, self.W, self.O = N, C, H, W, O
        self.kh, self.kw, self.g = kh, kw, group
        self.Cg, self.Og = Cg, O // group
        self.sh, self.sw = _pair(stride, "stride")
        self.ph, self.pw = _pair(pad, "pad")
        self.dh, self.dw = _pair(dilation, "dilation")
        self.Ho = conv_out_size(H, kh, self.ph, self.sh, self.dh)
        self.Wo = conv_out_size(W, kw, self.pw, self.sw, self.dw)
        self.K = Cg * kh * kw

    @property
    def pointwise(self):
        return (self.kh == self.kw == 1 and self.sh == self.sw == 1 and self.ph == self.pw == 0)

    @property
    def cmajor(self):
        return self.Cg <= _CMAJOR_MAX_CHANNELS


def _chunk(xp, g, itemsize, n=None):
    """Images per chunk out of ``n`` (default: the batch): a cache-sized piece on the CPU; on an
    accelerator as many as fit in ``_GPU_CHUNK_BYTES`` of columns (the whole batch for AlexNet at
    128: 0.56 GB for conv1; VGG-16's conv1_2 at batch 64 would need 7.4 GB in one piece)."""
    n = g.N if n is None else n
    per_image = max(1, g.Ho * g.Wo * g.K * itemsize)
    budget = _CHUNK_BYTES if xp is numpy else _GPU_CHUNK_BYTES
    return max(1, min(n, budget // per_image))


# Below this many output pixels a 1x1 weight gradient gathers the batch into one GEMM (per-image
# GEMMs with so short an inner dimension run far below peak); above it, one GEMM per image on
# the pool, without the gathering copies.
_POINTWISE_PER_IMAGE_PIXELS = 1024


def _weights_nhwc(w, g):
    """Per-group ``(Og, kh*kw*Cg)`` matrices matching NHWC column order (i, j, c)."""
    xp = get_array_module(w)
    wt = xp.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(g.O, g.K)
    return [wt[gi * g.Og:(gi + 1) * g.Og] for gi in range(g.g)]


def _weights_cmajor(w, g):
    w2 = w.reshape(g.O, g.K)
    return [w2[gi * g.Og:(gi + 1) * g.Og] for gi in range(g.g)]


def _result(xp, shape, dtype, out):
    """``out`` when it can take the result in place (C-contiguous, same shape and dtype), else a
    fresh array: writing into the caller's buffer saves an allocation and a copy."""
    if out is not None and tuple(out.shape) == tuple(shape) and out.dtype == dtype \
            and out.flags.c_contiguous:
        return out
    return xp.empty(shape, dtype=dtype)


def _forward(x, w, b, g, out=None):
    xp = get_array_module(x, w)
    N, O, Ho, Wo = g.N, g.O, g.Ho, g.Wo
    y = _result(xp, (N, O, Ho, Wo), x.dtype, out)
    y3 = y.reshape(N, O, Ho * Wo)
    bias = None if b is None else b.reshape(O, 1).astype(x.dtype, copy=False)

    if g.pointwise:
        x3 = x.reshape(N, g.C, g.H * g.W)
        w2 = w.reshape(O, g.Cg)

        def run_pointwise(n0, n1):
            for gi in range(g.g):
                os_, cs = slice(gi * g.Og, (gi + 1) * g.Og), slice(gi * g.Cg, (gi + 1) * g.Cg)
                xp.matmul(w2[os_], x3[n0:n1, cs], out=y3[n0:n1, os_])
            if bias is not None:
                y3[n0:n1] += bias
        threads.parallel_for(N, run_pointwise, xp, cost=y.nbytes)
        return y

    if g.cmajor:
        wmats = _weights_cmajor(w, g)
    else:   # (K, Og) per group: NHWC columns are the GEMM's left operand (see _forward_range)
        wmats = [xp.ascontiguousarray(m.T) for m in _weights_nhwc(w, g)]
    threads.parallel_for(N, lambda n0, n1: _forward_range(x, wmats, bias, g, n0, n1, y3), xp,
                         cost=y.nbytes)
    return y


class _PaddedChunks:
    """The zero-padded input of one chunk of images at a time, in the layout the column builder
    reads (NCHW for Caffe's channel-major columns, NHWC otherwise), plus a column buffer for
    ``nb`` images (forward and weight gradient). One padded buffer of ``nb`` images is reused:
    its border stays zero and each chunk overwrites the interior, so a thread never holds a
    padded copy of its whole slice of the batch."""

    def __init__(self, xp, g, xs, nb):
        self.g, self.xs = g, xs
        C, H, W = xs.shape[1:]
        dt = xs.dtype
        if g.cmajor:
            self.colbuf = xp.empty((g.Cg, g.kh, g.kw, nb, g.Ho, g.Wo), dtype=dt)
            pad = g.ph or g.pw
            self.buf = xp.zeros((nb, C, H + 2 * g.ph, W + 2 * g.pw), dtype=dt) if pad else None
        else:
            self.colbuf = xp.empty((nb, g.Ho, g.Wo, g.kh, g.kw, g.Cg), dtype=dt)
            self.buf = xp.zeros((nb, H + 2 * g.ph, W + 2 * g.pw, C), dtype=dt)

    def chunk(self, a, e):
        """Images ``a:e`` of the slice, padded (a view; valid until the next call)."""
        g, m = self.g, e - a
        if self.buf is None:   # channel-major without padding: read the input itself
            return self.xs[a:e]
        H, W = self.xs.shape[2:]
        dst = self.buf[:m]
        if g.cmajor:
            dst[:, :, g.ph:g.ph + H, g.pw:g.pw + W] = self.xs[a:e]
        else:
            dst[:, g.ph:g.ph + H, g.pw:g.pw + W, :] = self.xs[a:e].transpose(0, 2, 3, 1)
        return dst


def _forward_range(x, wmats, bias, g, n0, n1, y3):
    """Forward of images ``n0:n1`` into ``y3[n0:n1]`` (``(N, O, Ho*Wo)``), in cache-sized chunks
    with buffers of its own (one call per thread). ``wmats``: per group ``(Og, K)`` for
    channel-major columns, ``(K, Og)`` for NHWC columns.

    NHWC columns ``(pixels, K)`` are multiplied as ``cols @ W^T`` -> ``(pixels, Og)``, then written
    transposed into NCHW: OpenBLAS runs this faster than ``W @ cols^T``, as it packs a
    non-transposed left operand more cheaply (README, Performance, has the measurement)."""
    xp = get_array_module(x)
    Ho, Wo = g.Ho, g.Wo
    xs = x[n0:n1]
    N = n1 - n0
    nb = _chunk(xp, g, x.dtype.itemsize, N)
    gemm_out = xp.empty((g.Og, nb * Ho * Wo) if g.cmajor else (nb * Ho * Wo, g.Og), dtype=x.dtype)
    padded = _PaddedChunks(xp, g, xs, nb)
    colbuf = padded.colbuf
    # chunks outermost: each (chunk, group) writes its own part of y, so the order is free
    for a in range(0, N, nb):
        e = min(N, a + nb)
        m = e - a
        src = padded.chunk(a, e)
        for gi in range(g.g):
            os_ = slice(gi * g.Og, (gi + 1) * g.Og)
            if g.cmajor:
                out = gemm_out[:, :m * Ho * Wo]
                cols = cols_cmajor(src, 0, m, gi * g.Cg, (gi + 1) * g.Cg, g.kh, g.kw, Ho, Wo,
                                   g.sh, g.sw, g.dh, g.dw, colbuf)
                xp.matmul(wmats[gi], cols.reshape(g.K, -1), out=out)
                res = out.reshape(g.Og, m, Ho * Wo).transpose(1, 0, 2)
            else:
                out = gemm_out[:m * Ho * Wo]
                view = patch_view_nhwc(src[..., gi * g.Cg:(gi + 1) * g.Cg], g.kh, g.kw, Ho, Wo,
                                       g.sh, g.sw, g.dh, g.dw)
                cols = cols_nhwc(view, 0, m, colbuf)
                xp.matmul(cols.reshape(-1, g.K), wmats[gi], out=out)
                res = out.reshape(m, Ho * Wo, g.Og).transpose(0, 2, 1)
            dst = y3[n0 + a:n0 + e, os_]
            if bias is None:
                dst[...] = res
            else:
                xp.add(res, bias[os_], out=dst)  # bias fused into the NCHW write


def conv2d_forward(x, w, b=None, stride=1, pad=0, dilation=1, group=1, out=None):
    """Caffe convolution forward.

    Args:
        x: ``(N, C, H, W)`` input. w: ``(O, C/group, kh, kw)``. b: ``(O,)`` (any shape with O
        elements) or None. stride, pad, dilation: int or ``(h, w)``. group: int dividing C and O.
        out: optional buffer for y (used when C-contiguous with y's shape and dtype; it must not
        overlap x).
    Returns:
        y: ``(N, O, Ho, Wo)`` with ``Ho = conv_out_size(H, kh, pad_h, stride_h, dilation_h)``
        (``out`` itself when it was used).
    Raises:
        ValueError on inconsistent shapes.
    """
    g = _Geom(x.shape, w.shape, stride, pad, dilation, group)
    return _forward(x, w, b, g, out)


def conv2d_backward_weight(x, dy, w_shape, stride=1, pad=0, dilation=1, group=1):
    """Gradient of the convolution w.r.t. its weight: ``dw`` of shape ``w_shape`` (a fresh array;
    the caller accumulates). ``dy`` is ``(N, O, Ho, Wo)``."""
    g = _Geom(x.shape, w_shape, stride, pad, dilation, group)
    return _backward_weight(x, dy, g)[0]


def _backward_weight(x, dy, g, want_db=False):
    """``(dw, db)`` (``db`` None unless ``want_db``): per-thread partial sums over batch slices."""
    xp = get_array_module(x, dy)
    N, Ho, Wo = g.N, g.Ho, g.Wo
    dy3 = dy.reshape(N, g.O, Ho * Wo)
    if g.pointwise:
        x3 = x.reshape(N, g.C, g.H * g.W)
        if g.H * g.W < _POINTWISE_PER_IMAGE_PIXELS:
            dw = xp.empty((g.O, g.Cg), dtype=x.dtype)
            for gi in range(g.g):
                os_, cs = slice(gi * g.Og, (gi + 1) * g.Og), slice(gi * g.Cg, (gi + 1) * g.Cg)
                # sum_n dy[n] @ x[n].T as one GEMM over (n, pixel)
                dyT = xp.ascontiguousarray(dy3[:, os_].transpose(1, 0, 2)).reshape(g.Og, -1)
                xT = xp.ascontiguousarray(x3[:, cs].transpose(1, 0, 2)).reshape(g.Cg, -1)
                dw[os_] = dyT @ xT.T
            return dw.reshape(g.O, g.Cg, 1, 1), dy.sum(axis=(0, 2, 3)) if want_db else None

        def pointwise_part(n0, n1):
            # sum_n dy[n] @ x[n].T, one GEMM per image straight on the NCHW arrays: on large
            # images gathering (n, pixel) into one operand first cost more than the GEMM
            part = xp.zeros((g.O, g.Cg), dtype=x.dtype)
            tmp = xp.empty((g.Og, g.Cg), dtype=x.dtype)
            for n in range(n0, n1):
                for gi in range(g.g):
                    os_ = slice(gi * g.Og, (gi + 1) * g.Og)
                    cs = slice(gi * g.Cg, (gi + 1) * g.Cg)
                    xp.matmul(dy3[n, os_], x3[n, cs].T, out=tmp)
                    part[os_] += tmp
            return part
        parts = threads.parallel_for(N, pointwise_part, xp, cost=x.nbytes + dy.nbytes)
        dw = parts[0]
        for p in parts[1:]:
            dw += p
        return dw.reshape(g.O, g.Cg, 1, 1), dy.sum(axis=(0, 2, 3)) if want_db else None

    parts = threads.parallel_for(
        N, lambda n0, n1: _backward_weight_range(x, dy3, g, n0, n1, want_db), xp,
        cost=x.nbytes + dy.nbytes)
    dw2, db = parts[0]
    for p_dw, p_db in parts[1:]:
        dw2 += p_dw
        if want_db:
            db += p_db
    if g.cmajor:
        dw = dw2.reshape(g.O, g.Cg, g.kh, g.kw)
    else:
        dw = xp.ascontiguousarray(dw2.reshape(g.O, g.kh, g.kw, g.Cg).transpose(0, 3, 1, 2))
    return dw, db


def _backward_weight_range(x, dy3, g, n0, n1, want_db):
    """Partial ``(dw2 (O, K), db (O,) or None)`` over images ``n0:n1``; ``dw2`` columns in the
    layout's order (channel-major or NHWC)."""
    xp = get_array_module(x)
    Ho, Wo = g.Ho, g.Wo
    N = n1 - n0
    xs = x[n0:n1]
    nb = _chunk(xp, g, x.dtype.itemsize, N)
    dw2 = xp.zeros((g.O, g.K), dtype=x.dtype)
    db = xp.zeros((g.O,), dtype=x.dtype) if want_db else None
    tmp = xp.empty((g.Og, g.K), dtype=x.dtype)
    dyc_buf = xp.empty((g.Og, nb, Ho * Wo), dtype=x.dtype)
    padded = _PaddedChunks(xp, g, xs, nb)
    colbuf = padded.colbuf
    # chunks outermost: a group's rows of dw2 / db still add up chunk after chunk in order
    for a in range(0, N, nb):
        e = min(N, a + nb)
        m = e - a
        src = padded.chunk(a, e)
        for gi in range(g.g):
            os_ = slice(gi * g.Og, (gi + 1) * g.Og)
            dyc = dyc_buf[:, :m]
            xp.copyto(dyc, dy3[n0 + a:n0 + e, os_].transpose(1, 0, 2))
            dyc = dyc.reshape(g.Og, m * Ho * Wo)
            if want_db:   # the bias gradient from the chunk already in cache
                db[os_] += dyc.sum(axis=1)
            if g.cmajor:
                cols = cols_cmajor(src, 0, m, gi * g.Cg, (gi + 1) * g.Cg, g.kh, g.kw, Ho, Wo,
                                   g.sh, g.sw, g.dh, g.dw, colbuf)
                xp.matmul(dyc, cols.reshape(g.K, -1).T, out=tmp)
            else:
                view = patch_view_nhwc(src[..., gi * g.Cg:(gi + 1) * g.Cg], g.kh, g.kw, Ho, Wo,
                                       g.sh, g.sw, g.dh, g.dw)
                cols = cols_nhwc(view, 0, m, colbuf)
                xp.matmul(dyc, cols.reshape(-1, g.K), out=tmp)
            dw2[os_] += tmp
    return dw2, db


def conv2d_backward_data(dy, w, x_shape, stride=1, pad=0, dilation=1, group=1, method=None,
                         out=None):
    """Gradient of the convolution w.r.t. its input: ``dx`` of shape ``x_shape`` (a fresh array,
    or ``out`` when given and it fits, as in ``conv2d_forward``; it must not overlap dy).
    ``dy`` is ``(N, O, Ho, Wo)``; ``w`` is ``(O, C/group, kh, kw)``. ``method`` forces an
    algorithm ("flip": stride-1 only; "col2im": any); None picks the faster (same result)."""
    g = _Geom(x_shape, w.shape, stride, pad, dilation, group)
    return _backward_data(dy, w, g, method, out)


def _backward_data(dy, w, g, method=None, out=None):
    """``method``: "flip" (stride-1 forward with the flipped kernel), "col2im", or None = pick."""
    xp = get_array_module(dy, w)
    N, Ho, Wo = g.N, g.Ho, g.Wo
    if g.pointwise:
        dy3 = dy.reshape(N, g.O, Ho * Wo)
        w2 = w.reshape(g.O, g.Cg)
        wT = [xp.ascontiguousarray(w2[gi * g.Og:(gi + 1) * g.Og].T) for gi in range(g.g)]
        dx = _result(xp, (N, g.C, g.H, g.W), dy.dtype, out).reshape(N, g.C, g.H * g.W)

        def pointwise_range(n0, n1):   # on the pool: OpenBLAS itself runs one thread
            for gi in range(g.g):
                os_, cs = slice(gi * g.Og, (gi + 1) * g.Og), slice(gi * g.Cg, (gi + 1) * g.Cg)
                xp.matmul(wT[gi], dy3[n0:n1, os_], out=dx[n0:n1, cs])
        threads.parallel_for(N, pointwise_range, xp, cost=dx.nbytes)
        return dx.reshape(N, g.C, g.H, g.W)

    ph2 = g.dh * (g.kh - 1) - g.ph
    pw2 = g.dw * (g.kw - 1) - g.pw
    flip_ok = g.sh == g.sw == 1 and ph2 >= 0 and pw2 >= 0
    if method is None:
        # The flipped-kernel forward computes over the padded H x W grid; col2im's GEMM over the
        # Ho x Wo grid. Flip wins when they are about the same ("same" convs), col2im otherwise.
        method = "flip" if flip_ok and g.H * g.W <= 1.25 * g.Ho * g.Wo else "col2im"
    if method == "flip":
        if not flip_ok:
            raise ValueError("flip backward-data needs stride 1 and pad <= dilation*(k-1)")
        # Stride 1: dx = correlation of dy with the flipped kernel, channels swapped per group.
        wf = xp.empty((g.C, g.Og, g.kh, g.kw), dtype=w.dtype)
        for gi in range(g.g):
            wf[gi * g.Cg:(gi + 1) * g.Cg] = \
                w[gi * g.Og:(gi + 1) * g.Og, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        g2 = _Geom(dy.shape, wf.shape, 1, (ph2, pw2), (g.dh, g.dw), g.g)
        assert (g2.Ho, g2.Wo) == (g.H, g.W)
        return _forward(dy, wf, None, g2, out)

    # General stride: dcol = dy^T @ W per chunk, then scatter-add onto a padded NHWC gradient.
    dy3 = dy.reshape(N, g.O, Ho * Wo)
    wmats = _weights_nhwc(w, g)
    dx = _result(xp, (N, g.C, g.H, g.W), dy.dtype, out)
    threads.parallel_for(N, lambda n0, n1: _col2im_range(dy3, wmats, g, n0, n1, dx), xp,
                         cost=dx.nbytes)
    return dx


def _col2im_range(dy3, wmats, g, n0, n1, dx):
    """Backward-data by column gradients for images ``n0:n1`` into ``dx[n0:n1]``."""
    xp = get_array_module(dy3)
    Ho, Wo = g.Ho, g.Wo
    N = n1 - n0
    nb = _chunk(xp, g, dy3.dtype.itemsize, N)
    # a padded NHWC gradient of one chunk at a time (reused), not of the thread's whole slice;
    # each image's sums still run group after group, offset after offset, as before
    dxh_buf = xp.empty((nb, g.H + 2 * g.ph, g.W + 2 * g.pw, g.C), dtype=dy3.dtype)
    dyc_buf = xp.empty((nb, Ho * Wo, g.Og), dtype=dy3.dtype)
    dcol_buf = xp.empty((nb * Ho * Wo, g.K), dtype=dy3.dtype)
    for a in range(0, N, nb):
        e = min(N, a + nb)
        m = e - a
        dxh = dxh_buf[:m]
        dxh.fill(0)
        for gi in range(g.g):
            os_, cs = slice(gi * g.Og, (gi + 1) * g.Og), slice(gi * g.Cg, (gi + 1) * g.Cg)
            dyc = dyc_buf[:m]
            xp.copyto(dyc, dy3[n0 + a:n0 + e, os_].transpose(0, 2, 1))
            dcol = dcol_buf[:m * Ho * Wo]
            xp.matmul(dyc.reshape(-1, g.Og), wmats[gi], out=dcol)
            col2im_nhwc_add(dcol.reshape(m, Ho, Wo, g.kh, g.kw, g.Cg), dxh[..., cs], 0,
                            g.sh, g.sw, g.dh, g.dw)
        dx[n0 + a:n0 + e] = dxh[:, g.ph:g.ph + g.H, g.pw:g.pw + g.W, :].transpose(0, 3, 1, 2)


def conv2d_backward(x, w, dy, stride=1, pad=0, dilation=1, group=1,
                    need_dx=True, need_dw=True, need_db=True, dx_out=None):
    """Caffe convolution backward.

    Args: as ``conv2d_forward``, plus ``dy`` ``(N, O, Ho, Wo)`` and flags for which gradients to
    compute; ``dx_out`` an optional buffer for dx (used when it fits; it must not overlap x or
    dy). Returns ``(dx, dw, db)``: ``dx`` like ``x``, ``dw`` like ``w``, ``db`` ``(O,)``; each
    is a fresh array (dx may be ``dx_out``) or None when not requested. The caller accumulates
    ``dw``/``db`` into its parameter diffs (Caffe's contract) and overwrites its bottom diff with
    ``dx``.
    """
    g = _Geom(x.shape, w.shape, stride, pad, dilation, group)
    if tuple(dy.shape) != (g.N, g.O, g.Ho, g.Wo):
        raise ValueError(f"dy shape {tuple(dy.shape)} != output shape {(g.N, g.O, g.Ho, g.Wo)}")
    dx = _backward_data(dy, w, g, out=dx_out) if need_dx else None
    dw = db = None
    if need_dw:
        dw, db = _backward_weight(x, dy, g, want_db=need_db)
    elif need_db:
        db = dy.sum(axis=(0, 2, 3))
    return dx, dw, db


def deconv2d_forward(x, w, b=None, stride=1, pad=0, dilation=1, group=1, out=None):
    """Caffe Deconvolution forward (the adjoint of convolution).

    Args:
        x: ``(N, C_in, H, W)``. w: ``(C_in, C_out/group, kh, kw)`` (Caffe's deconv weight layout).
        b: ``(C_out,)`` or None. stride/pad/dilation/group as for convolution.
        out: optional buffer for y, as in ``conv2d_forward``.
    Returns:
        y: ``(N, C_out, Ho, Wo)`` with ``Ho = deconv_out_size(H, kh, pad, stride, dilation)``.
    """
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(pad, "pad")
    dh, dw_ = _pair(dilation, "dilation")
    N, _, H, W = x.shape
    c_out = w.shape[1] * int(group)
    y_shape = (N, c_out, deconv_out_size(H, w.shape[2], ph, sh, dh),
               deconv_out_size(W, w.shape[3], pw, sw, dw_))
    y = conv2d_backward_data(x, w, y_shape, stride, pad, dilation, group, out=out)
    if b is not None:
        y += b.reshape(1, c_out, 1, 1).astype(y.dtype, copy=False)
    return y


def deconv2d_backward(x, w, dy, stride=1, pad=0, dilation=1, group=1,
                      need_dx=True, need_dw=True, need_db=True, dx_out=None):
    """Caffe Deconvolution backward: ``dx = conv2d_forward(dy, w)``, ``dw`` = the convolution
    weight gradient with the roles of input and output swapped, ``db = sum(dy)`` per channel.
    Returns ``(dx, dw, db)`` (None where not requested); shapes as ``x``, ``w``, ``(C_out,)``;
    ``dx_out`` as in ``conv2d_backward``."""
    dx = conv2d_forward(dy, w, None, stride, pad, dilation, group, out=dx_out) if need_dx else None
    dw = conv2d_backward_weight(dy, x, w.shape, stride, pad, dilation, group) if need_dw else None
    db = dy.sum(axis=(0, 2, 3)) if need_db else None
    return dx, dw, db
