"""The layer contract (Caffe's), shared by every layer in ``poseidon_cli.layers``.

Life cycle, driven by ``Net``:

1. ``__init__(param, phase)`` stores the ``LayerParameter`` only (``phase`` is 0=TRAIN, 1=TEST).
2. ``setup(bottom, top)``: checks arity (declared with the class attributes below), calls
   ``layer_setup`` (read params, create weight blobs in ``self.blobs`` using ``self.xp``), then
   ``reshape``, then sets up loss weights.
3. ``reshape(bottom, top)``: shape the tops from the bottoms. Called again whenever input shapes may
   have changed.
4. ``forward(bottom, top)``: compute top data from bottom data.
5. ``backward(top, propagate_down, bottom)``: *overwrite* ``bottom[i].diff`` for every i with
   ``propagate_down[i]`` true, and *accumulate* (+=) into ``self.blobs[j].diff`` for every j with
   ``self.param_propagate_down[j]`` true. Weight diffs are zeroed once per iteration by the solver.

``bottom`` and ``top`` are lists of ``Blob``. Arrays live on ``self.xp`` (numpy or cupy); write ops
with ``xp = backend.get_array_module(array)``.

Loss: a top with non-zero loss weight contributes ``loss_weight * sum(top.data)`` to the net's loss.
Loss layers (``is_loss = True``) default to weight 1 on top[0]; other layers default to 0. As in
Caffe, ``setup`` fills such a top's diff with its loss weight, so a loss layer's backward reads its
scale from ``top[0].diff`` (flat index 0).

Errors: wrong arity or bad shapes raise ``NetError`` naming the layer, its type and the shapes.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..context import TEST, TRAIN, RunContext  # noqa: F401 - re-exported for layers
from ..errors import NetError
from ..net_checks import layer_hint


def free_output(dst, *inputs):
    """``dst`` when an op may write its result straight into it (none of ``inputs`` overlaps its
    memory), else None: the op then returns a fresh array, which the layer copies over."""
    xp = backend.get_array_module(dst)
    if any(xp.may_share_memory(dst, a) for a in inputs):
        return None
    return dst


class Layer:
    #: prototxt ``type`` string; set by ``@register``
    type: str = ""
    # Arity declarations (None = not constrained).
    exact_num_bottom: int | None = None
    min_bottom: int | None = None
    max_bottom: int | None = None
    exact_num_top: int | None = None
    min_top: int | None = None
    max_top: int | None = None
    #: top count must equal bottom count (e.g. Split has its own rule; neurons are 1:1)
    equal_num_bottom_top: bool = False
    #: loss layers get loss_weight 1 on top[0] by default
    is_loss: bool = False

    def __init__(self, param, phase: int = TRAIN):
        self.param = param
        self.phase = phase
        self.blobs = []                 # learnable (or state) Blobs, Caffe's layer->blobs()
        self.param_propagate_down = []  # per blob: compute its diff in backward?
        self.loss_weights = []          # per top
        self.xp = backend.default_xp()
        # dtype of blobs the layer creates (weights); tests use float64 for gradient checks.
        self.dtype = np.float32
        # Seeded by the Net from the solver's random_seed; used by Dropout, fillers, crops...
        self.rng = np.random.default_rng()
        # Set by the Net before setup; data layers read their partition from it.
        self.context = RunContext()
        # Set by the Net just before a forward, for a layer that runs in place and would
        # otherwise copy its input for backward (``uses_bottom_snapshot``): an array equal to
        # bottom[0].data as this forward starts, lent by the layer that produced it (see
        # ``retained_top_data``). None means "copy it yourself". Consumed by that forward.
        self.bottom_snapshot = None

    # -- identity ------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.param.name

    def describe(self) -> str:
        return f"layer '{self.name}' (type {self.type or self.param.type})"

    def error(self, what: str) -> NetError:
        """A NetError whose message starts with this layer's name and type."""
        return NetError(f"{self.describe()}: {what}", layer_hint(self.param))

    # -- contract ------------------------------------------------------------------------------------
    def setup(self, bottom, top):
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)

    def layer_setup(self, bottom, top):
        """Read layer parameters and create ``self.blobs``. Default: nothing."""

    def reshape(self, bottom, top):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        """Default: a layer with no gradient (data, accuracy...) leaves diffs alone."""

    #: forward reads ``bottom_snapshot`` (an in-place layer that keeps its input for backward)
    uses_bottom_snapshot: bool = False

    def retained_top_data(self, top_index: int):
        """An array this layer keeps for its own backward that equals ``top[top_index].data`` as
        the last forward left it and that nothing writes until this layer's next forward, or None.
        The Net lends it to an in-place layer that runs right after and would otherwise copy that
        top before overwriting it (BatchNorm's normalised output feeding Scale). Default: None."""
        return None

    def take_bottom_snapshot(self, bottom):
        """The lent copy of ``bottom[0].data`` for this forward, if any and if it fits; clears
        it, so a later forward not run by the Net makes its own copy."""
        snap, self.bottom_snapshot = self.bottom_snapshot, None
        if snap is None or snap.size != bottom[0].count or snap.dtype != bottom[0].data.dtype:
            return None
        return snap.reshape(bottom[0].shape)

    def allow_force_backward(self, bottom_index: int) -> bool:
        """False for bottoms that are never differentiable (labels of a loss layer)."""
        return True

    # -- helpers for Net -----------------------------------------------------------------------------
    def check_blob_counts(self, bottom, top):
        nb, nt = len(bottom), len(top)

        def bad(kind, n, rule):
            return self.error(f"takes {rule} {kind} blob(s), got {n}")

        if self.exact_num_bottom is not None and nb != self.exact_num_bottom:
            raise bad("bottom", nb, f"exactly {self.exact_num_bottom}")
        if self.min_bottom is not None and nb < self.min_bottom:
            raise bad("bottom", nb, f"at least {self.min_bottom}")
        if self.max_bottom is not None and nb > self.max_bottom:
            raise bad("bottom", nb, f"at most {self.max_bottom}")
        if self.exact_num_top is not None and nt != self.exact_num_top:
            raise bad("top", nt, f"exactly {self.exact_num_top}")
        if self.min_top is not None and nt < self.min_top:
            raise bad("top", nt, f"at least {self.min_top}")
        if self.max_top is not None and nt > self.max_top:
            raise bad("top", nt, f"at most {self.max_top}")
        if self.equal_num_bottom_top and nb != nt:
            raise self.error(f"needs as many tops as bottoms, got {nb} bottom(s) and {nt} top(s)")

    def set_loss_weights(self, top):
        weights = list(self.param.loss_weight)
        if weights and len(weights) != len(top):
            raise self.error(f"has {len(weights)} loss_weight value(s) but {len(top)} top(s)")
        if not weights:
            weights = [1.0 if (self.is_loss and i == 0) else 0.0 for i in range(len(top))]
        self.loss_weights = weights
        for blob, w in zip(top, weights):
            if w != 0:
                blob.diff[...] = w

    def forward_loss(self, bottom, top) -> float:
        """Run ``forward`` and return this layer's contribution to the net loss."""
        self.forward(bottom, top)
        loss = 0.0
        for blob, w in zip(top, self.loss_weights):
            if w != 0:
                loss += w * float(blob.data.sum())
        return loss

    def new_blob(self, shape):
        """A zero Blob on this layer's array module (for ``self.blobs``)."""
        from ..blob import Blob
        return Blob(shape, xp=self.xp, dtype=self.dtype)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"
