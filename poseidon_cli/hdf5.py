"""Caffe's HDF5 files: ``.caffemodel.h5`` weights, ``.solverstate.h5`` solver state, and the
h5py import behind the optional ``[hdf5]`` extra.

Layouts (BVLC ``Net::ToHDF5`` / ``SGDSolver::SnapshotSolverStateToHDF5``):

* model: group ``data`` (and ``diff`` with ``write_diff``) holding one group per layer with
  parameters, named like the layer, whose datasets ``"0"``, ``"1"``... are the layer's blobs in
  their N-d shapes. Only a parameter's owner is written (a shared ``param { name }`` is stored
  once, under the first layer using it).
* solver state: datasets ``iter`` (int, shape (1,)), ``learned_net`` (string), ``current_step``
  (int, shape (1,)) and group ``history`` with datasets ``"0"``, ``"1"``... in SolverState order.

Errors: ``ConfigError`` without h5py (one line saying how to install it), for a file that is not
HDF5, or for a model whose layer/blob does not fit the net (naming layer and shapes).
"""
from __future__ import annotations

import os

import numpy as np

from . import backend
from .errors import ConfigError


def require_h5py():
    """The h5py module, or a one-line ConfigError telling how to install it."""
    try:
        import h5py
    except ImportError:
        raise ConfigError("HDF5 support needs h5py, which is not installed",
                          "pip install 'poseidon-cli[hdf5]' (or: pip install h5py)") from None
    return h5py


def _open(path, mode):
    h5py = require_h5py()
    try:
        return h5py.File(os.fspath(path), mode)
    except OSError as exc:
        raise ConfigError(f"{os.fspath(path)}: cannot open as HDF5 ({exc})") from None


def save_net(net, path, write_diff=False):
    """Write ``net``'s parameters in Caffe's .caffemodel.h5 layout."""
    owners = _owned_params(net)
    groups = ["data"] + (["diff"] if write_diff else [])
    with _open(path, "w") as f:
        for group in groups:
            top = f.create_group(group)
            for name, layer in zip(net.layer_names, net.layers):
                if not layer.blobs:
                    continue
                g = top.create_group(name)
                for j, blob in enumerate(layer.blobs):
                    if (name, j) not in owners:
                        continue
                    arr = blob.data if group == "data" else blob.diff
                    g.create_dataset(str(j), data=np.asarray(backend.to_host(arr)))


def _owned_params(net):
    """{(layer name, blob index)} of blobs that own their values (not a ``param { name }`` alias
    of an earlier layer's blob): the Net lists exactly the owners in ``learnable_params``."""
    owners = {id(b) for b in net.learnable_params}
    return {(name, j) for name, layer in zip(net.layer_names, net.layers)
            for j, blob in enumerate(layer.blobs) if id(blob) in owners}


def load_net(net, path):
    """Copy weights by layer name from a .caffemodel.h5 (layers missing here are ignored)."""
    where = os.fspath(path)
    index = {n: i for i, n in enumerate(net.layer_names)}
    with _open(path, "r") as f:
        if "data" not in f:
            raise ConfigError(f"{where}: no 'data' group; not a .caffemodel.h5")
        for name, group in f["data"].items():
            li = index.get(name)
            if li is None:
                continue
            layer = net.layers[li]
            keys = sorted(group.keys(), key=int)
            # Blobs shared with an earlier layer are stored once; a layer may hold fewer.
            if len(keys) > len(layer.blobs):
                raise ConfigError(f"{where}: layer '{name}' has {len(keys)} blob(s) but the net's "
                                  f"layer has {len(layer.blobs)}; incompatible model")
            for key in keys:
                blob = layer.blobs[int(key)]
                values = np.asarray(group[key])
                if _strip_ones(values.shape) != _strip_ones(blob.shape):
                    raise ConfigError(f"{where}: cannot copy param {key} of layer '{name}': "
                                      f"source shape {values.shape} does not match target "
                                      f"shape {blob.shape}")
                blob.data[...] = net.xp.asarray(values.reshape(blob.shape).astype(blob.dtype))


def write_solverstate(path, it, learned_net, history_flat, current_step=0):
    with _open(path, "w") as f:
        f.create_dataset("iter", data=np.array([int(it)], dtype=np.int32))
        f.create_dataset("learned_net", data=learned_net)
        f.create_dataset("current_step", data=np.array([int(current_step)], dtype=np.int32))
        g = f.create_group("history")
        for k, arr in enumerate(history_flat):
            g.create_dataset(str(k), data=np.asarray(backend.to_host(arr)))


def read_solverstate(path):
    """-> (iter, learned_net, current_step, [history arrays])."""
    where = os.fspath(path)
    with _open(path, "r") as f:
        try:
            it = int(np.asarray(f["iter"]).ravel()[0])
            learned = f["learned_net"][()]
            step = int(np.asarray(f["current_step"]).ravel()[0]) if "current_step" in f else 0
            hist = f["history"] if "history" in f else {}
            history = [np.asarray(hist[k]) for k in sorted(hist.keys(), key=int)]
        except KeyError as exc:
            raise ConfigError(f"{where}: not a .solverstate.h5 ({exc})") from None
    if isinstance(learned, bytes):
        learned = learned.decode()
    return it, str(learned), step, history


def _strip_ones(shape):
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape
