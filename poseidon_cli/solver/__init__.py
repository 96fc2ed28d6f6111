"""Solvers: Caffe's update rules, learning-rate policies, the training loop and snapshots.

``get_solver(solver_prototxt_or_param, **overrides) -> Solver``

* ``solver_prototxt_or_param``: a solver prototxt path (read with ``config.load_solver_param``:
  ``solver_type`` upgraded, paths resolved beside the file) or a ``SolverParameter``.
* ``overrides``: keyword arguments named like ``SolverParameter`` fields (``max_iter=10``,
  ``base_lr=0.1``, ``type="Adam"``...) replace those fields; any other keyword goes to
  :class:`Solver` (``net``, ``test_nets``, ``context``, ``xp``, ``dtype``, ``log``,
  ``netoutputs_path``, ``sync``, ``action_fn``).

The pure pieces other modules reuse (the parameter server among them): ``updates.UPDATE_RULES``,
``updates.regularize``, ``updates.clip_gradients``, ``lr_policy.learning_rate``.
"""
from __future__ import annotations

import os

from .._proto import caffe_pb2
from .. import config
from ..errors import SolverError
from .lr_policy import LrSchedule, learning_rate
from .solver import Solver
from .updates import UPDATE_RULES, clip_gradients, make_rule, regularize

__all__ = ["get_solver", "solver_param_with", "Solver", "UPDATE_RULES", "learning_rate",
           "LrSchedule", "make_rule", "regularize", "clip_gradients"]

_SOLVER_FIELDS = set(caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name)


def solver_param_with(solver_prototxt_or_param, **overrides):
    """-> (SolverParameter, solver_path or None, {other keyword arguments}).

    Keywords named like ``SolverParameter`` fields replace them: repeated fields take a list (or
    one value), message fields a message or a dict of its fields, enum fields a number or the
    value's name (``snapshot_format="HDF5"``). ``SolverError`` for a value that does not fit."""
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
        if key not in _SOLVER_FIELDS:
            kwargs[key] = value
            continue
        try:
            _assign(param, param.DESCRIPTOR.fields_by_name[key], value)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise SolverError(f"get_solver: cannot set SolverParameter field '{key}' to "
                              f"{value!r}: {exc}") from None
    return param, solver_path, kwargs


def _assign(msg, field, value):
    """Set ``msg.<field>`` from a Python value (protobuf 7: no ``label``, use ``is_repeated``)."""
    name = field.name
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if field.is_repeated:
        target = getattr(msg, name)
        del target[:]
        for v in values:
            if field.message_type is not None:
                _fill_message(target.add(), v)
            else:
                target.append(_scalar(field, v))
        return
    if field.message_type is not None:
        _fill_message(getattr(msg, name), value)
    else:
        setattr(msg, name, _scalar(field, value))


def _fill_message(target, value):
    if isinstance(value, dict):
        target.Clear()
        for k, v in value.items():
            _assign(target, target.DESCRIPTOR.fields_by_name[k], v)
    else:
        target.CopyFrom(value)


def _scalar(field, value):
    if field.enum_type is not None and isinstance(value, str):
        return field.enum_type.values_by_name[value].number
    return value


def get_solver(solver_prototxt_or_param, **overrides) -> Solver:
    """Build a :class:`Solver` (train and test nets included) from a prototxt or a SolverParameter."""
    param, solver_path, kwargs = solver_param_with(solver_prototxt_or_param, **overrides)
    return Solver(param, solver_path=solver_path, **kwargs)
