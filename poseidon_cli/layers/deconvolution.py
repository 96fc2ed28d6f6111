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
from .convolution import _ConvBase


@register("Deconvolution")
class DeconvolutionLayer(_ConvBase):

    def _weight_shape(self, C):
        return (C, self.O // self.group) + self.kernel

    _out_size = staticmethod(conv_ops.deconv_out_size)

    def _no_output(self, shape) -> str:
        return (f"output would be empty: bottom shape {shape}, kernel {self.kernel}, "
                f"stride {self.stride}, pad {self.pad}")

    _forward_op = staticmethod(conv_ops.deconv2d_forward)
    _backward_op = staticmethod(conv_ops.deconv2d_backward)
