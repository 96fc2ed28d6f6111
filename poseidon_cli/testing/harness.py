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


def run_both_ways(spec, x, dy, init=None):
    """Run a one-bottom layer out of place and in place (top blob == bottom blob) on input ``x``
    with top gradient ``dy`` (float64 arrays): setup, ``init(layer)`` if given (e.g. to set its
    weights), forward, backward. Returns ``[out_of_place, in_place]``, each a dict with ``top``
    (the forward output), ``bottom_diff``, ``params`` and ``param_diffs`` (copies), so a test can
    assert that running in place changes nothing."""
    results = []
    for in_place in (False, True):
        layer = make_layer(spec)
        bottom = make_blobs([x.shape])
        bottom[0].data[...] = x
        top = bottom if in_place else [Blob(dtype=np.float64)]
        layer.setup(bottom, top)
        if init is not None:
            init(layer)
        layer.forward(bottom, top)
        out = top[0].data.copy()
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results.append({"top": out, "bottom_diff": bottom[0].diff.copy(),
                        "params": [b.data.copy() for b in layer.blobs],
                        "param_diffs": [b.diff.copy() for b in layer.blobs]})
    return results
