"""Shared base for element-wise ("neuron") layers: one bottom, one top of the same shape.

Import explicitly (``from ._neuron import NeuronLayer``); modules starting with ``_`` are not
registered. Subclasses implement ``forward`` and ``backward`` on arrays; this base handles the
shape contract and the in-place case.

In-place use (``top`` is ``bottom``, as ReLU/Dropout in every reference net): the forward output
overwrites the input. A subclass whose backward can be written from the output alone (ReLU,
Sigmoid, TanH, Exp, ELU, Dropout) ignores this. A subclass that needs the input itself sets
``backward_needs_bottom = True``; forward then calls ``self.saved_bottom(bottom, top)`` before it
overwrites anything, which keeps a copy only when the layer really runs in place (or borrows the
one its producer keeps, when the Net lends it: ``Layer.bottom_snapshot``), and backward reads
``self.bottom_data(bottom)``.
"""
from __future__ import annotations

from .base import Layer


def data_pointer(a) -> int:
    """Device or host address of ``a``'s first element (to detect aliasing without copying)."""
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is None:
        iface = a.__array_interface__
    return iface["data"][0]


def is_in_place(bottom, top) -> bool:
    """True when top[0] writes into bottom[0]'s memory (same Blob, or Blobs sharing data)."""
    b, t = bottom[0], top[0]
    if b is t:
        return True
    return b.data.size > 0 and data_pointer(b.data) == data_pointer(t.data)


class NeuronLayer(Layer):
    """One bottom, one top, same shape; ``forward``/``backward`` element-wise."""
    exact_num_bottom = 1
    exact_num_top = 1
    #: backward reads the input x (not only the output y); forward keeps x when run in place
    backward_needs_bottom = False

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self._bottom_copy = None   # own buffer, reused across forwards
        self._saved = None         # x for backward: the own buffer or an array lent by the Net

    @property
    def uses_bottom_snapshot(self):
        return self.backward_needs_bottom

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def saved_bottom(self, bottom, top):
        """Call at the start of forward: copy x if the layer runs in place and needs it later."""
        snap = self.take_bottom_snapshot(bottom)
        if self.backward_needs_bottom and is_in_place(bottom, top):
            if snap is not None:   # the producer keeps x unchanged for us: no copy
                self._saved = snap
                return
            x = bottom[0].data
            if self._bottom_copy is None or self._bottom_copy.shape != x.shape \
                    or self._bottom_copy.dtype != x.dtype:
                self._bottom_copy = x.copy()
            else:
                self._bottom_copy[...] = x
            self._saved = self._bottom_copy
        else:
            self._saved = None

    def scratch(self, key, like):
        """A cached work array shaped and typed like ``like``: large temporaries are reused
        across iterations instead of being allocated (and page-faulted) every call."""
        bufs = self.__dict__.setdefault("_scratch", {})
        buf = bufs.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = bufs[key] = self.xp_of(like).empty_like(like)
        return buf

    @staticmethod
    def xp_of(a):
        from ..backend import get_array_module  # noqa: PLC0415
        return get_array_module(a)

    def bottom_data(self, bottom):
        """The forward input x: the saved copy when run in place, else ``bottom[0].data``."""
        if self._saved is not None:
            return self._saved
        return bottom[0].data
