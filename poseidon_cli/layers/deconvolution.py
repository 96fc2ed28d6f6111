"""Deconvolution (transposed convolution, Caffe semantics): the adjoint of Convolution.

Reads the same ``convolution_param`` fields as Convolution (see ``convolution.py``).
Shapes: bottom (N, C, H, W) -> top (N, O, Ho, Wo), Ho = stride (H - 1) + dilation (kh - 1) + 1 -
2 pad. Blobs: W (C, O/group, kh, kw) (Caffe's deconvolution layout), b (O,). Use
``weight_filler { type: "bilinear" }`` with group = C = O and lr_mult 0 for fixed bilinear
upsampling. Errors (NetError): channels not divisible by group, an output with no pixels.
"""
from __future__ import annotations

from ..ops import conv as conv_ops
from . import register
from .convolution import _ConvBase, _store


@register("Deconvolution")
class DeconvolutionLayer(_ConvBase):

    def _weight_shape(self, C):
        return (C, self.O // self.group) + self.kernel

    def _out_hw(self, H, W, shape):
        out = []
        for size, k, pd, s, d in zip((H, W), self.kernel, self.pad, self.stride, self.dilation):
            o = s * (size - 1) + d * (k - 1) + 1 - 2 * pd
            if o < 1:
                raise self.error(f"output would be empty: bottom shape {shape}, kernel "
                                 f"{self.kernel}, stride {self.stride}, pad {self.pad}")
            out.append(o)
        return tuple(out)

    def forward(self, bottom, top):
        w = self.blobs[0].data
        b = self.blobs[1].data if self.bias_term else None
        for bt, tp in zip(bottom, top):
            _store(tp, conv_ops.deconv2d_forward(bt.data, w, b, **self._kw()))

    def backward(self, top, propagate_down, bottom):
        w = self.blobs[0].data
        need_dw = self.param_propagate_down[0]
        need_db = self.bias_term and self.param_propagate_down[1]
        for i, (bt, tp) in enumerate(zip(bottom, top)):
            if not (need_dw or need_db or propagate_down[i]):
                continue
            dx, dw, db = conv_ops.deconv2d_backward(bt.data, w, tp.diff,
                                                    need_dx=propagate_down[i], need_dw=need_dw,
                                                    need_db=need_db, **self._kw())
            if dw is not None:
                self.blobs[0].diff += dw
            if db is not None:
                self.blobs[1].diff += db
            if dx is not None:
                bt.diff[...] = dx
