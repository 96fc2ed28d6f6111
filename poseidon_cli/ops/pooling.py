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

Vectorised as a kh*kw loop of strided shifted slices over the input (a padded copy only when a
window reaches past it), with no masked copies (see ``_max_forward``); on the CPU the batch is
split over the ``ops.threads`` pool.
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from . import threads

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


def _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw):
    """Flat input index ``hstart*W + wstart`` of each window's top-left corner, ``(Ph, Pw)``."""
    hrow = (xp.arange(Ph, dtype=xp.int32) * sh - ph)[:, None]
    wcol = (xp.arange(Pw, dtype=xp.int32) * sw - pw)[None, :]
    return hrow * W + wcol


def _slices(i, j, sh, sw, Ph, Pw):
    return (slice(None), slice(None), slice(i, i + sh * (Ph - 1) + 1, sh),
            slice(j, j + sw * (Pw - 1) + 1, sw))


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

    On the CPU the batch is split over ``ops.threads``; each slice runs the same vectorised code.
    """
    xp = get_array_module(x)
    geo = _geometry(x.shape, kernel, stride, pad, global_pooling)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    if mode not in (MAX, AVE):
        raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")
    y = xp.empty((N, C, Ph, Pw), dtype=x.dtype)
    mask = xp.empty((N, C, Ph, Pw), dtype=xp.int32) if mode == MAX else None
    if mode == MAX:
        base = _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw)
        run = lambda n0, n1: _max_forward(x[n0:n1], geo, base, y[n0:n1], mask[n0:n1])
    else:
        div = _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, x.dtype)
        run = lambda n0, n1: _ave_forward(x[n0:n1], geo, div, y[n0:n1])
    threads.parallel_for(N, run, xp, cost=x.nbytes)
    return y, mask


def _padded_for(x, geo, fill):
    """x itself when every window lies inside it, else a padded copy covering every window."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    Hp, Wp = max((Ph - 1) * sh + kh, H + ph), max((Pw - 1) * sw + kw, W + pw)
    if ph == 0 and pw == 0 and Hp == H and Wp == W:
        return x
    return _padded(x, ph, pw, Hp, Wp, fill)


def _max_forward(x, geo, base, y, mask):
    """MAX forward of one batch slice into ``y`` / ``mask`` (views of the full outputs).

    Values: a chain of elementwise maxima over the kh*kw shifted strided views. Argmax (Caffe's
    first maximum in row-major window order) without masked copies (a random mask makes those
    ~10x slower than a ufunc): ``run`` stays true while every offset so far differs from the max,
    so summing it counts the offsets before the first maximum; adding ``W - kw`` for every
    completed window row turns that count into the flat offset ``i*W + j`` from the corner."""
    xp = get_array_module(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    xpad = _padded_for(x, geo, -xp.inf)
    offs = [(i, j) for i in range(kh) for j in range(kw)]
    views = [xpad[_slices(i, j, sh, sw, Ph, Pw)] for i, j in offs]
    if len(views) == 1:
        y[...] = views[0]
    else:
        xp.maximum(views[0], views[1], out=y)
        for v in views[2:]:
            xp.maximum(y, v, out=y)
    # int16 counters (window offsets < 32768 here) halve the traffic of the accumulation
    small = kh * W < 32767
    cnt = xp.zeros(y.shape, dtype=xp.int16 if small else xp.int32)
    rows = xp.zeros_like(cnt) if kh > 1 and W != kw else None
    run = xp.empty(y.shape, dtype=bool)
    ne = xp.empty(y.shape, dtype=bool)
    for o, v in enumerate(views[:-1]):
        if o == 0:
            xp.not_equal(v, y, out=run)
        else:
            xp.not_equal(v, y, out=ne)
            xp.logical_and(run, ne, out=run)
        xp.add(cnt, run, out=cnt)
        if rows is not None and (o + 1) % kw == 0:
            xp.add(rows, run, out=rows)
    if rows is not None:
        rows *= W - kw
        cnt += rows
    xp.add(cnt, base, out=mask)


def _ave_forward(x, geo, div, y):
    xp = get_array_module(x)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    xpad = _padded_for(x, geo, 0)
    first = True
    for i in range(kh):
        for j in range(kw):
            v = xpad[_slices(i, j, sh, sw, Ph, Pw)]
            if first:
                y[...] = v
                first = False
            else:
                y += v
    y /= div


def pool2d_backward(dy, mask, x_shape, mode, kernel=1, stride=1, pad=0, global_pooling=False):
    """Pooling backward: returns ``dx`` of shape ``x_shape`` (a fresh array).

    Args: ``dy`` ``(N, C, Ph, Pw)``; ``mask`` as returned by ``pool2d_forward`` (MAX; ignored for
    AVE); the same geometry arguments as the forward call.
    """
    xp = get_array_module(dy)
    geo = _geometry(x_shape, kernel, stride, pad, global_pooling)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    if tuple(dy.shape) != (N, C, Ph, Pw):
        raise ValueError(f"dy shape {tuple(dy.shape)} != pooled shape {(N, C, Ph, Pw)}")
    if mode == MAX:
        if mask is None:
            raise ValueError("MAX pooling backward needs the forward's mask")
        base = _bases(xp, H, W, sh, sw, ph, pw, Ph, Pw)
    elif mode == AVE:
        div = _ave_divisor(xp, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw, dy.dtype)
    else:
        raise ValueError(f"unsupported pooling mode {mode!r} (MAX or AVE)")
    dx = xp.empty((N, C, H, W), dtype=dy.dtype)

    def run(n0, n1):
        if mode == MAX:
            _max_backward(dy[n0:n1], mask[n0:n1], base, geo, dx[n0:n1])
        else:
            _ave_backward(dy[n0:n1], div, geo, dx[n0:n1])
    threads.parallel_for(N, run, xp, cost=dx.nbytes)
    return dx


def _tiles(geo):
    """True when the windows tile the input exactly (k == stride, no pad, no overhang): each input
    element then belongs to exactly one window and backward can write instead of accumulate."""
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    return kh == sh and kw == sw and ph == pw == 0 and Ph * kh == H and Pw * kw == W


def _grad_target(dx, geo):
    """(array the kh*kw shifted views scatter into, whether it needs zeroing/cropping)."""
    xp = get_array_module(dx)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    if _tiles(geo):
        return dx, False
    Hp, Wp = max((Ph - 1) * sh + kh, H + ph), max((Pw - 1) * sw + kw, W + pw)
    if ph == 0 and pw == 0 and Hp == H and Wp == W:
        dx[...] = 0
        return dx, False
    return xp.zeros((dx.shape[0], C, Hp, Wp), dtype=dx.dtype), True


def _max_backward(dy, mask, base, geo, dx):
    """Each output's gradient goes to its argmax: per window offset, ``dy * (offset == o)`` lands
    on that offset's strided view (distinct targets within one offset; adds where windows
    overlap, a plain write where they tile)."""
    xp = get_array_module(dy)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    small = kh * W < 32767
    off = xp.subtract(mask, base, dtype=xp.int16 if small else xp.int32)
    target, crop = _grad_target(dx, geo)
    write = target is dx and _tiles(geo)
    eq = xp.empty(dy.shape, dtype=bool)
    tmp = None if write else xp.empty(dy.shape, dtype=dy.dtype)
    for i in range(kh):
        for j in range(kw):
            xp.equal(off, i * W + j, out=eq)
            view = target[_slices(i, j, sh, sw, Ph, Pw)]
            if write:
                xp.multiply(dy, eq, out=view)
            else:
                xp.multiply(dy, eq, out=tmp)
                view += tmp
    if crop:
        dx[...] = target[:, :, ph:ph + H, pw:pw + W]


def _ave_backward(dy, div, geo, dx):
    xp = get_array_module(dy)
    N, C, H, W, kh, kw, sh, sw, ph, pw, Ph, Pw = geo
    g = dy / div
    target, crop = _grad_target(dx, geo)
    write = target is dx and _tiles(geo)
    for i in range(kh):
        for j in range(kw):
            view = target[_slices(i, j, sh, sw, Ph, Pw)]
            if write:
                view[...] = g
            else:
                view += g
    if crop:
        dx[...] = target[:, :, ph:ph + H, pw:pw + W]
