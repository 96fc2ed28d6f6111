"""Net: a directed acyclic graph of layers built from a Caffe NetParameter (BVLC ``Net`` semantics).

Construction (``Net(net, phase=TRAIN, weights=None, *, stages=(), level=0, context=RunContext(),
seed=None, xp=None, base_dir=None, dtype=np.float32)``):

1. ``net`` is a prototxt path (read and upgraded with ``config.load_net_param``) or a NetParameter
   (copied, upgraded, data paths resolved against ``base_dir`` when given). pycaffe's legacy form
   ``Net(net, weights, phase)`` means the same as ``Net(net, phase, weights)``.
2. NetState = the net's ``state`` with ``phase`` replaced, ``level`` replaced when non-zero and
   ``stages`` added. Layers are kept or dropped by their include/exclude NetStateRules (Caffe's
   ``StateMeetsRule``), BEFORE split insertion.
3. Split layers are inserted where one blob feeds several bottoms (an explicit non-zero
   ``loss_weight`` on a top counts as one more consumer; the weight moves to split top 0). Names:
   layer ``<blob>_<producer>_<topidx>_split``, tops ``<blob>_<producer>_<topidx>_split_<k>``.
4. Each layer is created, given ``xp``, ``dtype``, ``context`` and ``rng`` (``default_rng(seed +
   index)`` when ``seed`` is given), and ``setup``. A top whose name is one of the layer's bottoms
   is in place (the same Blob). Parameter blobs named by ``param { name }`` are shared (owner = the
   first layer using the name; STRICT needs equal shapes, PERMISSIVE equal counts); sharers alias
   the owner's data and diff arrays, so their backward accumulates into the owner's gradient.
5. Backward need follows Caffe: lr_mult != 0 params or a bottom needing backward, pruned to layers
   that reach a loss, ``propagate_down`` per bottom, ``force_backward`` (honouring
   ``allow_force_backward``).

Errors (``NetError``, one line): unknown layer type, a bottom no earlier layer produces, a top
produced twice (not in place), include and exclude on one layer, layer arity / shape errors, shared
parameter shape mismatch, ``copy_from`` blob count/shape mismatch.

Layers must read their weights through ``self.blobs[i].data`` at every call (never cache the array
at setup): sharing, ``copy_from`` and ``share_trained_layers_with`` may replace the arrays.

Memory shared within a step (no result changes): a Split top's data aliases the Split's bottom, as
in Caffe, unless a later in-place layer (or a Python layer) writes that memory, directly or through
a view; such a top stays a copy. Every top keeps a diff of its own. An in-place layer that keeps
its input for backward (Scale, a neuron with ``backward_needs_bottom``) borrows the copy the layer
right before it keeps anyway (``Layer.retained_top_data``: BatchNorm's normalised output), but
only when ``forward_from_to`` ran that layer just before it; otherwise it copies.

Hooks for communication (the Net never imports ps/distributed):
- ``add_before_forward(fn)``: ``fn(layer_index)`` before each layer's forward;
- ``add_after_backward(fn)``: ``fn(layer_index)`` after each layer's backward step -- called for
  EVERY layer index from last to first, also for layers that need no backward (as Caffe does);
- ``learnable``: one :class:`LearnableParam` per learnable parameter k (shared weights once):
  its ``blob``, ``name`` (``<owner layer>/<index>``), ``lr_mult``, ``decay_mult``, ``readers``
  (layer indices that read it in forward) and ``ready_after`` (the layer after whose backward
  step its gradient is final: the lowest-index layer using it);
- Caffe's parallel lists are read-only views of those records, kept for pycaffe users:
  ``learnable_params``, ``learnable_param_names``, ``params_lr``, ``params_weight_decay``;
  ``param_ready_after[i]`` (the k with ``ready_after == i``; every k appears in exactly one list)
  and ``layer_learnable_params[i]`` (the k that layer i reads in forward).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field as _field

import numpy as np

from . import backend, config
from ._proto import caffe_pb2
from .blob import Blob
from .errors import NetError
from .layers import create_layer
from .layers.split import SplitLayer
from .context import TEST, TRAIN, RunContext
from .net_pycaffe import PycaffeNetMembers, global_seed, legacy_net_args

__all__ = ["Net", "LearnableParam", "filter_net", "insert_splits", "state_meets_rule", "TRAIN", "TEST"]


@dataclass(eq=False)
class LearnableParam:
    """One learnable parameter of a Net (see the module docstring). ``has_lr`` / ``has_decay``:
    whether a ``param {}`` spec set the multiplier explicitly (sharers must then agree)."""
    blob: Blob
    name: str
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    readers: list = _field(default_factory=list)
    ready_after: int = -1
    has_lr: bool = False
    has_decay: bool = False


class _View(list):
    """A read-only list: Caffe's per-parameter lists are derived from ``Net.learnable`` and
    writing to them would change nothing."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("this list is a read-only view of Net.learnable; change the records")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


# ------------------------------------------------------------------------------------------------
# Filtering by NetState
# ------------------------------------------------------------------------------------------------

def state_meets_rule(state, rule) -> bool:
    """Caffe's StateMeetsRule: phase, level range, required stages, forbidden stages."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param, state):
    """A copy of NetParameter ``param`` with only the layers ``state`` includes."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if layer.include and layer.exclude:
            raise NetError(f"layer '{layer.name}': has both include and exclude rules; "
                           f"give one kind only")
        if layer.include:
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out


# ------------------------------------------------------------------------------------------------
# Split insertion
# ------------------------------------------------------------------------------------------------

def split_layer_name(blob, producer, top_idx):
    return f"{blob}_{producer}_{top_idx}_split"


def split_blob_name(blob, producer, top_idx, k):
    return f"{blob}_{producer}_{top_idx}_split_{k}"


def insert_splits(param):
    """A copy of ``param`` with Split layers after every top consumed more than once."""
    last_top = {}            # blob name -> (layer idx, top idx) of its newest producer
    source_of = {}           # (layer idx, bottom idx) -> (layer idx, top idx)
    consumers = {}           # (layer idx, top idx) -> count
    loss_w = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise NetError(f"layer '{layer.name}' (type {layer.type}) needs bottom '{name}' "
                               f"which no earlier layer produces")
            src = last_top[name]
            source_of[(i, j)] = src
            consumers[src] = consumers.get(src, 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j, w in enumerate(layer.loss_weight):
            if w != 0 and j < len(layer.top):
                consumers[(i, j)] = consumers.get((i, j), 0) + 1
                loss_w[(i, j)] = w

    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {}
    for i, layer in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source_of[(i, j)]
            if consumers.get(src, 0) > 1:
                # split top 0 of a loss-weighted blob carries the loss; consumers start at 1
                k = next_split.get(src, 1 if src in loss_w else 0)
                next_split[src] = k + 1
                new.bottom[j] = split_blob_name(name, param.layer[src[0]].name, src[1], k)
        for j, name in enumerate(layer.top):
            n = consumers.get((i, j), 0)
            if n <= 1:
                continue
            w = loss_w.get((i, j), 0.0)
            split = out.layer.add()
            split.name = split_layer_name(name, layer.name, j)
            split.type = "Split"
            split.bottom.append(name)
            for k in range(n):
                split.top.append(split_blob_name(name, layer.name, j, k))
            if w:
                split.loss_weight.extend([w] + [0.0] * (n - 1))
                # the producer no longer reports this top as loss; its other tops keep theirs
                lw = list(new.loss_weight)
                lw[j] = 0.0
                del new.loss_weight[:]
                new.loss_weight.extend(lw)
    return out


# ------------------------------------------------------------------------------------------------
# BlobProto encoding (packed floats straight from the array: fast for big models)
# ------------------------------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packed_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def blob_to_proto(blob, out=None, write_diff=False):
    """Write ``blob`` into BlobProto ``out`` (BVLC layout: ``shape`` + packed data[/diff]; float64
    blobs use double_data/double_diff like Caffe's Blob<double>)."""
    out = out if out is not None else caffe_pb2.BlobProto()
    out.Clear()
    dims = b"".join(_varint(int(d)) for d in blob.shape)
    # A 0-d blob (channel-shared PReLU slope) has no shape message at all, as Caffe writes it.
    buf = _packed_field(7, _packed_field(1, dims)) if dims else b""
    if blob.dtype == np.float64:
        fd, ff, dt = 8, 9, "<f8"
    else:
        fd, ff, dt = 5, 6, "<f4"
    data = np.ascontiguousarray(backend.to_host(blob.data), dtype=dt).tobytes()
    if data:
        buf += _packed_field(fd, data)
    if write_diff:
        diff = np.ascontiguousarray(backend.to_host(blob.diff), dtype=dt).tobytes()
        if diff:
            buf += _packed_field(ff, diff)
    out.MergeFromString(buf)
    return out


def blob_proto_values(bp):
    """The values of a BlobProto as a float64 host array (``data`` or ``double_data``)."""
    if len(bp.double_data):
        return np.asarray(bp.double_data, dtype=np.float64)
    return np.asarray(bp.data, dtype=np.float32)


def _strip_ones(shape):
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


# ------------------------------------------------------------------------------------------------
# Net
# ------------------------------------------------------------------------------------------------

class Net(PycaffeNetMembers):
    """See the module docstring for the contract (pycaffe-only members: ``net_pycaffe``)."""

    def __init__(self, net, phase=TRAIN, weights=None, *, stages=(), level=0,
                 context=RunContext(), seed=None, xp=None, base_dir=None, dtype=np.float32):
        phase, weights = legacy_net_args(phase, weights)
        stages = stages or ()
        if isinstance(phase, str):
            phase = {"TRAIN": TRAIN, "TEST": TEST}[phase.upper()]
        self.phase = int(phase)
        self.xp = xp or backend.default_xp()
        self.dtype = dtype
        self.context = context
        self.seed = seed if seed is not None else global_seed()   # pycaffe set_random_seed
        if isinstance(net, (str, os.PathLike)):
            self.source = os.fspath(net)
            param = config.load_net_param(net)
        else:
            self.source = None
            param = caffe_pb2.NetParameter()
            param.CopyFrom(net)
            config.upgrade_net(param)
            if base_dir is not None:
                config.resolve_net_paths(param, base_dir)
        state = caffe_pb2.NetState()
        state.CopyFrom(param.state)
        state.phase = self.phase
        if level:
            state.level = level
        for s in stages:
            if s not in state.stage:
                state.stage.append(s)
        self.state = state
        self.filtered_param = filter_net(param, state)
        self.param = insert_splits(self.filtered_param)
        self.name = param.name
        self.force_backward = param.force_backward
        self._before_forward = []
        self._after_backward = []
        self.params_without_diff = frozenset()
        self._build()
        self._follow_python_reshapes()
        if weights:
            self.copy_from(weights)

    # -- construction ------------------------------------------------------------------------------
    def _build(self):
        self.layers = []
        self.layer_names = []
        self.blobs = OrderedDict()
        self.bottom_vecs, self.top_vecs = [], []
        self._bottom_name_lists, self._top_name_lists = [], []
        self.inputs = []
        self.params = OrderedDict()
        self.learnable = []
        self._param_owner_index = {}     # shared name -> learnable index
        layer_reads = []                 # per layer: the learnable indices it reads
        blob_need_backward = {}
        self.bottom_need_backward = []
        self.layer_need_backward = []
        consumed = set()

        for li, lp in enumerate(self.param.layer):
            layer = create_layer(lp, self.phase)
            layer.xp = self.xp
            layer.dtype = self.dtype
            layer.context = self.context
            if self.seed is not None:
                layer.rng = np.random.default_rng(self.seed + li)
            if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
                raise layer.error(f"has {len(lp.propagate_down)} propagate_down value(s) but "
                                  f"{len(lp.bottom)} bottom(s)")
            bottoms, bnb = [], []
            need_backward = False
            for j, name in enumerate(lp.bottom):
                blob = self.blobs[name]
                bottoms.append(blob)
                consumed.add(name)
                nb = blob_need_backward[name]
                need_backward |= nb
                if lp.propagate_down:
                    nb = bool(lp.propagate_down[j])
                bnb.append(nb)
            tops = []
            for j, name in enumerate(lp.top):
                if name in lp.bottom:
                    tops.append(self.blobs[name])
                    continue
                if name in self.blobs:
                    raise layer.error(f"top '{name}' is already produced by an earlier layer "
                                      f"(only in-place use, top == bottom, may repeat a name)")
                blob = Blob((), xp=self.xp, dtype=self.dtype)
                self.blobs[name] = blob
                tops.append(blob)
            if lp.type == "Input":
                self.inputs.extend(lp.top)
            try:
                layer.setup(bottoms, tops)
            except NetError:
                raise
            except (ValueError, IndexError) as exc:
                shapes = ", ".join(str(b.shape) for b in bottoms)
                raise layer.error(f"setup failed for bottom shape(s) [{shapes}]: {exc}") from None

            # parameters
            lp_layer = layer.param   # layer_setup may add specs (BatchNorm's lr_mult 0)
            if len(lp_layer.param) > len(layer.blobs):
                raise layer.error(f"has {len(lp_layer.param)} param {{}} specs but only "
                                  f"{len(layer.blobs)} parameter blob(s)")
            layer.param_propagate_down = list(layer.param_propagate_down) + \
                [True] * (len(layer.blobs) - len(layer.param_propagate_down))
            lindices = []
            for pi, blob in enumerate(layer.blobs):
                spec = lp_layer.param[pi] if pi < len(lp_layer.param) else None
                lr = spec.lr_mult if spec is not None else 1.0
                pnb = lr != 0
                layer.param_propagate_down[pi] = pnb
                need_backward |= pnb
                lindices.append(self._append_param(layer, li, pi, blob, spec))
            layer_reads.append(sorted(set(lindices)))
            for k in layer_reads[-1]:
                self.learnable[k].readers.append(li)
            if layer.blobs:
                self.params[lp.name] = layer.blobs
            for name in lp.top:
                blob_need_backward[name] = need_backward
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self._bottom_name_lists.append(list(lp.bottom))
            self._top_name_lists.append(list(lp.top))
            self.layer_need_backward.append(need_backward)
            self.bottom_need_backward.append(bnb)

        # Prune to layers whose output reaches a loss (walk backward, Caffe's rule).
        under_loss, skip_bp = set(), set()
        for li in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[li]
            contributes = False
            skip = True
            for j, name in enumerate(self._top_name_lists[li]):
                if layer.loss_weights[j] != 0 or name in under_loss:
                    contributes = True
                if name not in skip_bp:
                    skip = False
            if self.layer_need_backward[li] and skip:
                self.layer_need_backward[li] = False
                self.bottom_need_backward[li] = [False] * len(self._bottom_name_lists[li])
            if not contributes:
                self.layer_need_backward[li] = False
            for j, name in enumerate(self._bottom_name_lists[li]):
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[li][j] = False
                if not self.bottom_need_backward[li][j]:
                    skip_bp.add(name)
        if self.force_backward:
            for li, layer in enumerate(self.layers):
                self.layer_need_backward[li] = True
                for j in range(len(self._bottom_name_lists[li])):
                    self.bottom_need_backward[li][j] = (self.bottom_need_backward[li][j]
                                                        or layer.allow_force_backward(j))
                layer.param_propagate_down = [True] * len(layer.blobs)

        # Outputs: produced, never consumed, sorted by name (Caffe iterates a std::set).
        produced = [n for names in self._top_name_lists for n in names]
        self.outputs = sorted(set(n for n in produced if n not in consumed))
        self.output_blob_names = self.outputs
        self.output_loss_weights = []
        for name in self.outputs:
            w = 0.0
            for li in range(len(self.layers) - 1, -1, -1):
                if name in self._top_name_lists[li]:
                    w = self.layers[li].loss_weights[self._top_name_lists[li].index(name)]
                    break
            self.output_loss_weights.append(w)

        # Readiness of gradients: final after the lowest-index layer that uses the param.
        ready = [[] for _ in self.layers]
        for k, rec in enumerate(self.learnable):
            rec.ready_after = min(rec.readers)
            ready[rec.ready_after].append(k)
        self._layer_reads = tuple(_View(r) for r in layer_reads)
        self._ready_after = tuple(_View(r) for r in ready)
        self._loss_tops = [(blob, w) for li, layer in enumerate(self.layers)
                           for blob, w in zip(self.top_vecs[li], layer.loss_weights) if w != 0]
        self._alias_split_tops()
        # In-place layers that would copy their input for backward, and the top index of the
        # layer right before them that produced that input: it may lend its own kept copy.
        self._lenders = {}
        for li in range(1, len(self.layers)):
            layer, bottoms, tops = self.layers[li], self.bottom_vecs[li], self.top_vecs[li]
            if not (layer.uses_bottom_snapshot and bottoms and tops and tops[0] is bottoms[0]):
                continue
            for j, t in enumerate(self.top_vecs[li - 1]):
                if t is bottoms[0]:
                    self._lenders[li] = j

    def _alias_split_tops(self):
        """Let each Split top alias its bottom's data (Caffe's ShareData) unless a later layer
        writes that memory: an in-place layer (a top that is one of its bottoms), or a Python
        layer, which may write its bottoms. Views (Reshape, Flatten...) already share memory
        with what they view at this point, so a write through a view counts too. A top that is
        written stays a copy; if the bottom itself is written later, every top does."""
        writes = []   # (layer index, array whose memory that layer may write)
        for lj, (bottoms, tops) in enumerate(zip(self.bottom_vecs, self.top_vecs)):
            python = self.layers[lj].type == "Python"
            for b in bottoms:
                if python or any(t is b for t in tops):
                    writes.append((lj, b.data))
        may_share = self.xp.may_share_memory
        for li, layer in enumerate(self.layers):
            if not isinstance(layer, SplitLayer):
                continue
            later = [a for lj, a in writes if lj > li]

            def written(arr):
                return any(may_share(arr, a) for a in later)
            bottom, tops = self.bottom_vecs[li][0], self.top_vecs[li]
            shared_ok = not written(bottom.data)
            layer.alias_tops = tuple(shared_ok and not written(t.data) for t in tops)
            layer.reshape(self.bottom_vecs[li], tops)

    def _append_param(self, layer, li, pi, blob, spec):
        pname = spec.name if spec is not None else ""
        display = f"{layer.name}/{pi}"
        if not pname or pname not in self._param_owner_index:
            idx = len(self.learnable)
            self.learnable.append(LearnableParam(
                blob, display, spec.lr_mult if spec is not None else 1.0,
                spec.decay_mult if spec is not None else 1.0,
                has_lr=spec is not None and spec.HasField("lr_mult"),
                has_decay=spec is not None and spec.HasField("decay_mult")))
            if pname:
                self._param_owner_index[pname] = idx
            return idx
        idx = self._param_owner_index[pname]
        rec = self.learnable[idx]
        owner = rec.blob
        if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
            if owner.count != blob.count:
                raise layer.error(f"cannot share param '{pname}' (param {pi}): count "
                                  f"{blob.count} {blob.shape} != owner's {owner.count} "
                                  f"{owner.shape} (PERMISSIVE needs equal counts)")
        elif owner.shape != blob.shape:
            raise layer.error(f"cannot share param '{pname}' (param {pi}): shape {blob.shape} "
                              f"!= owner's {owner.shape} (STRICT share_mode; use PERMISSIVE to "
                              f"share by count)")
        blob.share_data(owner)
        blob.share_diff(owner)
        if spec.HasField("lr_mult"):
            if rec.has_lr and rec.lr_mult != spec.lr_mult:
                raise layer.error(f"shared param '{pname}' has lr_mult {spec.lr_mult} but its "
                                  f"owner has {rec.lr_mult}")
            rec.lr_mult = spec.lr_mult
            rec.has_lr = True
        if spec.HasField("decay_mult"):
            if rec.has_decay and rec.decay_mult != spec.decay_mult:
                raise layer.error(f"shared param '{pname}' has decay_mult {spec.decay_mult} but "
                                  f"its owner has {rec.decay_mult}")
            rec.decay_mult = spec.decay_mult
            rec.has_decay = True
        return idx

    # -- Caffe's per-parameter lists (read-only views of ``learnable``) ---------------------------
    @property
    def learnable_params(self):
        return _View(r.blob for r in self.learnable)

    @property
    def learnable_param_names(self):
        return _View(r.name for r in self.learnable)

    @property
    def params_lr(self):
        return _View(r.lr_mult for r in self.learnable)

    @property
    def params_weight_decay(self):
        return _View(r.decay_mult for r in self.learnable)

    @property
    def layer_learnable_params(self):
        return self._layer_reads

    @property
    def param_ready_after(self):
        return self._ready_after

    # -- hooks -------------------------------------------------------------------------------------
    def add_before_forward(self, fn):
        self._before_forward.append(fn)

    def add_after_backward(self, fn):
        self._after_backward.append(fn)

    # -- running -----------------------------------------------------------------------------------
    def reshape(self):
        """Re-run every layer's reshape (after an input blob changed shape)."""
        for li, layer in enumerate(self.layers):
            layer.reshape(self.bottom_vecs[li], self.top_vecs[li])
        for blob, w in self._loss_tops:
            blob.diff[...] = w
        self._shaped_for = self._input_shapes()

    def _input_shapes(self):
        return tuple(self.blobs[n].shape for n in self.inputs)

    def forward_from_to(self, start=0, end=None) -> float:
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        hooks = self._before_forward
        lenders = self._lenders
        for li in range(start, end + 1):
            for fn in hooks:
                fn(li)
            layer = self.layers[li]
            if li in lenders:
                # only when the lender's forward ran right before, in this loop: then its kept
                # array still equals the input this layer is about to overwrite
                layer.bottom_snapshot = (self.layers[li - 1].retained_top_data(lenders[li])
                                         if li > start else None)
            loss += layer.forward_loss(self.bottom_vecs[li], self.top_vecs[li])
        return loss

    def forward_prefilled(self) -> float:
        """Run every layer (data layers fetch their own batch); return the weighted loss."""
        return self.forward_from_to(0, len(self.layers) - 1)

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        hooks = self._after_backward
        for li in range(start, end - 1, -1):
            if self.layer_need_backward[li]:
                self.layers[li].backward(self.top_vecs[li], self.bottom_need_backward[li],
                                         self.bottom_vecs[li])
            for fn in hooks:
                fn(li)

    def backward_all(self, diffs=None, **top_diffs):
        """Backward through every layer. With pycaffe's arguments (output name -> diffs of N
        items): batch by batch, returning {input: diff of all N} (``net_pycaffe``)."""
        if diffs is None and not top_diffs:
            self.backward_from_to(len(self.layers) - 1, 0)
            return None
        return self._backward_all_batches(diffs, top_diffs)

    def forward_backward(self) -> float:
        loss = self.forward_prefilled()
        self.backward_all()
        return loss

    def clear_param_diffs(self):
        """Zero the learnable params' diffs, except those in ``params_without_diff`` (indices of
        params whose gradient is formed outside the net, e.g. by sufficient-factor broadcasting:
        their diff is never written, so zeroing it is memory traffic for nothing)."""
        skip = self.params_without_diff
        for k, rec in enumerate(self.learnable):
            if k not in skip:
                rec.blob.diff[...] = 0

    def _layer_index(self, name, default):
        if name is None:
            return default
        try:
            return self.layer_names.index(name)
        except ValueError:
            raise NetError(f"net '{self.name}': no layer named '{name}'") from None

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe ``forward``: copy ``inputs`` (name -> array) into the input blobs (reshaping the
        net if a shape changed), run layers ``start``..``end`` (names), return {output: array} for
        the outputs plus any names in ``blobs``."""
        reshape = False
        for name, value in inputs.items():
            if name not in self.blobs:
                raise NetError(f"net '{self.name}': no blob named '{name}' to feed")
            blob = self.blobs[name]
            arr = backend.asarray(value, self.xp)
            if tuple(arr.shape) != blob.shape:
                blob.reshape(arr.shape)
                reshape = True
            blob.data[...] = arr
        # pycaffe lets a user reshape an input blob directly (net.blobs['data'].reshape(...)):
        # Caffe reshapes every layer on each forward, we do it whenever an input shape moved.
        if reshape or self._input_shapes() != getattr(self, "_shaped_for", None):
            self.reshape()
        s = self._layer_index(start, 0)
        e = self._layer_index(end, len(self.layers) - 1)
        self.forward_from_to(s, e)
        names = list(self.outputs) if end is None else list(self._top_name_lists[e])
        names += [b for b in (blobs or []) if b not in names]
        return {n: self.blobs[n].data for n in names}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe ``backward``: set the given blobs' diffs, run backward from ``start`` down to
        ``end`` (names), return {name: diff} for the net inputs (the bottoms of ``end`` when it
        is given) plus any names in ``diffs``."""
        for name, value in top_diffs.items():
            if name not in self.blobs:
                raise NetError(f"net '{self.name}': no blob named '{name}'")
            self.blobs[name].diff[...] = backend.asarray(value, self.xp)
        s = self._layer_index(start, len(self.layers) - 1)
        e = self._layer_index(end, 0)
        self.backward_from_to(s, e)
        names = list(self.inputs) if end is None else list(self._bottom_name_lists[e])
        names += [d for d in (diffs or []) if d not in names]
        return {n: self.blobs[n].diff for n in names}

    # -- sharing / weights -------------------------------------------------------------------------
    def share_trained_layers_with(self, other: "Net"):
        """Alias the weight arrays of every layer of ``other`` with the same name (test nets)."""
        for li, name in enumerate(self.layer_names):
            if name not in other.layer_names:
                continue
            src = other.layers[other.layer_names.index(name)]
            mine = self.layers[li]
            if len(src.blobs) != len(mine.blobs):
                raise mine.error(f"cannot share weights with the train net: {len(src.blobs)} "
                                 f"blob(s) there, {len(mine.blobs)} here")
            for j, (a, b) in enumerate(zip(src.blobs, mine.blobs)):
                if a.shape != b.shape:
                    raise mine.error(f"cannot share param {j} with the train net: shape "
                                     f"{a.shape} there, {b.shape} here")
                b.share_data(a)

    def copy_from(self, source):
        """Copy weights by layer name from a .caffemodel path or a NetParameter with blobs.

        Source layers missing here are ignored; a matching layer must have as many blobs; a blob
        must have the target shape, ignoring leading 1s (so legacy 4-D (1,1,N,K) InnerProduct
        weights and (1,1,1,N) biases load). Raises NetError naming layer and both shapes."""
        if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".h5"):
            return self.load_hdf5(source)
        if isinstance(source, (str, os.PathLike)):
            where = os.fspath(source)
            src = config.load_caffemodel(source)
        else:
            where = "weights"
            src = caffe_pb2.NetParameter()
            src.CopyFrom(source)
            config.upgrade_net(src)
        index = {n: i for i, n in enumerate(self.layer_names)}
        for sl in src.layer:
            li = index.get(sl.name)
            if li is None:
                continue
            layer = self.layers[li]
            if len(sl.blobs) != len(layer.blobs):
                raise NetError(f"{where}: layer '{sl.name}' has {len(sl.blobs)} blob(s) but the "
                               f"net's layer has {len(layer.blobs)}; incompatible model")
            for j, (bp, blob) in enumerate(zip(sl.blobs, layer.blobs)):
                shape = config.blob_shape(bp)
                if _strip_ones(shape) != _strip_ones(blob.shape):
                    raise NetError(f"{where}: cannot copy param {j} of layer '{sl.name}': source "
                                   f"shape {shape} does not match target shape {blob.shape}")
                values = blob_proto_values(bp)
                if values.size != blob.count:
                    raise NetError(f"{where}: param {j} of layer '{sl.name}' holds {values.size} "
                                   f"values for shape {shape}")
                blob.data[...] = self.xp.asarray(values.reshape(blob.shape).astype(blob.dtype))

    def to_proto(self, write_diff=False):
        """The net (filtered, splits inserted) as a NetParameter with every layer's blobs."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for layer in self.layers:
            lp = out.layer.add()
            lp.CopyFrom(layer.param)
            if not lp.HasField("phase"):
                lp.phase = self.phase   # Caffe's Net::Init gives every layer the net's phase
            del lp.blobs[:]
            for blob in layer.blobs:
                blob_to_proto(blob, lp.blobs.add(), write_diff)
        return out

    def save(self, path, write_diff=False):
        """Write a BVLC .caffemodel (binary NetParameter) atomically."""
        config.write_binary(self.to_proto(write_diff), path)

    # -- misc --------------------------------------------------------------------------------------
    @property
    def loss_layer_indices(self):
        return [i for i, layer in enumerate(self.layers) if any(w != 0 for w in layer.loss_weights)]

    def set_external_gradient(self, k: int) -> None:
        """Learnable param ``k``'s gradient is formed outside the net (sufficient-factor
        broadcasting): no layer computes its diff (``param_propagate_down`` off for every blob
        that is it) and ``clear_param_diffs`` leaves it alone (``params_without_diff``)."""
        rec = self.learnable[k]
        for li in rec.readers:
            layer = self.layers[li]
            for pi, blob in enumerate(layer.blobs):
                if blob is rec.blob or blob.data is rec.blob.data:
                    layer.param_propagate_down[pi] = False
        self.params_without_diff = frozenset(self.params_without_diff) | {k}

    def __repr__(self):
        return f"<Net {self.name!r} phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"layers={len(self.layers)}>"

