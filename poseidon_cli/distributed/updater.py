"""The Caffe solver step, run by each parameter-server shard on the averaged gradient.

Implements the PS updater contract (``poseidon_cli/ps/updaters.py``): ``update(key, param, grad,
state, clock)`` is called once per (chunk, clock), in clock order, with ``grad`` already averaged
over the P workers. It applies exactly what the single-node Solver applies for one iteration
(``solver/updates.py``): coupled regularization with ``weight_decay * decay_mult``, then the rule's
step with ``lr(iteration) * lr_mult``, then ``param -= step``. So with staleness 0, P workers of
batch B follow the trajectory of one worker of batch P*B (architecture.md, Contracts).

Chunks of one tensor are updated independently; every rule is element-wise, so that is exact.
``clip_gradients`` needs the norm over all tensors at once and is refused (see ``check_solver``).

Statistics tensors (names starting with ``__``: averaged losses/outputs for the log) are not
parameters: their "update" stores the average itself.
"""
from __future__ import annotations

import numpy as np

from ..errors import SolverError
from ..solver.lr_policy import check_policy, learning_rate
from ..solver.updates import make_rule, regularize

STATS_PREFIX = "__"


def check_solver(solver_param, where: str = "solver"):
    """Raise SolverError for solver settings distributed training cannot honour exactly."""
    if solver_param.clip_gradients >= 0:
        raise SolverError(f"{where}: clip_gradients is not supported with --hosts yet",
                          "it needs the global gradient norm across all shards; remove it or train on one node")
    check_policy(solver_param)


class SolverUpdater:
    """``multipliers``: param name -> (lr_mult, decay_mult). ``start_iter``: the iteration that
    clock 0 is (non-zero when resuming from a snapshot)."""

    def __init__(self, solver_param, multipliers: dict, start_iter: int = 0):
        check_solver(solver_param)
        self.param = solver_param
        self.rule = make_rule(solver_param)
        self.multipliers = dict(multipliers)
        self.start_iter = int(start_iter)
        self.weight_decay = float(solver_param.weight_decay)
        self.reg_type = solver_param.regularization_type or "L2"

    def history_slots(self) -> list[str]:
        return [f"h{k}" for k in range(self.rule.num_history)]

    def update(self, key, param, grad, state, clock):
        if key.name.startswith(STATS_PREFIX):
            param[...] = grad
            return
        it = self.start_iter + clock
        lr_mult, decay_mult = self.multipliers[key.name]
        history = []
        for slot in self.history_slots():
            h = state.get(slot)
            if h is None:
                h = state[slot] = np.zeros_like(param)
            history.append(h)
        regularize(param, grad, self.weight_decay * decay_mult, self.reg_type)
        self.rule.compute_update(grad, history, learning_rate(self.param, it) * lr_mult, it, param)
        param -= grad
