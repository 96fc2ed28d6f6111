"""The members pycaffe's ``caffe.Net`` has beyond poseidon's own ``Net`` contract.

``Net`` inherits :class:`PycaffeNetMembers`; everything here is built on the graph ``Net``
constructs (``layers``, ``layer_names``, ``blobs``, ``inputs``, ``outputs``, the per-layer
bottom/top name lists) and adds no state of its own except a MemoryData input's arrays.

Members (pycaffe semantics):

* ``layer_dict``: ``{layer name: layer}``; ``top_names`` / ``bottom_names``: ``{layer name: [blob
  names]}`` (insertion-ordered like pycaffe's OrderedDicts); ``_layer_names``, ``_blob_names``,
  ``_inputs``, ``_outputs`` (names), ``blob_loss_weights``: ``{blob name: loss weight}`` (0 for
  blobs that are no loss).
* ``_forward(start, end)`` / ``_backward(start, end)``: layer indices, inclusive.
* In a net holding a Python layer, a layer whose bottoms changed shape is reshaped before its
  forward (Caffe reshapes every layer on every forward).
* ``forward_all(blobs=None, **inputs)``: feeds inputs of any length batch by batch (the last batch
  zero-padded), returns ``{output: array}`` over all items with the padding dropped;
  ``backward_all(diffs=None, **top_diffs)`` runs backward batch by batch on the top diffs given,
  against the forward state the net holds (with no arguments: one plain backward pass);
  ``forward_backward_all(blobs=None, diffs=None, **inputs_and_top_diffs)`` returns
  ``(outputs, diffs)`` the same way.
* ``set_input_arrays(data, labels)``: hands 4-D float32 ``data`` (N, C, H, W) and ``labels`` (N,)
  or (N, 1, 1, 1) to the net's first layer, which must be a MemoryData layer.
* ``share_with(other)``: alias every same-named layer's weights with ``other``'s.
* ``save_hdf5(path)`` / ``load_hdf5(path)``: Caffe's .caffemodel.h5 layout (``poseidon_cli.hdf5``).

Errors: ``NetError`` naming what is wrong (no MemoryData layer, bad array shapes or dtypes).
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from .errors import NetError

_PHASE_NAMES = ("TRAIN", "TEST")
_global_seed = None


def set_random_seed(seed):
    """pycaffe ``set_random_seed``: nets built afterwards without their own ``seed`` (or solver
    ``random_seed``) seed their layers' generators from it, so runs repeat."""
    global _global_seed
    _global_seed = None if seed is None else int(seed)


def global_seed():
    return _global_seed


def legacy_net_args(phase, weights):
    """pycaffe's constructor forms -> (phase, weights).

    ``Net(proto, phase)``, ``Net(proto, phase, weights=w)`` and the legacy ``Net(proto, w, phase)``
    (weights second, phase third) all mean the same net."""
    if isinstance(phase, (str, os.PathLike)) and not (
            isinstance(phase, str) and phase.upper() in _PHASE_NAMES):
        if weights is None or isinstance(weights, (int, np.integer)):
            phase, weights = (0 if weights is None else weights), phase
    return phase, weights


class PycaffeNetMembers:
    """Mixin for ``Net``: see the module docstring."""

    # -- names -----------------------------------------------------------------------------------
    @property
    def layer_dict(self):
        return OrderedDict(zip(self.layer_names, self.layers))

    @property
    def top_names(self):
        return OrderedDict(zip(self.layer_names, (list(t) for t in self._top_name_lists)))

    @property
    def bottom_names(self):
        return OrderedDict(zip(self.layer_names, (list(b) for b in self._bottom_name_lists)))

    @property
    def _layer_names(self):
        return list(self.layer_names)

    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def _inputs(self):
        return list(self.inputs)

    @property
    def _outputs(self):
        return list(self.outputs)

    @property
    def blob_loss_weights(self):
        weights = OrderedDict((name, 0.0) for name in self.blobs)
        for layer, names in zip(self.layers, self._top_name_lists):
            for name, w in zip(names, layer.loss_weights):
                if w:
                    weights[name] = float(w)
        return weights

    # -- reshapes --------------------------------------------------------------------------------
    def _follow_python_reshapes(self):
        """Caffe reshapes every layer before its forward; poseidon reshapes the net when an input's
        shape changed. A Python layer may change its tops' shapes in its own reshape (a last,
        smaller batch), so in a net holding one, a layer whose bottoms changed shape since it was
        last shaped is reshaped before its forward (a before_forward hook)."""
        if not any(layer.type == "Python" for layer in self.layers):
            return
        shaped = [tuple(b.shape for b in bottoms) for bottoms in self.bottom_vecs]

        def reshape_if_moved(li):
            shapes = tuple(b.shape for b in self.bottom_vecs[li])
            if shapes != shaped[li]:
                shaped[li] = shapes
                layer, tops = self.layers[li], self.top_vecs[li]
                layer.reshape(self.bottom_vecs[li], tops)
                for blob, w in zip(tops, layer.loss_weights):
                    if w:
                        blob.diff[...] = w

        self.add_before_forward(reshape_if_moved)

    # -- running by index ------------------------------------------------------------------------
    def _forward(self, start, end):
        return self.forward_from_to(int(start), int(end))

    def _backward(self, start, end):
        self.backward_from_to(int(start), int(end))

    # -- whole data sets -------------------------------------------------------------------------
    def _batches(self, arrays):
        """Yield ``{name: batch}`` of the net's batch size; the last one padded with zeros."""
        if not arrays:
            return
        first = next(iter(self.inputs), None) or next(iter(arrays))
        batch = self.blobs[first].shape[0] if self.blobs[first].shape else 1
        total = len(next(iter(arrays.values())))
        for name, arr in arrays.items():
            if len(arr) != total:
                raise NetError(f"net '{self.name}': '{name}' has {len(arr)} items but "
                               f"'{next(iter(arrays))}' has {total}")
        for start in range(0, total, batch):
            out = {}
            for name, arr in arrays.items():
                chunk = np.asarray(arr[start:start + batch])
                if len(chunk) < batch:
                    pad = np.zeros((batch - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                out[name] = chunk
            yield out

    def forward_all(self, blobs=None, **inputs):
        """Forward ``inputs`` (name -> array of N items) through the net in batches."""
        names = list(self.outputs) + [b for b in (blobs or []) if b not in self.outputs]
        collected = {n: [] for n in names}
        for batch in self._batches(inputs):
            outs = self.forward(blobs=blobs, **batch)
            for n in names:
                collected[n].append(np.array(_to_host(outs[n]), copy=True))
        return self._trim(collected, inputs)

    def forward_backward_all(self, blobs=None, diffs=None, **arrays):
        """Forward and backward in batches: ``arrays`` holds net inputs and output top diffs."""
        fwd = {k: v for k, v in arrays.items() if k in self.inputs}
        bwd = {k: v for k, v in arrays.items() if k in self.outputs}
        out_names = list(self.outputs) + [b for b in (blobs or []) if b not in self.outputs]
        diff_names = list(self.inputs) + [d for d in (diffs or []) if d not in self.inputs]
        outs = {n: [] for n in out_names}
        grads = {n: [] for n in diff_names}
        fwd_batches = self._batches(fwd)
        bwd_batches = self._batches(bwd) if bwd else None
        for fb in fwd_batches:
            o = self.forward(blobs=blobs, **fb)
            d = self.backward(diffs=diffs, **(next(bwd_batches) if bwd_batches else {}))
            for n in out_names:
                outs[n].append(np.array(_to_host(o[n]), copy=True))
            for n in diff_names:
                grads[n].append(np.array(_to_host(d[n]), copy=True))
        return self._trim(outs, fwd), self._trim(grads, fwd)

    def _backward_all_batches(self, diffs, top_diffs):
        names = list(self.inputs) + [d for d in (diffs or []) if d not in self.inputs]
        grads = {n: [] for n in names}
        for batch in self._batches(top_diffs):
            d = self.backward(diffs=diffs, **batch)
            for n in names:
                grads[n].append(np.array(_to_host(d[n]), copy=True))
        return self._trim(grads, top_diffs)

    @staticmethod
    def _trim(collected, inputs):
        total = len(next(iter(inputs.values()))) if inputs else None
        result = {}
        for name, parts in collected.items():
            arr = (np.concatenate([np.atleast_1d(p) for p in parts]) if parts
                   else np.zeros(0, np.float32))
            if total is not None and arr.ndim and len(arr) > total:
                arr = arr[:total]
            result[name] = arr
        return result

    # -- MemoryData ------------------------------------------------------------------------------
    def set_input_arrays(self, data, labels):
        """Give the first layer (a MemoryData layer) ``data`` (N, C, H, W) and ``labels``."""
        if not self.layers or self.layers[0].type != "MemoryData":
            raise NetError(f"net '{self.name}': set_input_arrays needs a MemoryData layer as the "
                           f"first layer")
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None, None, None]
        return self.layers[0].reset(data, labels)

    # -- weights ---------------------------------------------------------------------------------
    def share_with(self, other):
        """pycaffe ``share_with``: this net uses ``other``'s weights for same-named layers."""
        self.share_trained_layers_with(other)

    def save_hdf5(self, path, write_diff=False):
        from . import hdf5
        hdf5.save_net(self, path, write_diff=write_diff)

    def load_hdf5(self, path):
        from . import hdf5
        hdf5.load_net(self, path)


def _to_host(a):
    from . import backend
    return backend.to_host(a)
