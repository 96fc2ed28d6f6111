"""Two small updaters with hand-checkable arithmetic for the parameter-server tests (the production
updater is ``poseidon_cli.ps.updaters.SolverUpdater``; the contract is in that module)."""
from __future__ import annotations

import numpy as np

from poseidon_cli.solver.step import history_slot


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
        h = state.get(history_slot(0))
        if h is None:
            h = state[history_slot(0)] = np.zeros_like(param)
        h *= self.momentum
        h += self.lr * grad
        param -= h
