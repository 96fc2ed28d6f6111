"""Caffe's learning-rate policies (pure functions of the solver settings and the iteration).

``it`` is the 0-based number of updates already applied (Caffe's ``iter_`` *before* the increment),
so the first update uses ``learning_rate(p, 0)``. Fields read from the ``SolverParameter``:
``lr_policy``, ``base_lr``, ``gamma``, ``power``, ``stepsize``, ``stepvalue``, ``max_iter``.
Unset proto2 floats read as 0 (Caffe has no defaults for them either).

Policies:

* ``fixed``     base_lr
* ``step``      base_lr * gamma ^ floor(it / stepsize)
* ``exp``       base_lr * gamma ^ it
* ``inv``       base_lr * (1 + gamma * it) ^ (-power)
* ``multistep`` base_lr * gamma ^ current_step (current_step advances at most once per iteration,
  when it >= stepvalue[current_step]; Caffe saves it in the solverstate)
* ``poly``      base_lr * (1 - it / max_iter) ^ power
* ``sigmoid``   base_lr / (1 + exp(-gamma * (it - stepsize)))

Errors: an unknown policy, or ``step``/``sigmoid`` without ``stepsize > 0`` (step only), raises
``SolverError`` naming the field.
"""
from __future__ import annotations

import math

from ..errors import SolverError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_policy(param, where: str = "solver") -> None:
    """Reject settings Caffe would abort on, before training starts."""
    policy = param.lr_policy
    if policy not in POLICIES:
        shown = f'"{policy}"' if policy else "(unset)"
        raise SolverError(f"{where}: unknown lr_policy {shown}",
                          "use one of " + ", ".join(POLICIES))
    if policy == "step" and param.stepsize <= 0:
        raise SolverError(f"{where}: lr_policy \"step\" needs stepsize > 0")
    if policy == "poly" and param.max_iter <= 0:
        raise SolverError(f"{where}: lr_policy \"poly\" needs max_iter > 0")


def advance_multistep(param, it: int, current_step: int) -> int:
    """Caffe's multistep counter update for iteration ``it`` (at most one step per call)."""
    if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
        return current_step + 1
    return current_step


def multistep_index(param, it: int) -> int:
    """The counter a run that evaluated the rate every iteration 0..it would have reached."""
    step, last = 0, -1
    for value in param.stepvalue:
        # each iteration advances at most once, so step k happens no earlier than step k-1 + 1
        when = max(int(value), last + 1)
        if when > it:
            break
        step, last = step + 1, when
    return step


def learning_rate(param, it: int, current_step: int | None = None) -> float:
    """The rate for the update applied at iteration ``it``.

    For ``multistep`` pass ``current_step`` *after* :func:`advance_multistep` for this ``it``
    (as :class:`LrSchedule` does); ``None`` derives it from ``it`` alone (the parameter server uses
    this, as it sees every clock in order).
    """
    policy = param.lr_policy
    base = param.base_lr
    if policy == "fixed":
        return float(base)
    if policy == "step":
        if param.stepsize <= 0:
            raise SolverError("solver: lr_policy \"step\" needs stepsize > 0")
        return base * math.pow(param.gamma, it // param.stepsize)
    if policy == "exp":
        return base * math.pow(param.gamma, it)
    if policy == "inv":
        return base * math.pow(1.0 + param.gamma * it, -param.power)
    if policy == "multistep":
        step = multistep_index(param, it) if current_step is None else current_step
        return base * math.pow(param.gamma, step)
    if policy == "poly":
        return base * math.pow(1.0 - float(it) / param.max_iter, param.power)
    if policy == "sigmoid":
        return base * (1.0 / (1.0 + math.exp(-param.gamma * (it - param.stepsize))))
    check_policy(param)  # raises with the full message
    raise AssertionError("unreachable")


class LrSchedule:
    """Stateful wrapper holding Caffe's ``current_step_`` (snapshotted in SolverState field 4)."""

    def __init__(self, param, current_step: int = 0, where: str = "solver"):
        check_policy(param, where)
        self.param = param
        self.current_step = int(current_step)

    def rate(self, it: int) -> float:
        """Rate for iteration ``it``; call once per iteration, in order (advances multistep)."""
        if self.param.lr_policy == "multistep":
            self.current_step = advance_multistep(self.param, it, self.current_step)
        return learning_rate(self.param, it, self.current_step)
