"""Convolution (Caffe semantics: cross-correlation, zero padding, stride, dilation, group).

Fields (``convolution_param``): ``num_output`` O (required), ``bias_term`` (true),
``kernel_size`` / ``pad`` / ``stride`` / ``dilation`` (repeated: one value for both spatial axes
or one per axis; defaults pad 0, stride 1, dilation 1) or ``kernel_h``/``kernel_w``,
``pad_h``/``pad_w``, ``stride_h``/``stride_w`` (each pair given together), ``group`` (1),
``weight_filler`` / ``bias_filler`` (missing => zeros), ``axis`` (must be 1: NCHW only).

Shapes: bottom (N, C, H, W) -> top (N, O, Ho, Wo), Ho = (H + 2 pad - (dilation (k-1) + 1)) //
stride + 1. Blobs: W (O, C/group, kh, kw), b (O,). Several bottoms (each with its own top) share
the weights, as in Caffe. Errors (NetError): C or O not divisible by group, kernel larger than the
padded input, a bottom with different C than at setup.

The math lives in ``ops/conv.py``.
"""
from __future__ import annotations

from .. import fillers
from ..ops import conv as conv_ops
from . import register
from ._neuron import data_pointer
from .base import Layer, free_output


def spatial_geometry(layer, p):
    """(kernel, stride, pad, dilation) as (h, w) pairs from a ConvolutionParameter."""
    def two(values, name, default):
        vals = [int(v) for v in values]
        if not vals:
            return (default, default)
        if len(vals) == 1:
            return (vals[0], vals[0])
        if len(vals) == 2:
            return (vals[0], vals[1])
        raise layer.error(f"{name} has {len(vals)} values; only 2-D convolution is supported "
                          f"(give 1 or 2)")

    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise layer.error("kernel_h and kernel_w must be given together")
        if p.kernel_size:
            raise layer.error("give kernel_size or kernel_h/kernel_w, not both")
        kernel = (int(p.kernel_h), int(p.kernel_w))
    else:
        if not p.kernel_size:
            raise layer.error("kernel_size (or kernel_h and kernel_w) is required")
        kernel = two(p.kernel_size, "kernel_size", 0)
    if p.HasField("stride_h") or p.HasField("stride_w"):
        if not (p.HasField("stride_h") and p.HasField("stride_w")):
            raise layer.error("stride_h and stride_w must be given together")
        if p.stride:
            raise layer.error("give stride or stride_h/stride_w, not both")
        stride = (int(p.stride_h), int(p.stride_w))
    else:
        stride = two(p.stride, "stride", 1)
    if p.HasField("pad_h") or p.HasField("pad_w"):
        if not (p.HasField("pad_h") and p.HasField("pad_w")):
            raise layer.error("pad_h and pad_w must be given together")
        if p.pad:
            raise layer.error("give pad or pad_h/pad_w, not both")
        pad = (int(p.pad_h), int(p.pad_w))
    else:
        pad = two(p.pad, "pad", 0)
    dilation = two(p.dilation, "dilation", 1)
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise layer.error(f"kernel {kernel}, stride {stride} and dilation {dilation} must be >= 1")
    return kernel, stride, pad, dilation


def _store(blob, y):
    """Make ``y`` the blob's data: nothing to do when the op wrote into the blob's own array,
    else adopt the fresh array when it fits (no copy), else copy."""
    if _same_memory(y, blob.data):
        return
    if y.dtype == blob.dtype and y.flags.c_contiguous and tuple(y.shape) == blob.shape:
        blob.set_data_array(y)
    else:
        blob.data[...] = y


def _same_memory(a, b) -> bool:
    return a is b or (a.size == b.size and a.size > 0 and data_pointer(a) == data_pointer(b))


class _ConvBase(Layer):
    """Shared setup of Convolution and Deconvolution (they differ in weight layout and shapes)."""
    min_bottom = 1
    equal_num_bottom_top = True

    def _weight_shape(self, C):
        raise NotImplementedError

    def layer_setup(self, bottom, top):
        p = self.param.convolution_param
        if p.axis not in (1, -3):
            raise self.error(f"convolution_param.axis {p.axis} is not supported (NCHW, axis 1)")
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param.num_output must be set (> 0)")
        self.kernel, self.stride, self.pad, self.dilation = spatial_geometry(self, p)
        self.O = int(p.num_output)
        self.group = int(p.group)
        if len(bottom[0].shape) != 4:
            raise self.error(f"needs a 4-D (N, C, H, W) bottom, got shape {bottom[0].shape}")
        self.C = bottom[0].shape[1]
        if self.group < 1 or self.C % self.group or self.O % self.group:
            raise self.error(f"channels ({self.C} in, {self.O} out) must be divisible by "
                             f"group {self.group} (bottom shape {bottom[0].shape})")
        self.bias_term = p.bias_term
        w = self.new_blob(self._weight_shape(self.C))
        fillers.fill(w, fillers.filler_of(p, "weight_filler"), self.rng, f"{self.describe()} weights")
        self.blobs = [w]
        if self.bias_term:
            b = self.new_blob((self._bias_len(),))
            fillers.fill(b, fillers.filler_of(p, "bias_filler"), self.rng, f"{self.describe()} bias")
            self.blobs.append(b)
        self.param_propagate_down = [True] * len(self.blobs)

    def _bias_len(self):
        return self.O

    #: ops/conv's output length of one axis: ``f(size, kernel, pad, stride, dilation)``
    _out_size = staticmethod(conv_ops.conv_out_size)

    def _no_output(self, shape) -> str:
        return (f"kernel {self.kernel} (dilation {self.dilation}) is larger than the padded "
                f"input: bottom shape {shape}, pad {self.pad}")

    def _out_hw(self, H, W, shape):
        """(Ho, Wo) for an H x W bottom; the size rule lives with the op (ops/conv.py)."""
        try:
            return tuple(self._out_size(size, k, pd, s, d) for size, k, pd, s, d in
                         zip((H, W), self.kernel, self.pad, self.stride, self.dilation))
        except ValueError:
            raise self.error(self._no_output(shape)) from None

    def reshape(self, bottom, top):
        for i, (b, t) in enumerate(zip(bottom, top)):
            if len(b.shape) != 4 or b.shape[1] != self.C:
                raise self.error(f"bottom[{i}] shape {b.shape} does not have the {self.C} "
                                 f"channels the weights were made for")
            N, _, H, W = b.shape
            Ho, Wo = self._out_hw(H, W, b.shape)
            t.reshape((N, self._bias_len(), Ho, Wo))

    def _kw(self):
        return dict(stride=self.stride, pad=self.pad, dilation=self.dilation, group=self.group)

    # Convolution and Deconvolution differ only in the op pair and the shapes above.
    _forward_op = staticmethod(conv_ops.conv2d_forward)
    _backward_op = staticmethod(conv_ops.conv2d_backward)

    def forward(self, bottom, top):
        w = self.blobs[0].data
        b = self.blobs[1].data if self.bias_term else None
        for bt, tp in zip(bottom, top):
            # into the top's own array: no second top-sized array alive while computing
            out = free_output(tp.data, bt.data, w)
            _store(tp, self._forward_op(bt.data, w, b, **self._kw(), out=out))

    def backward(self, top, propagate_down, bottom):
        w = self.blobs[0].data
        need_dw = self.param_propagate_down[0]
        need_db = self.bias_term and self.param_propagate_down[1]
        for i, (bt, tp) in enumerate(zip(bottom, top)):
            if not (need_dw or need_db or propagate_down[i]):
                continue
            dx_out = free_output(bt.diff, bt.data, tp.diff, w) if propagate_down[i] else None
            dx, dw, db = self._backward_op(bt.data, w, tp.diff, need_dx=propagate_down[i],
                                           need_dw=need_dw, need_db=need_db, dx_out=dx_out,
                                           **self._kw())
            if dw is not None:
                self.blobs[0].diff += dw
            if db is not None:
                self.blobs[1].diff += db
            if dx is not None and not _same_memory(dx, bt.diff):
                bt.diff[...] = dx


@register("Convolution")
class ConvolutionLayer(_ConvBase):

    def _weight_shape(self, C):
        return (self.O, C // self.group) + self.kernel
