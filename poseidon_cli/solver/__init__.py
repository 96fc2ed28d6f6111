"""Solvers: Caffe's update rules, learning-rate policies, the training loop and snapshots.

``get_solver(solver_prototxt_or_param, **overrides) -> Solver``

* ``solver_prototxt_or_param``: a solver prototxt path (read with ``config.load_solver_param``:
  ``solver_type`` upgraded, paths resolved beside the file) or a ``SolverParameter``.
* ``overrides``: keyword arguments named like ``SolverParameter`` fields (``max_iter=10``,
  ``base_lr=0.1``, ``type="Adam"``...) replace those fields; any other keyword goes to
  :class:`Solver` (``net``, ``test_nets``, ``context``, ``xp``, ``dtype``, ``log``,
  ``netoutputs_path``, ``apply_update``, ``callbacks``, ``action_fn``).

The pure pieces other modules reuse (the parameter server among them): ``updates.UPDATE_RULES``,
``updates.regularize``, ``updates.clip_gradients``, ``lr_policy.learning_rate``.
"""
from __future__ import annotations

import os

from .._proto import caffe_pb2
from .. import config
from .lr_policy import LrSchedule, learning_rate
from .solver import Solver
from .updates import UPDATE_RULES, clip_gradients, make_rule, regularize

__all__ = ["get_solver", "Solver", "UPDATE_RULES", "learning_rate", "LrSchedule", "make_rule",
           "regularize", "clip_gradients"]

_SOLVER_FIELDS = set(caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name)


def get_solver(solver_prototxt_or_param, **overrides) -> Solver:
    """Build a :class:`Solver` (train and test nets included) from a prototxt or a SolverParameter."""
    solver_path = overrides.pop("solver_path", None)
    if isinstance(solver_prototxt_or_param, (str, os.PathLike)):
        solver_path = os.fspath(solver_prototxt_or_param)
        param = config.load_solver_param(solver_path)
    else:
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver_prototxt_or_param)
        config.upgrade_solver(param)
    kwargs = {}
    for key, value in overrides.items():
        if key in _SOLVER_FIELDS:
            field = param.DESCRIPTOR.fields_by_name[key]
            if field.label == field.LABEL_REPEATED:
                getattr(param, key)[:] = list(value)
            else:
                setattr(param, key, value)
        else:
            kwargs[key] = value
    return Solver(param, solver_path=solver_path, **kwargs)
