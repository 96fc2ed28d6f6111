"""pycaffe's ``caffe.io``: array <-> BlobProto / Datum conversions, image loading and resizing,
oversampling, and the :class:`Transformer` that turns images into net input.

Conversions (pycaffe's contracts):

* ``blobproto_to_array(blob, return_diff=False)``: the data (or diff) reshaped to the legacy
  (num, channels, height, width) when any of those is set, else to ``shape.dim``; float64.
* ``array_to_blobproto(arr, diff=None)``: ``shape.dim`` = arr.shape, data (and diff) as floats.
* ``arraylist_to_blobprotovector_str(arrays)`` / ``blobprotovector_str_to_arraylist(s)``: a
  serialized BlobProtoVector.
* ``array_to_datum(arr, label=None)``: arr (C, H, W); uint8 arrays go to ``data`` bytes, others
  to ``float_data``; ``label`` is written only when given. ``ValueError`` unless arr is 3-D.
* ``datum_to_array(datum)``: (C, H, W), uint8 from ``data`` or float64 from ``float_data``
  (the label is ``datum.label``).

Images (H x W x K float32 in [0, 1], RGB, as pycaffe gives them):

* ``load_image(filename, color=True)``: K = 3 (grey images repeated) or, with ``color=False``,
  K = 1; an alpha channel is dropped. Needs Pillow (the ``[image]`` extra).
* ``resize_image(im, new_dims, interp_order=1)``: H x W x K to new_dims[0] x new_dims[1] x K,
  bilinear (``interp_order=1``) or nearest (0) with pixel centres aligned; a constant image stays
  that constant.
* ``oversample(images, crop_dims)``: for each image the 4 corner crops, the centre crop, then
  those 5 mirrored left-right: (10 N) x h x w x K.

Errors: ``ValueError`` / ``Exception`` types and messages of pycaffe's for bad shapes; a missing
Pillow raises ``ImportError`` saying how to install it.
"""
from __future__ import annotations

import numpy as np

from ._proto import caffe_pb2

__all__ = ["blobproto_to_array", "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array", "load_image",
           "resize_image", "oversample", "Transformer"]


# -- BlobProto ---------------------------------------------------------------------------------

def blobproto_to_array(blob, return_diff=False):
    values = blob.diff if return_diff else blob.data
    if return_diff and not len(values) and len(blob.double_diff):
        values = blob.double_diff
    elif not return_diff and not len(values) and len(blob.double_data):
        values = blob.double_data
    arr = np.array(values, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return arr.reshape(blob.num, blob.channels, blob.height, blob.width)
    return arr.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    if arr.ndim:
        blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s):
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(s)
    return [blobproto_to_array(b) for b in vec.blobs]


# -- Datum -------------------------------------------------------------------------------------

def array_to_datum(arr, label=None):
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = (int(d) for d in arr.shape)
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float64).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)


# -- images ------------------------------------------------------------------------------------

def _pil_image():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("caffe.io.load_image needs Pillow: pip install 'poseidon-cli[image]' "
                          "(or: pip install pillow)") from None
    return Image


def load_image(filename, color=True):
    Image = _pil_image()
    with Image.open(filename) as img:
        if color:
            arr = np.asarray(img.convert("RGB"))
        else:
            arr = np.asarray(img.convert("L"))[:, :, None]
    return (arr.astype(np.float32) / 255.0)


def _axis_weights(n_in, n_out, order):
    """Source indices and weights along one axis (pixel centres aligned, edges clamped)."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    if order == 0:
        idx = np.clip(np.floor(pos + 0.5).astype(int), 0, n_in - 1)
        return idx, idx, np.zeros(n_out)
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, pos - lo


def resize_image(im, new_dims, interp_order=1):
    im = np.asarray(im, dtype=np.float32)
    h, w = int(new_dims[0]), int(new_dims[1])
    if interp_order not in (0, 1):
        raise ValueError(f"interp_order {interp_order}: only 0 (nearest) and 1 (bilinear)")
    lo_min, hi_max = float(im.min()), float(im.max())
    if hi_max == lo_min:   # a constant image: keep the constant (no 0/0 on rescaling)
        return np.full((h, w) + im.shape[2:], lo_min, dtype=np.float32)
    ylo, yhi, wy = _axis_weights(im.shape[0], h, interp_order)
    xlo, xhi, wx = _axis_weights(im.shape[1], w, interp_order)
    extra = (1,) * (im.ndim - 2)
    wy = wy.reshape((-1, 1) + extra)
    wx = wx.reshape((1, -1) + extra)
    top = im[ylo][:, xlo] * (1 - wx) + im[ylo][:, xhi] * wx
    bottom = im[yhi][:, xlo] * (1 - wx) + im[yhi][:, xhi] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def _crop_boxes(im_hw, crop_hw):
    """(y0, x0, y1, x1) of the 4 corners then the centre."""
    H, W = im_hw
    h, w = crop_hw
    boxes = [(y, x, y + h, x + w) for y in (0, H - h) for x in (0, W - w)]
    cy, cx = H / 2.0, W / 2.0
    boxes.append((int(cy - h / 2.0), int(cx - w / 2.0), int(cy - h / 2.0) + h,
                  int(cx - w / 2.0) + w))
    return boxes


def oversample(images, crop_dims):
    crop_dims = tuple(int(d) for d in crop_dims)
    first = np.asarray(images[0])
    boxes = _crop_boxes(first.shape[:2], crop_dims)
    out = np.empty((10 * len(images),) + crop_dims + (first.shape[-1],), dtype=np.float32)
    k = 0
    for im in images:
        im = np.asarray(im)
        crops = [im[y0:y1, x0:x1, :] for (y0, x0, y1, x1) in boxes]
        for c in crops + [c[:, ::-1, :] for c in crops]:
            out[k] = c
            k += 1
    return out


# -- Transformer -------------------------------------------------------------------------------

class Transformer:
    """Turn H x W x K images into net input for the blobs named in ``inputs`` ({name: shape}).

    ``preprocess(name, image)``, in this order: to float32; resize to the blob's H x W if needed;
    transpose (``set_transpose``: e.g. (2, 0, 1) for HWC -> CHW); channel swap
    (``set_channel_swap``: e.g. (2, 1, 0) for RGB -> BGR); multiply by ``raw_scale``; subtract
    ``mean`` (per channel (K,) or elementwise (K, H, W)); multiply by ``input_scale``.
    ``deprocess(name, data)`` undoes them in reverse order (not the resize) after squeezing.
    Errors: ``Exception`` for a name that is no input or a transpose / swap of the wrong length,
    ``ValueError`` for a mean that does not fit (pycaffe's types)."""

    def __init__(self, inputs):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check(self, name):
        if name not in self.inputs:
            raise Exception(f"{name} is not one of the net inputs: {self.inputs}")

    def set_transpose(self, name, order):
        self._check(name)
        if len(order) != len(self.inputs[name]) - 1:
            raise Exception("Transpose order needs to have the same number of dimensions as "
                            "the input.")
        self.transpose[name] = tuple(order)

    def set_channel_swap(self, name, order):
        self._check(name)
        if len(order) != self.inputs[name][1]:
            raise Exception("Channel swap needs to have the same number of dimensions as the "
                            "input channels.")
        self.channel_swap[name] = tuple(order)

    def set_raw_scale(self, name, scale):
        self._check(name)
        self.raw_scale[name] = scale

    def set_mean(self, name, mean):
        self._check(name)
        mean = np.asarray(mean)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[name][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, None, None]
        else:
            shape = mean.shape if mean.ndim != 2 else (1,) + mean.shape
            if len(shape) != 3:
                raise ValueError("Mean shape invalid")
            if tuple(shape) != self.inputs[name][1:]:
                raise ValueError("Mean shape incompatible with input shape.")
            mean = mean.reshape(shape)
        self.mean[name] = mean

    def set_input_scale(self, name, scale):
        self._check(name)
        self.input_scale[name] = scale

    def preprocess(self, name, data):
        self._check(name)
        x = np.asarray(data).astype(np.float32, copy=False)
        hw = self.inputs[name][2:]
        if tuple(x.shape[:2]) != hw:
            x = resize_image(x, hw)
        if name in self.transpose:
            x = x.transpose(self.transpose[name])
        if name in self.channel_swap:
            x = x[list(self.channel_swap[name]), :, :]
        x = np.array(x, dtype=np.float32, copy=True)
        if name in self.raw_scale:
            x *= self.raw_scale[name]
        if name in self.mean:
            x -= self.mean[name]
        if name in self.input_scale:
            x *= self.input_scale[name]
        return x

    def deprocess(self, name, data):
        self._check(name)
        x = np.array(data, copy=True).squeeze()
        if name in self.input_scale:
            x /= self.input_scale[name]
        if name in self.mean:
            x += self.mean[name]
        if name in self.raw_scale:
            x /= self.raw_scale[name]
        if name in self.channel_swap:
            x = x[list(np.argsort(self.channel_swap[name])), :, :]
        if name in self.transpose:
            x = x.transpose(np.argsort(self.transpose[name]))
        return x
