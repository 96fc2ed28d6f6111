"""Checks on a net prototxt that need no data, each naming ``file:line`` and the layer.

``check_net_param(net, path, text)``: raises ``NetError`` for a net with no layers, an Input or
DummyData shape with a negative dim or more elements than a Caffe blob can hold (``INT_MAX``), an
Accuracy ``top_k`` below 1, a BatchNorm ``eps`` that is not > 0, and two parameter layers with
the same name that can be in the same phase (weights are saved and loaded by layer name, so such
a net trains but its snapshots never load back).

``remember(path, text, net)`` records where each layer of a loaded file sits;
``layer_hint(layer_param)`` turns that into ``"fix it at <file>:<line>"`` for errors raised while
a layer is set up (None when the layer did not come from a file, e.g. NetSpec).
"""
from __future__ import annotations

import contextlib
import math
from collections import OrderedDict

from .errors import NetError
from .textloc import layer_line, where

#: Caffe's Blob::Reshape CHECK: a blob's count must fit in an int
MAX_BLOB_COUNT = 2 ** 31 - 1
#: layer types whose blobs are learned and saved under the layer's name
PARAM_LAYER_TYPES = frozenset({"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale",
                               "Bias", "PReLU", "Embed", "LSTM", "RNN", "Normalize"})
_TRAIN, _TEST = 0, 1
_KEEP_FILES = 32
_locations: "OrderedDict[str, dict[str, int]]" = OrderedDict()


def remember(path: str, text: str, net) -> None:
    names = {}
    for lp in list(net.layer) + list(net.layers):
        if lp.name and lp.name not in names:
            line = layer_line(text, lp.name)
            if line:
                names[lp.name] = line
    _locations[path] = names
    _locations.move_to_end(path)
    while len(_locations) > _KEEP_FILES:
        _locations.popitem(last=False)


def layer_location(name: str) -> str | None:
    for path in reversed(_locations):
        line = _locations[path].get(name)
        if line:
            return where(path, line)
    return None


def layer_hint(layer_param) -> str | None:
    loc = layer_location(getattr(layer_param, "name", ""))
    return f"fix it at {loc}" if loc else None


@contextlib.contextmanager
def weights_named(path: str):
    """Errors from ``Net.copy_from(<NetParameter>)`` say "weights: ..."; name the file instead."""
    try:
        yield
    except NetError as exc:
        text = exc.message
        if text.startswith("weights: "):
            text = text[len("weights: "):]
        raise NetError(f"{path}: {text}", exc.hint or
                       "give the .caffemodel trained with this net (layers are matched by name)") from None


def _phases(lp) -> set[int]:
    inc = [r.phase for r in lp.include if r.HasField("phase")]
    if inc:
        return set(inc)
    exc = {r.phase for r in lp.exclude if r.HasField("phase")}
    return {_TRAIN, _TEST} - exc


def _shape_problem(dims) -> str | None:
    dims = [int(d) for d in dims]
    if any(d < 0 for d in dims):
        return f"shape {tuple(dims)} has a negative dim; give every dim >= 0"
    count = math.prod(dims) if dims else 1
    if count > MAX_BLOB_COUNT:
        return (f"shape {tuple(dims)} has {count:.3g} elements, more than a blob can hold "
                f"({MAX_BLOB_COUNT}); use smaller dims")
    return None


def check_net_param(net, path: str, text: str) -> None:
    """See the module docstring; ``net`` is an upgraded NetParameter read from ``path``."""
    def fail(lp, what):
        loc = where(path, layer_line(text, lp.name))
        raise NetError(f"{loc}: layer '{lp.name}' (type {lp.type}): {what}")

    if not net.layer:
        raise NetError(f"{path}: the net has no layers",
                       "add layer { name: ... type: ... } blocks (is it the right file?)")
    seen: dict[str, object] = {}
    for lp in net.layer:
        shapes = []
        if lp.type == "Input":
            shapes = [s.dim for s in lp.input_param.shape]
        elif lp.type == "DummyData":
            shapes = [s.dim for s in lp.dummy_data_param.shape]
        for dims in shapes:
            problem = _shape_problem(dims)
            if problem:
                fail(lp, problem)
        if lp.type == "Accuracy" and lp.accuracy_param.top_k < 1:
            fail(lp, f"accuracy_param.top_k must be >= 1, got {lp.accuracy_param.top_k}")
        if lp.type == "BatchNorm" and not lp.batch_norm_param.eps > 0:
            fail(lp, f"batch_norm_param.eps must be > 0, got {lp.batch_norm_param.eps:g}")
        if lp.type in PARAM_LAYER_TYPES and lp.name:
            other = seen.get(lp.name)
            if other is not None and _phases(other) & _phases(lp):
                loc = where(path, layer_line(text, lp.name))
                raise NetError(f"{loc}: two parameter layers are named '{lp.name}' (types "
                               f"{other.type} and {lp.type})",
                               "rename one: weights are saved and loaded by layer name")
            seen[lp.name] = lp
