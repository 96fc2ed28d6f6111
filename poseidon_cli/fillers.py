"""Weight initializers (Caffe's ``FillerParameter``).

``fill(blob, filler_param, rng)`` writes ``blob.data`` in place and returns the blob. Random numbers
are drawn on the host from ``rng`` (a ``numpy.random.Generator``, the layer's seeded stream) and
copied to the blob's array module, so a seeded run fills identical weights on CPU and GPU. Caffe's
own streams (boost mt19937) cannot be reproduced bit for bit; only the distributions match.

Fields read (defaults as in caffe.proto): ``type`` ("constant"), ``value`` (0), ``min`` (0),
``max`` (1), ``mean`` (0), ``std`` (1), ``sparse`` (-1), ``variance_norm`` (FAN_IN).

Types:
- ``constant``: every element = value.
- ``uniform``: U[min, max].
- ``gaussian``: N(mean, std); with ``sparse >= 0`` each element is kept with probability
  sparse / num_outputs (num_outputs = shape[0]) and zeroed otherwise.
- ``xavier``: U[-a, a], a = sqrt(3 / n); ``msra``: N(0, sqrt(2 / n)). n is fan_in = count / shape[0]
  (FAN_IN), fan_out = count / shape[1] (FAN_OUT) or their mean (AVERAGE). Our InnerProduct weight
  is (N, K) so fan_in = K as in BVLC; Poseidon's legacy (1,1,N,K) weight blob gave N*K (its
  ``filler.hpp`` divides count by shape[0] = 1) -- we follow BVLC. ``std`` is ignored.
- ``positive_unitball``: U[0, 1], then each of the shape[0] rows (count / shape[0] elements) scaled
  to sum 1.
- ``bilinear``: the bilinear-upsampling kernel for a 4-D (.., .., k, k) Deconvolution weight.

A missing filler (``None`` or an unset message field) fills zeros, like Caffe. An unknown type
raises ``NetError`` naming it.
"""
from __future__ import annotations

import math

import numpy as np

from ._proto import caffe_pb2
from .errors import NetError

FILLER_TYPES = ("constant", "uniform", "gaussian", "xavier", "msra", "positive_unitball",
                "bilinear")


def _fans(shape, count):
    fan_in = count / shape[0] if shape and shape[0] else count
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else count
    return fan_in, fan_out


def _norm_n(fp, shape, count):
    fan_in, fan_out = _fans(shape, count)
    mode = fp.variance_norm
    if mode == caffe_pb2.FillerParameter.FAN_OUT:
        return fan_out
    if mode == caffe_pb2.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def make_values(shape, fp, rng, what: str = "filler"):
    """A float64 host array of ``shape`` drawn according to FillerParameter ``fp``."""
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if fp is None:
        fp = caffe_pb2.FillerParameter()
    kind = fp.type
    if kind == "constant":
        return np.full(shape, fp.value, dtype=np.float64)
    if kind == "uniform":
        if fp.max < fp.min:
            raise NetError(f"{what}: uniform filler needs min <= max, got min {fp.min} max {fp.max}")
        return rng.uniform(fp.min, fp.max, size=shape)
    if kind == "gaussian":
        out = rng.normal(fp.mean, fp.std, size=shape)
        if fp.sparse >= 0:
            if not shape:
                raise NetError(f"{what}: sparse gaussian filler needs a blob with at least one axis")
            p = fp.sparse / float(shape[0])
            out *= rng.random(size=shape) < p
        return out
    if kind in ("xavier", "msra"):
        n = _norm_n(fp, shape, count)
        if n <= 0:
            raise NetError(f"{what}: {kind} filler on an empty blob of shape {shape}")
        if kind == "xavier":
            a = math.sqrt(3.0 / n)
            return rng.uniform(-a, a, size=shape)
        return rng.normal(0.0, math.sqrt(2.0 / n), size=shape)
    if kind == "positive_unitball":
        out = rng.uniform(0.0, 1.0, size=shape)
        rows = out.reshape(shape[0] if shape else 1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
        return out
    if kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise NetError(f"{what}: bilinear filler needs a 4-D weight with square kernel, "
                           f"got shape {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        t = 1 - np.abs(np.arange(k) / f - c)
        kernel = np.outer(t, t)
        return np.broadcast_to(kernel, shape).astype(np.float64)
    raise NetError(f"{what}: unknown filler type '{kind}' (known: {', '.join(FILLER_TYPES)})")


def fill(blob, filler_param, rng, what: str = "filler"):
    """Fill ``blob.data`` per ``filler_param`` (None => zeros); returns ``blob``."""
    values = make_values(blob.shape, filler_param, rng, what)
    blob.data[...] = blob.xp.asarray(values.astype(blob.dtype, copy=False))
    return blob


def filler_of(parent, field: str):
    """``parent.<field>`` if that FillerParameter is set, else None (=> zeros)."""
    return getattr(parent, field) if parent.HasField(field) else None
