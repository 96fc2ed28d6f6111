"""The Caffe update step for one parameter (or any element range of it), written once.

Every place that changes weights calls :func:`apply_step`: the single-node ``Solver``, the
parameter-server ``SolverUpdater`` (``ps/updaters.py``, on each chunk) and the sufficient-factor
exchange (on row blocks). The headline contract -- P workers of batch B follow one worker of batch
P*B -- holds because they all run this same code on the same averaged gradient.

One call is, in order (Caffe's ``Normalize``, ``Regularize``, ``ComputeUpdateValue``, ``Update``)::

    grad *= scale                                   # skipped when scale == 1.0
    regularize(data, grad, decay * decay_mult, reg_type)
    rule.compute_update(grad, history, lr * lr_mult, it, data)
    data -= grad

``data``, ``grad`` and every array of ``history`` have the same shape and dtype and live on the
same array module (numpy or cupy); everything happens in place and ``grad`` is left holding the step
that was subtracted. Every rule is element-wise, so calling this on a slice (a PS chunk, a block of
rows) with the matching slices of ``history`` gives exactly the elements a whole-tensor call gives.

Gradient clipping is not part of the step: it needs the norm over every parameter at once and is
applied by the caller before (``updates.clip_gradients``).

History slots: the k-th history array of a parameter is stored under :func:`history_slot` ``(k)``
wherever it is kept by name (a PS shard's chunk state, solver-state transfers between workers).
"""
from __future__ import annotations

from .updates import UpdateRule, regularize


def history_slot(j: int) -> str:
    """The name of history array ``j`` of a parameter (``"h0"``, ``"h1"``, ...)."""
    return f"h{int(j)}"


def apply_step(rule: UpdateRule, data, grad, history, *, it: int, lr: float, lr_mult: float,
               decay: float, decay_mult: float, reg_type: str, scale: float = 1.0) -> None:
    """Apply one Caffe update to ``data`` in place (see the module docstring for the exact order).

    ``rule``: an :class:`~poseidon_cli.solver.updates.UpdateRule`; ``history``: its
    ``rule.num_history`` arrays for these elements; ``it``: the 0-based iteration (Adam's bias
    correction reads it); ``lr``: the policy's rate for ``it`` (``lr_policy.learning_rate``);
    ``decay``: the solver's ``weight_decay``; ``reg_type``: ``"L2"`` or ``"L1"``; ``scale``: a factor
    applied to ``grad`` first (``1 / iter_size`` on one node). ``grad`` is overwritten.
    """
    if scale != 1.0:
        grad *= scale
    regularize(data, grad, decay * decay_mult, reg_type)
    rule.compute_update(grad, history, lr * lr_mult, it, data)
    data -= grad
