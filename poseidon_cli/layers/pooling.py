"""Pooling: MAX / AVE over 2-D windows with Caffe's output-size and divisor rules.

Fields (``pooling_param``): ``pool`` (MAX; AVE; STOCHASTIC is rejected: Caffe has no CPU version),
``kernel_size`` or ``kernel_h``/``kernel_w`` (required unless ``global_pooling``), ``pad`` or
``pad_h``/``pad_w`` (0), ``stride`` or ``stride_h``/``stride_w`` (1), ``global_pooling`` (false:
kernel = the whole plane, pad must be 0), ``round_mode`` (CEIL; FLOOR).

Shapes: bottom (N, C, H, W) -> top (N, C, P, Q) with P = ceil((H + 2 pad - k) / stride) + 1
(clipped so the last window starts inside image + pad; FLOOR uses floor). MAX may have a second
top: Caffe's argmax mask (flat h*W + w index into the input plane, as floats). The math lives in
``ops/pooling.py``. Errors (NetError): kernel larger than the padded input, pad >= kernel,
global pooling with pad or explicit kernel.
"""
from __future__ import annotations

import math

from .._proto import caffe_pb2
from ..ops import pooling as pool_ops
from . import register
from .base import Layer, free_output

_PP = caffe_pb2.PoolingParameter


def _floor_out(H, k, pad, stride):
    out = (H + 2 * pad - k) // stride + 1
    if pad > 0 and (out - 1) * stride >= H + pad:
        out -= 1
    return out


@register("Pooling")
class PoolingLayer(Layer):
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.pooling_param
        if p.pool == _PP.STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported (Caffe has it on GPU only); "
                             "use MAX or AVE")
        self.mode = pool_ops.MAX if p.pool == _PP.MAX else pool_ops.AVE
        if len(top) > 1 and self.mode != pool_ops.MAX:
            raise self.error("only MAX pooling has a second (mask) top")
        self.global_pooling = p.global_pooling
        has_hw = p.HasField("kernel_h") or p.HasField("kernel_w")
        if self.global_pooling:
            if p.HasField("kernel_size") or has_hw:
                raise self.error("global_pooling takes its kernel from the bottom; remove "
                                 "kernel_size/kernel_h/kernel_w")
            self.kernel = None
        elif has_hw:
            if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
                raise self.error("kernel_h and kernel_w must be given together")
            if p.HasField("kernel_size"):
                raise self.error("give kernel_size or kernel_h/kernel_w, not both")
            self.kernel = (int(p.kernel_h), int(p.kernel_w))
        else:
            if not p.HasField("kernel_size"):
                raise self.error("kernel_size (or kernel_h and kernel_w) is required")
            self.kernel = (int(p.kernel_size),) * 2
        if p.HasField("pad_h") or p.HasField("pad_w"):
            self.pad = (int(p.pad_h), int(p.pad_w))
        else:
            self.pad = (int(p.pad),) * 2
        if p.HasField("stride_h") or p.HasField("stride_w"):
            if not (p.HasField("stride_h") and p.HasField("stride_w")):
                raise self.error("stride_h and stride_w must be given together")
            self.stride = (int(p.stride_h), int(p.stride_w))
        else:
            self.stride = (int(p.stride),) * 2
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error(f"global_pooling needs pad 0 and stride 1, got pad {self.pad} "
                             f"stride {self.stride}")
        if self.kernel is not None and min(self.kernel) < 1 or min(self.stride) < 1:
            raise self.error(f"kernel {self.kernel} and stride {self.stride} must be >= 1")
        if self.kernel is not None and any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            raise self.error(f"pad {self.pad} must be smaller than the kernel {self.kernel}")
        self.floor = p.round_mode == _PP.FLOOR
        self._mask = None

    def _geom(self, shape):
        if len(shape) != 4:
            raise self.error(f"needs a 4-D (N, C, H, W) bottom, got shape {shape}")
        N, C, H, W = shape
        if self.global_pooling:
            return (H, W), (1, 1), (0, 0), (1, 1), (1, 1)
        ceil, fl = [], []
        for size, k, pd, s in zip((H, W), self.kernel, self.pad, self.stride):
            if k > size + 2 * pd:
                raise self.error(f"kernel {self.kernel} is larger than the padded input: bottom "
                                 f"shape {shape}, pad {self.pad}")
            c = int(math.ceil((size + 2 * pd - k) / s)) + 1
            if pd > 0 and (c - 1) * s >= size + pd:
                c -= 1
            ceil.append(c)
            fl.append(_floor_out(size, k, pd, s))
        return self.kernel, self.stride, self.pad, tuple(ceil), tuple(fl) if self.floor else \
            tuple(ceil)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        *_, out = self._geom(shape)
        for t in top:
            t.reshape(shape[:2] + out)

    def _kw(self):
        if self.global_pooling:
            return dict(global_pooling=True)
        return dict(kernel=self.kernel, stride=self.stride, pad=self.pad)

    def forward(self, bottom, top):
        _, _, _, full, out = self._geom(bottom[0].shape)
        x = bottom[0].data
        # straight into the top when no FLOOR crop applies, and into last call's mask: no
        # top-sized temporaries, no copies
        y_buf = free_output(top[0].data, x) if out == full else None
        # the argmax is kept as its position in the window (one byte for windows under 255
        # values), not as Caffe's int32 flat index: it lives from forward to backward
        y, mask = pool_ops.pool2d_forward(x, self.mode, **self._kw(), out=y_buf,
                                          mask_out=self._mask, window_mask=True)
        if out != full:   # FLOOR: the ceil rule's extra last row/column is simply dropped
            y = y[:, :, :out[0], :out[1]]
        if y is not y_buf:
            top[0].data[...] = y
        self._mask = mask
        if len(top) > 1:
            flat = pool_ops.caffe_mask(mask, bottom[0].shape, **self._kw())
            top[1].data[...] = flat[:, :, :out[0], :out[1]]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = bottom[0].xp
        _, _, _, full, out = self._geom(bottom[0].shape)
        dy = top[0].diff
        if out != full:
            padded = xp.zeros(dy.shape[:2] + full, dtype=dy.dtype)
            padded[:, :, :out[0], :out[1]] = dy
            dy = padded
        dx_buf = free_output(bottom[0].diff, dy)
        dx = pool_ops.pool2d_backward(dy, self._mask, bottom[0].shape, self.mode, **self._kw(),
                                      out=dx_buf, window_mask=True)
        if dx is not dx_buf:
            bottom[0].diff[...] = dx
