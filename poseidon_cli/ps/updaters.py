"""Update rules a shard steps once per clock on the averaged gradient (pluggable).

The contract an updater implements (the Caffe solvers in ``poseidon_cli/solver`` plug in here)::

    updater.update(key, param, grad, state, clock) -> None

* ``key``: a :class:`~poseidon_cli.ps.keys.ChunkKey` -- ``key.name`` is the param name (for per-param
  ``lr_mult`` / ``decay_mult``), ``key.start:key.stop`` the chunk's element range in the flattened
  tensor, ``key.shape`` the full tensor shape.
* ``param``: writable 1-D array (the chunk's current values, param dtype); update it **in place**.
* ``grad``: 1-D array of the same length: the gradient averaged over the P workers for this clock.
  The updater may modify it (it is a scratch buffer owned by the store).
* ``state``: a dict owned by the store for this chunk; keep per-element history in it as 1-D arrays
  of the chunk's length (``state["history"]``). It is what solver-state get/set snapshot and restore.
* ``clock``: the clock being applied (= the iteration number, 0-based).

Called exactly once per (chunk, clock), in clock order, under the shard's lock.
"""
from __future__ import annotations

import numpy as np


class SGDUpdater:
    """``param -= lr * (grad + weight_decay * param)``."""

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)

    def update(self, key, param, grad, state, clock):
        if self.weight_decay:
            grad += self.weight_decay * param
        grad *= self.lr
        param -= grad


class MomentumUpdater:
    """Caffe's SGD with momentum: ``h = momentum * h + lr * grad; param -= h`` (h in ``state``)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.9):
        self.lr = float(lr)
        self.momentum = float(momentum)

    def update(self, key, param, grad, state, clock):
        h = state.get("history")
        if h is None:
            h = state["history"] = np.zeros_like(param)
        h *= self.momentum
        h += self.lr * grad
        param -= h


def make_updater(spec: str):
    """Build an updater from ``"sgd:lr=0.1,weight_decay=0"`` or ``"momentum:lr=0.1,momentum=0.9"``
    (used by the stand-alone shard server command line)."""
    name, _, args = spec.partition(":")
    kwargs = {}
    for item in filter(None, args.split(",")):
        k, _, v = item.partition("=")
        kwargs[k.strip()] = float(v)
    cls = {"sgd": SGDUpdater, "momentum": MomentumUpdater}.get(name.strip().lower())
    if cls is None:
        raise ValueError(f"unknown updater {name!r}: use 'sgd' or 'momentum'")
    return cls(**kwargs)
