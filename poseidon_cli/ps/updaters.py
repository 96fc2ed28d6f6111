"""What a shard does with a clock's averaged gradient: the updater contract and the Caffe solver.

The contract an updater implements (``ShardStore(..., updater)``)::

    updater.update(key, param, grad, state, clock) -> None

* ``key``: a :class:`~poseidon_cli.ps.keys.ChunkKey` -- ``key.name`` is the param name (for per-param
  ``lr_mult`` / ``decay_mult``), ``key.start:key.stop`` the chunk's element range in the flattened
  tensor, ``key.shape`` the full tensor shape.
* ``param``: writable 1-D array (the chunk's current values, param dtype); update it **in place**.
* ``grad``: 1-D array of the same length: the gradient averaged over the P workers for this clock.
  The updater may modify it (it is a scratch buffer owned by the store).
* ``state``: a dict owned by the store for this chunk; keep per-element history in it as 1-D arrays
  of the chunk's length, under the slot names of ``solver/step.py: history_slot``. It is what
  solver-state get/set snapshot and restore.
* ``clock``: the clock being applied (0-based; iteration ``start_step + clock``).

Called exactly once per (chunk, clock), in clock order, under the shard's lock. Tensors of role STAT
never reach the updater (the store keeps their average as their value).

:class:`SolverUpdater` is the one production updater: Caffe's step (``solver/step.py: apply_step``)
on each chunk, so with staleness 0, P workers of batch B follow the trajectory of one worker of
batch P*B. Every rule is element-wise, so updating chunks of a tensor independently is exact.
"""
from __future__ import annotations

import numpy as np

from ..errors import SolverError
from ..solver.lr_policy import check_policy, learning_rate
from ..solver.step import apply_step, history_slot
from ..solver.updates import get_rule_class, make_rule


def check_solver(solver_param, where: str = "solver"):
    """Raise SolverError for solver settings distributed training cannot honour exactly."""
    if solver_param.clip_gradients >= 0:
        raise SolverError(f"{where}: clip_gradients is not supported with --hosts yet",
                          "it needs the global gradient norm across all shards; remove it or train on one node")
    check_policy(solver_param, where)


class SolverUpdater:
    """The Caffe solver of ``solver_param`` as a shard updater.

    ``multipliers``: param name -> ``(lr_mult, decay_mult)``; None gives every param ``(1, 1)``.
    ``start_step``: the iteration that clock 0 is (non-zero when resuming from a snapshot).
    Raises SolverError for settings :func:`check_solver` refuses.
    """

    def __init__(self, solver_param, multipliers: dict | None = None, start_step: int = 0):
        check_solver(solver_param)
        self.param = solver_param
        self.rule = make_rule(solver_param)
        self.multipliers = None if multipliers is None else dict(multipliers)
        self.start_step = int(start_step)
        self.weight_decay = float(solver_param.weight_decay)
        self.reg_type = solver_param.regularization_type or "L2"

    def history_slots(self) -> list[str]:
        return [history_slot(j) for j in range(self.rule.num_history)]

    def update(self, key, param, grad, state, clock):
        it = self.start_step + clock
        lr_mult, decay_mult = (1.0, 1.0) if self.multipliers is None else self.multipliers[key.name]
        history = []
        for slot in self.history_slots():
            h = state.get(slot)
            if h is None:
                h = state[slot] = np.zeros_like(param)
            history.append(h)
        apply_step(self.rule, param, grad, history, it=it, lr=learning_rate(self.param, it),
                   lr_mult=lr_mult, decay=self.weight_decay, decay_mult=decay_mult,
                   reg_type=self.reg_type)


_ALIASES = {"lr": "base_lr"}


def make_updater(spec: str) -> SolverUpdater:
    """A :class:`SolverUpdater` from ``"TYPE:field=value,..."``: a Caffe solver type (``sgd``,
    ``nesterov``, ``adagrad``, ``rmsprop``, ``adadelta``, ``adam``) and numeric ``SolverParameter``
    fields, e.g. ``"sgd:base_lr=0.1,momentum=0.9"`` (``lr`` stands for ``base_lr``; lr_policy fixed
    unless given; every param gets lr_mult = decay_mult = 1). Used by the stand-alone shard command
    line. ValueError names a bad type or field."""
    from .._proto import caffe_pb2

    name, _, args = spec.partition(":")
    try:
        cls = get_rule_class(name.strip() or "SGD", "--updater")
    except SolverError as e:
        raise ValueError(e.one_line()) from None
    param = caffe_pb2.SolverParameter(type=cls.type, lr_policy="fixed")
    for item in filter(None, (a.strip() for a in args.split(","))):
        field, eq, value = item.partition("=")
        field = _ALIASES.get(field.strip(), field.strip())
        if not eq or field not in caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name:
            raise ValueError(f"--updater: {item!r} is not field=value of a SolverParameter")
        current = getattr(param, field)
        try:
            setattr(param, field, type(current)(value.strip()) if not isinstance(current, str) else value.strip())
        except (TypeError, ValueError):
            raise ValueError(f"--updater: {field} cannot be {value.strip()!r}") from None
    return SolverUpdater(param)
