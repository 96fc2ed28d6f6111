"""Building single layers for tests without a Net."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from .._proto import caffe_pb2
from ..blob import Blob
from ..layers import TRAIN, create_layer


def make_layer(spec, phase: int = TRAIN, xp=None, seed: int = 1701, dtype=np.float64):
    """A layer from LayerParameter text (``'type: "ReLU" relu_param { negative_slope: 0.1 }'``)
    or a LayerParameter. ``name`` defaults to the type; the layer's rng is seeded with ``seed``;
    weight blobs it creates have ``dtype`` (float64 by default, for gradient checks)."""
    if isinstance(spec, str):
        param = caffe_pb2.LayerParameter()
        text_format.Parse(spec, param)
    else:
        param = spec
    if not param.name:
        param.name = param.type
    layer = create_layer(param, phase)
    if xp is not None:
        layer.xp = xp
    layer.rng = np.random.default_rng(seed)
    layer.dtype = dtype
    return layer


def make_blobs(shapes, rng=None, dtype=np.float64, xp=np, low=-1.0, high=1.0):
    """Blobs of the given shapes filled with U[low, high) values (float64 by default, so
    finite differences have margin)."""
    rng = rng if rng is not None else np.random.default_rng(1701)
    blobs = []
    for shape in shapes:
        b = Blob(shape, xp=xp, dtype=dtype)
        b.data[...] = xp.asarray(rng.uniform(low, high, size=shape).astype(dtype))
        blobs.append(b)
    return blobs


def run_forward(layer, bottom, n_top=1, dtype=None):
    """setup + forward; returns the top blobs."""
    dtype = dtype or bottom[0].dtype if bottom else np.float64
    xp = bottom[0].xp if bottom else np
    top = [Blob((), xp=xp, dtype=dtype) for _ in range(n_top)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top
