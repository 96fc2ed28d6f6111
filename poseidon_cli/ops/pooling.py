"""MAX / AVE 2-D pooling with Caffe's exact semantics (BVLC ``pooling_layer.cpp``), NumPy or CuPy.

- Output size: CEIL rule ``P = ceil((H + 2*pad - k) / stride) + 1``; when ``pad > 0`` and the last
  window would start at or beyond ``H + pad``, ``P`` is decremented (``pool_out_size``).
- Window of output ``ph``: ``hstart = ph*stride - pad``, ``hend = min(hstart + k, H + pad)``.
- AVE: divisor ``(hend - hstart) * (wend - wstart)`` taken before clamping to the image, so zero
  padding counts but the ceil overhang past ``H + pad`` does not; the sum covers the image part only.
- MAX: the window is clamped to the image (padding never wins); strict ">" scan in row-major window
  order, so the first maximum wins; backward routes each output's gradient to that single input,
  accumulating where windows overlap.
- Global pooling: ``k = (H, W)``, stride 1, pad 0 (pad must be 0).

Vectorised as a kh*kw loop over window offsets, each one contiguous run in a polyphase layout of
the padded input (``_Phases``), with no masked copies (see ``_max_forward``); on the CPU the batch
is split over the ``ops.threads`` pool and each thread's slice is walked in cache-sized chunks of
images (``_CHUNK_BYTES``), so the ~4*kh*kw passes over the phase planes of a chunk hit cache
instead of streaming the whole slice from memory each time.
"""
from __future__ import annotations

import math

import numpy

from ..backend import get_array_module
from . import threads

MAX = "MAX"
AVE = "AVE"

# Input bytes per CPU chunk. Measured on CIFAR-10 quick's 3x3/2 max pooling (100x32x32x32, one
# thread): forward+backward 20-25 ms with 1-2 MB chunks, 45-70 ms with the whole batch at once,
# 35-60 ms with 128 KB chunks (per-call overhead of many small ufunc calls).
_CHUNK_BYTES = 1 << 20


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


def _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, dtype):
    hs = xp.arange(Ph) * sh - ph
    ws = xp.arange(Pw) * sw - pw
    hcount = xp.minimum(hs + kh, H + ph) - hs
    wcount = xp.minimum(ws + kw, W + pw) - ws
    return (hcount[:, None] * wcount[None, :]).astype(dtype)


def _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw):
    """Flat input index ``hstart*W + wstart`` of each window's top-left corner, ``(Ph, Pw)``."""
    hrow = (xp.arange(Ph, dtype=xp.int32) * sh - ph)[:, None]
    wcol = (xp.arange(Pw, dtype=xp.int32) * sw - pw)[None, :]
    return hrow * W + wcol


def _buffer(xp, shape, dtype, out):
    """``out`` when the result fits it exactly (C-contiguous, shape, dtype), else a fresh array."""
    if out is not None and tuple(out.shape) == tuple(shape) and out.dtype == dtype \
            and out.flags.c_contiguous:
        return out
    return xp.empty(shape, dtype=dtype)


def window_mask_dtype(xp, kernel_area):
    """Smallest integer type holding a window position ``0 .. kernel_area - 1`` plus one spare
    value (the junk marker of the backward's extended grid)."""
    if kernel_area < 255:
        return xp.uint8
    return xp.int16 if kernel_area < 32767 else xp.int32


def pool2d_forward(x, mode, kernel=1, stride=1, pad=0, global_pooling=False, out=None,
                   mask_out=None, window_mask=False):
    """Pooling forward.

    Args:
        x: ``(N, C, H, W)``. mode: "MAX" or "AVE". kernel/stride/pad: int or ``(h, w)``.
        global_pooling: pool the whole plane (kernel/stride ignored, pad must be 0).
        out, mask_out: optional buffers for y and the mask (used when they fit exactly; they
        must not overlap x), e.g. the caller's top and the previous call's mask.
        window_mask: return the argmax as its position ``i*kw + j`` inside the window, in the
        small type of ``window_mask_dtype`` (a quarter of the int32 mask when kh*kw < 255);
        ``pool2d_backward`` takes it with ``window_mask=True``, ``caffe_mask`` converts it.
    Returns:
        ``(y, mask)``: y ``(N, C, Ph, Pw)``; for MAX, ``mask`` is int32 of y's shape holding Caffe's
        argmax mask (flat index ``h*W + w`` into the input plane), or the window mask; for AVE,
        None.
    Raises:
        ValueError for an unknown mode or a kernel that does not fit.

    On the CPU the batch is split over ``ops.threads``; each slice runs the same vectorised code.
    """
    xp = get_array_module(x)
    geo = _geometry(x.shape, kernel, stride, pad, global_pooling)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    if mode not in (MAX, AVE):
        raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")
    y = _buffer(xp, (N, C, Ph, Pw), x.dtype, out)
    mask_type = window_mask_dtype(xp, kh * kw) if window_mask else xp.int32
    mask = _buffer(xp, (N, C, Ph, Pw), mask_type, mask_out) if mode == MAX else None
    if mode == MAX:
        base = None if window_mask else _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw)
        run = lambda n0, n1: _max_forward(x[n0:n1], geo, base, y[n0:n1], mask[n0:n1])
    else:
        div = _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, x.dtype)
        run = lambda n0, n1: _ave_forward(x[n0:n1], geo, div, y[n0:n1])
    threads.parallel_for(N, _chunked(run, xp, x.nbytes // max(N, 1)), xp, cost=x.nbytes)
    return y, mask


def _chunked(run, xp, bytes_per_image):
    """``run(n0, n1)`` applied to consecutive cache-sized pieces of ``n0:n1`` (CPU only; one
    accelerator call covers the whole range)."""
    if xp is not numpy:
        return run
    step = max(1, _CHUNK_BYTES // max(1, bytes_per_image))

    def chunked(n0, n1):
        for a in range(n0, n1, step):
            run(a, min(n1, a + step))
    return chunked


class _Phases:
    """Polyphase layout of one batch slice: the padded input split by (row mod sh, col mod sw)
    into ``sh*sw`` planes of ``Hh x Wh``, so that window offset ``(i, j)`` of every output reads
    phase ``(i % sh, j % sw)`` at the flat offset ``(i // sh)*Wh + j // sw`` with unit stride.

    Outputs are computed on an *extended* grid ``Ph x Wh`` (``Wh - Pw`` junk columns per row): each
    window offset is then one contiguous run of ``Ph*Wh`` elements per plane, so NumPy runs long
    SIMD loops instead of one short strided loop per output row (much faster than strided
    shifted slices). One strided copy moves data in and (backward) out of this layout."""

    def __init__(self, geo):
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
        self.geo = geo
        self.Hh = Ph + (kh - 1) // sh + 1          # one spare row: the last run's junk columns
        self.Wh = Pw + (kw - 1) // sw
        self.L = Ph * self.Wh
        self.rows = [self._axis(a, sh, ph, H, self.Hh) for a in range(sh)]
        self.cols = [self._axis(b, sw, pw, W, self.Wh) for b in range(sw)]
        # real rows/cols no window reads (possible with large strides) get no gradient
        self.complete = (sum(r[2] for r in self.rows) == H and sum(c[2] for c in self.cols) == W)

    @staticmethod
    def _axis(a, s, pad, size, cap):
        """(first phase index t0, first real index h0, count) of real rows in phase ``a``:
        padded row ``a + s*t`` is real row ``a + s*t - pad``."""
        t0 = max(0, -(-(pad - a) // s))
        h0 = a + s * t0 - pad
        count = len(range(h0, size, s)) if h0 < size else 0
        return t0, h0, max(0, min(count, cap - t0))

    def offsets(self):
        """(phase a, phase b, flat offset, Caffe's flat in-window offset i*W + j) per (i, j)."""
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = self.geo
        return [(i % sh, j % sw, (i // sh) * self.Wh + j // sw, i * W + j)
                for i in range(kh) for j in range(kw)]

    def gather(self, x, fill):
        """``(sh, sw, n*C, Hh*Wh)`` phase planes of ``x`` (``(n, C, H, W)``), ``fill`` outside."""
        xp = get_array_module(x)
        n, C = x.shape[:2]
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = self.geo
        out = xp.empty((sh, sw, n, C, self.Hh, self.Wh), dtype=x.dtype)
        for a, (t0, h0, hc) in enumerate(self.rows):
            for b, (u0, w0, wc) in enumerate(self.cols):
                dst = out[a, b]
                if hc < self.Hh or wc < self.Wh:
                    dst.fill(fill)
                if hc and wc:
                    dst[:, :, t0:t0 + hc, u0:u0 + wc] = \
                        x[:, :, h0:h0 + sh * (hc - 1) + 1:sh, w0:w0 + sw * (wc - 1) + 1:sw]
        return out.reshape(sh, sw, n * C, self.Hh * self.Wh)

    def scatter(self, planes, dx):
        """Inverse of ``gather`` for gradients: ``dx`` (``(n, C, H, W)``) = the real part."""
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = self.geo
        n = dx.shape[0]
        planes = planes.reshape(sh, sw, n, C, self.Hh, self.Wh)
        if not self.complete:
            dx[...] = 0
        for a, (t0, h0, hc) in enumerate(self.rows):
            for b, (u0, w0, wc) in enumerate(self.cols):
                if hc and wc:
                    dx[:, :, h0:h0 + sh * (hc - 1) + 1:sh, w0:w0 + sw * (wc - 1) + 1:sw] = \
                        planes[a, b, :, :, t0:t0 + hc, u0:u0 + wc]

    def extend(self, a, n, fill=0):
        """``a`` (``(n, C, Ph, Pw)``) on the extended grid, ``(n*C, Ph*Wh)``."""
        xp = get_array_module(a)
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = self.geo
        if self.Wh == Pw:
            return xp.ascontiguousarray(a).reshape(n * C, self.L)
        out = xp.empty((n, C, Ph, self.Wh), dtype=a.dtype)
        out[..., Pw:] = fill
        out[..., :Pw] = a
        return out.reshape(n * C, self.L)

    def real(self, ext, n):
        """The ``(n, C, Ph, Pw)`` part of an extended-grid array (a view)."""
        N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = self.geo
        return ext.reshape(n, C, Ph, self.Wh)[..., :Pw]


def _max_forward(x, geo, base, y, mask):
    """MAX forward of one batch slice into ``y`` / ``mask`` (views of the full outputs).

    Values: a chain of elementwise maxima over the kh*kw window offsets (phase-layout runs).
    Argmax (Caffe's first maximum in row-major window order) without masked copies (a random mask
    makes those ~10x slower than a ufunc): ``run`` stays true while every offset so far differs
    from the max, so summing it counts the offsets before the first maximum, which is the window
    position ``i*kw + j`` (the window mask, written when ``base`` is None); adding ``W - kw``
    for every completed window row turns that count into the flat offset ``i*W + j`` from the
    window's corner, and ``base`` (the corner's flat index) makes it Caffe's mask."""
    xp = get_array_module(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    n = x.shape[0]
    P = _Phases(geo)
    planes = P.gather(x, -xp.inf)
    views = [planes[a, b, :, o:o + P.L] for a, b, o, _ in P.offsets()]
    yext = xp.empty((n * C, P.L), dtype=x.dtype)
    if len(views) == 1:
        yext[...] = views[0]
    else:
        xp.maximum(views[0], views[1], out=yext)
        for v in views[2:]:
            xp.maximum(yext, v, out=yext)
    # int16 counters (window offsets < 32768 here) halve the traffic of the accumulation
    small = kh * W < 32767
    cnt = xp.zeros(yext.shape, dtype=xp.int16 if small else xp.int32)
    rows = xp.zeros_like(cnt) if kh > 1 and W != kw and base is not None else None
    run = xp.empty(yext.shape, dtype=bool)
    ne = xp.empty(yext.shape, dtype=bool)
    for o, v in enumerate(views[:-1]):
        if o == 0:
            xp.not_equal(v, yext, out=run)
        else:
            xp.not_equal(v, yext, out=ne)
            xp.logical_and(run, ne, out=run)
        xp.add(cnt, run, out=cnt)
        if rows is not None and (o + 1) % kw == 0:
            xp.add(rows, run, out=rows)
    if rows is not None:
        rows *= W - kw
        cnt += rows
    y[...] = P.real(yext, n)
    if base is None:
        mask[...] = P.real(cnt, n)
    else:
        xp.add(P.real(cnt, n), base, out=mask)


def _ave_forward(x, geo, div, y):
    xp = get_array_module(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    n = x.shape[0]
    P = _Phases(geo)
    planes = P.gather(x, 0)
    views = [planes[a, b, :, o:o + P.L] for a, b, o, _ in P.offsets()]
    acc = xp.empty((n * C, P.L), dtype=x.dtype)
    if len(views) == 1:
        acc[...] = views[0]
    else:
        xp.add(views[0], views[1], out=acc)
        for v in views[2:]:
            acc += v
    xp.divide(P.real(acc, n), div, out=y)


def caffe_mask(mask, x_shape, kernel=1, stride=1, pad=0, global_pooling=False):
    """Caffe's argmax mask (int32 flat index ``h*W + w``) from a window mask."""
    xp = get_array_module(mask)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = _geometry(x_shape, kernel, stride, pad,
                                                           global_pooling)
    pos = mask.astype(xp.int32)
    i, j = xp.divmod(pos, kw)
    flat = i * W + j
    flat += _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw)
    return flat


def pool2d_backward(dy, mask, x_shape, mode, kernel=1, stride=1, pad=0, global_pooling=False,
                    out=None, window_mask=False):
    """Pooling backward: returns ``dx`` of shape ``x_shape`` (a fresh array, or ``out`` when it
    fits exactly; it must not overlap dy or the mask).

    Args: ``dy`` ``(N, C, Ph, Pw)``; ``mask`` as returned by ``pool2d_forward`` (MAX; ignored for
    AVE; ``window_mask`` as given to the forward); the same geometry arguments as the forward.
    """
    xp = get_array_module(dy)
    geo = _geometry(x_shape, kernel, stride, pad, global_pooling)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    if tuple(dy.shape) != (N, C, Ph, Pw):
        raise ValueError(f"dy shape {tuple(dy.shape)} != pooled shape {(N, C, Ph, Pw)}")
    if mode == MAX:
        if mask is None:
            raise ValueError("MAX pooling backward needs the forward's mask")
        base = None if window_mask else _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw)
    elif mode == AVE:
        div = _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, dy.dtype)
    else:
        raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")
    dx = _buffer(xp, (N, C, H, W), dy.dtype, out)

    def run(n0, n1):
        if mode == MAX:
            _max_backward(dy[n0:n1], mask[n0:n1], base, geo, dx[n0:n1])
        else:
            _ave_backward(dy[n0:n1], div, geo, dx[n0:n1])
    threads.parallel_for(N, _chunked(run, xp, dx.nbytes // max(N, 1)), xp, cost=dx.nbytes)
    return dx


def _max_backward(dy, mask, base, geo, dx):
    """Each output's gradient goes to its argmax: per window offset, ``dy * (offset == o)`` is
    added to that offset's run in the phase layout (distinct targets within one offset; sums where
    windows overlap), then the phases are scattered back into ``dx``."""
    xp = get_array_module(dy)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    n = dy.shape[0]
    P = _Phases(geo)
    if base is None:   # window mask: compare with the window position, junk = the spare value
        off = P.extend(mask, n, fill=xp.iinfo(mask.dtype).max)
        targets = range(kh * kw)
    else:
        small = kh * W < 32767
        off = xp.subtract(mask, base, dtype=xp.int16 if small else xp.int32)
        off = P.extend(off, n, fill=-1)          # junk columns match no offset
        targets = [d for _, _, _, d in P.offsets()]
    g = P.extend(dy, n)
    planes = xp.zeros((sh, sw, n * C, P.Hh * P.Wh), dtype=dy.dtype)
    eq = xp.empty(g.shape, dtype=bool)
    tmp = xp.empty(g.shape, dtype=dy.dtype)
    for (a, b, o, _), d in zip(P.offsets(), targets):
        xp.equal(off, d, out=eq)
        xp.multiply(g, eq, out=tmp)
        planes[a, b, :, o:o + P.L] += tmp
    P.scatter(planes, dx)


def _ave_backward(dy, div, geo, dx):
    xp = get_array_module(dy)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    n = dy.shape[0]
    P = _Phases(geo)
    g = P.extend(dy / div, n)
    planes = xp.zeros((sh, sw, n * C, P.Hh * P.Wh), dtype=dy.dtype)
    for a, b, o, _ in P.offsets():
        planes[a, b, :, o:o + P.L] += g
    P.scatter(planes, dx)
