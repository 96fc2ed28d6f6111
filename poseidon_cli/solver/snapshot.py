"""Snapshots in BVLC Caffe's binary formats: ``<prefix>_iter_<N>.caffemodel`` (NetParameter with
every layer's blobs) and ``<prefix>_iter_<N>.solverstate`` (SolverState: iter = 1, learned_net = 2,
history = 3, current_step = 4).

History BlobProtos are written like Caffe's ``Blob::ToProto``: ``shape`` plus packed ``data``
(float32) or ``double_data`` (float64), in SolverState order (every param's first history array,
then, for AdaDelta/Adam, every param's second).

With ``snapshot_format: HDF5`` the files are ``.caffemodel.h5`` / ``.solverstate.h5`` in Caffe's
HDF5 layouts (``poseidon_cli.hdf5``; a ``.h5`` path is read that way too).

``LATEST`` (``--snapshot latest``): :func:`latest_state` finds the newest readable solverstate of
a snapshot prefix (:func:`resolve_prefix` gives the prefix Caffe derives from a solver), so a job
restarted by a restart policy resumes by itself.

Errors (``SolverError``, one line): HDF5 without h5py installed, a solverstate whose history does
not fit the net (count or shape), a learned_net whose name or blob shapes differ from the net
being trained, a missing learned_net file.
"""
from __future__ import annotations

import glob
import os
import re

import numpy as np

from .. import backend, config
from .._proto import caffe_pb2
from ..errors import SolverError


#: the ``--snapshot`` value that means "the newest snapshot of this solver's prefix, if any"
LATEST = "latest"


def snapshot_filename(prefix: str, it: int, ext: str) -> str:
    return f"{prefix}_iter_{int(it)}{ext}"


def resolve_prefix(prefix: str, solver_path: str | None) -> str:
    """The snapshot prefix Caffe uses: ``snapshot_prefix``, or when it is empty or a folder
    (ends with the path separator) the solver file's name without ``.prototxt`` in it."""
    if solver_path and (not prefix or prefix.endswith(os.sep)):
        stem = os.path.basename(solver_path)
        if stem.endswith(".prototxt"):
            stem = stem[: -len(".prototxt")]
        prefix = os.path.join(prefix, stem) if prefix else os.path.splitext(solver_path)[0]
    return prefix


def latest_state(prefix: str) -> str | None:
    """The newest ``<prefix>_iter_<N>.solverstate`` (or ``.solverstate.h5``, or Poseidon's
    per-worker ``<...>.solverstate.<client>.<worker>``, returned without that suffix: ``restore``
    finds it) whose file parses and whose learned_net exists; None when there is none. A state
    cut short by a crash while it was written is skipped in favour of the one before it."""
    if not prefix:
        return None
    pattern = re.compile(re.escape(os.path.basename(prefix)) +
                         r"_iter_(\d+)(\.solverstate(?:\.h5)?)(?:\.\d+\.\d+)?$")
    found = {}
    for path in glob.glob(glob.escape(prefix) + "_iter_*.solverstate*"):
        m = pattern.match(os.path.basename(path))
        if m:
            base = os.path.join(os.path.dirname(path), m.group(0)[: m.end(2)])
            found.setdefault(int(m.group(1)), (base, path))
    for it in sorted(found, reverse=True):
        base, path = found[it]
        try:
            state = read_solverstate(path)
        except Exception:  # noqa: BLE001 - unreadable (cut short): fall back to an older one
            continue
        if state.iter != it:
            continue
        if state.learned_net:
            try:
                locate_learned_net(path, state.learned_net)
            except SolverError:
                continue
        return base
    return None


def resolve_snapshot(snapshot: str | None, solver_path: str) -> str | None:
    """``--snapshot`` as given -> the solverstate to resume from, or None (start fresh):
    :data:`LATEST` becomes :func:`latest_state` of the solver's prefix; any other value is kept."""
    return latest_for_solver(solver_path) if snapshot == LATEST else snapshot


def latest_for_solver(solver_path: str) -> str | None:
    """:func:`latest_state` of the prefix the solver file at ``solver_path`` snapshots to."""
    param = config.load_solver_param(solver_path)
    return latest_state(resolve_prefix(param.snapshot_prefix, solver_path))


def check_format(fmt=None, where: str = "solver"):
    """``snapshot_format: HDF5`` needs h5py (the ``[hdf5]`` extra): say so before training."""
    if fmt == caffe_pb2.SolverParameter.HDF5:
        _h5(where)


def _h5(where):
    from .. import hdf5
    from ..errors import ConfigError
    try:
        hdf5.require_h5py()
    except ConfigError as exc:
        raise SolverError(f"{where}: {exc}") from None
    return hdf5


def model_ext(fmt) -> str:
    return ".caffemodel.h5" if fmt == caffe_pb2.SolverParameter.HDF5 else ".caffemodel"


def state_ext(fmt) -> str:
    return ".solverstate.h5" if fmt == caffe_pb2.SolverParameter.HDF5 else ".solverstate"


def save_model(net, path: str, write_diff: bool = False):
    """``net``'s weights to ``path``: Caffe's HDF5 layout for ``.h5``, else a binary .caffemodel."""
    if path.endswith(".h5"):
        _h5(path).save_net(net, path, write_diff=write_diff)
    else:
        net.save(path, write_diff=write_diff)


def load_learned_net(path: str):
    """A .caffemodel or .caffemodel.h5 as a NetParameter with blobs (HDF5: one layer per group,
    blobs in dataset order, no net name)."""
    if not path.endswith(".h5"):
        return config.load_caffemodel(path)
    h5py = _h5(path).require_h5py()
    out = caffe_pb2.NetParameter()
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise SolverError(f"{path}: no 'data' group; not a .caffemodel.h5")
        for name, group in f["data"].items():
            lp = out.layer.add()
            lp.name = name
            for key in sorted(group.keys(), key=int):
                lp.blobs.append(array_to_blobproto(np.asarray(group[key])))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def array_to_blobproto(array) -> caffe_pb2.BlobProto:
    """A BlobProto with ``shape`` and packed data (float64 arrays -> ``double_data``)."""
    host = backend.to_host(array)
    dims = b"".join(_varint(int(d)) for d in host.shape)
    buf = _len_field(7, _len_field(1, dims)) if dims else b""   # 0-d: no shape message (Caffe)
    if host.dtype == np.float64:
        field, dt = 8, "<f8"
    else:
        field, dt = 5, "<f4"
    payload = np.ascontiguousarray(host, dtype=dt).tobytes()
    if payload:
        buf += _len_field(field, payload)
    bp = caffe_pb2.BlobProto()
    bp.MergeFromString(buf)
    return bp


def blobproto_to_array(bp) -> np.ndarray:
    if len(bp.double_data):
        return np.asarray(bp.double_data, dtype=np.float64)
    return np.asarray(bp.data, dtype=np.float32)


def restore_weights(net, path: str):
    """Load a snapshot's learned_net into ``net`` after checking it fits (``check_model_matches``:
    for HDF5, the blobs it stores, as shared params are stored once)."""
    model = load_learned_net(path)
    check_model_matches(net, model, path, stored_once=path.endswith(".h5"))
    if path.endswith(".h5"):
        from ..errors import ConfigError
        try:
            _h5(path).load_net(net, path)
        except ConfigError as exc:
            raise SolverError(str(exc)) from None
    else:
        net.copy_from(model)


def write_solverstate(path: str, it: int, learned_net: str, history_flat, current_step: int = 0):
    """A SolverState file; Caffe's HDF5 layout when ``path`` ends with ``.h5``."""
    if path.endswith(".h5"):
        _h5(path).write_solverstate(path, it, learned_net, history_flat, current_step)
        return
    state = caffe_pb2.SolverState()
    state.iter = int(it)
    state.learned_net = learned_net
    state.current_step = int(current_step)
    for arr in history_flat:
        state.history.append(array_to_blobproto(arr))
    config.write_binary(state, path)


def read_solverstate(path: str):
    """A SolverState message from a .solverstate or a .solverstate.h5 file."""
    if not os.path.isfile(path):
        raise SolverError(f"{path}: no such solverstate file",
                          "pass --snapshot <prefix>_iter_<N>.solverstate as written by a snapshot")
    if path.endswith(".h5"):
        it, learned, step, history = _h5(path).read_solverstate(path)
        state = caffe_pb2.SolverState(iter=it, learned_net=learned, current_step=step)
        for arr in history:
            state.history.append(array_to_blobproto(arr))
        return state
    return config.load_solverstate(path)


def locate_learned_net(state_path: str, learned_net: str) -> str:
    """The learned_net path as stored, or, when the snapshot was moved, the same file name next to
    the solverstate."""
    if not learned_net:
        return ""
    if os.path.isfile(learned_net):
        return learned_net
    beside = os.path.join(os.path.dirname(os.path.abspath(state_path)), os.path.basename(learned_net))
    if os.path.isfile(beside):
        return beside
    raise SolverError(f"{state_path}: learned_net {learned_net} does not exist",
                      "keep the .caffemodel next to its .solverstate")


def check_model_matches(net, model, where: str, stored_once: bool = False):
    """Raise unless ``model`` (a NetParameter with blobs) fits ``net``: same name (when both have
    one) and, for every layer of ``net`` with params, a layer of that name with the same blob shapes.
    ``stored_once`` (HDF5 files, which store a shared param under its owner only): only the layer
    names are checked here; loading checks each stored blob's shape."""
    if model.name and net.name and model.name != net.name:
        raise SolverError(f"{where}: snapshot is of net '{model.name}' but the solver trains "
                          f"'{net.name}'", "resume with the solver that wrote the snapshot")
    by_name = {lp.name: lp for lp in model.layer}
    for name, layer in zip(net.layer_names, net.layers):
        if not layer.blobs:
            continue
        lp = by_name.get(name)
        if lp is None:
            raise SolverError(f"{where}: snapshot has no layer '{name}' of net '{net.name}'",
                              "resume with the solver that wrote the snapshot")
        if stored_once:
            continue    # blob indices and shapes are checked while loading (hdf5.load_net)
        if len(lp.blobs) != len(layer.blobs):
            raise SolverError(f"{where}: layer '{name}' has {len(lp.blobs)} blob(s) in the snapshot "
                              f"but {len(layer.blobs)} in the net")
        for j, (bp, blob) in enumerate(zip(lp.blobs, layer.blobs)):
            shape = config.blob_shape(bp)
            if _strip_ones(shape) != _strip_ones(blob.shape):
                raise SolverError(f"{where}: param {j} of layer '{name}' has shape {shape} in the "
                                  f"snapshot but {tuple(blob.shape)} in the net",
                                  "resume with the solver that wrote the snapshot")


def _strip_ones(shape):
    shape = tuple(int(d) for d in shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def history_from_state(state, params, num_history: int, where: str, xp):
    """SolverState.history -> flat list of arrays shaped like ``params`` (SolverState order)."""
    expected = len(params) * num_history
    if len(state.history) != expected:
        raise SolverError(f"{where}: solverstate holds {len(state.history)} history blob(s) but the "
                          f"net has {len(params)} learnable param(s) x {num_history} for this solver "
                          f"type = {expected}", "resume with the same net and solver type")
    out = []
    for k, bp in enumerate(state.history):
        p = params[k % len(params)]
        values = blobproto_to_array(bp)
        if values.size != p.count:
            raise SolverError(f"{where}: history blob {k} has {values.size} values but learnable "
                              f"param {k % len(params)} has shape {tuple(p.shape)}",
                              "resume with the net and solver type that wrote this snapshot")
        out.append(xp.asarray(values.reshape(p.shape).astype(p.dtype)))
    return out
