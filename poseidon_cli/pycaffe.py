"""pycaffe's module-level names that are not a class of their own room: the per-type solver
classes, ``get_solver``, mode and device selection, ``layer_type_list`` and ``has_nccl``.

* ``SGDSolver(path, **overrides)``, ``NesterovSolver``, ``AdaGradSolver``, ``RMSPropSolver``,
  ``AdaDeltaSolver``, ``AdamSolver``: a :class:`~poseidon_cli.solver.Solver` of that type whatever
  the file's ``type`` says (pycaffe's classes are bound to one C++ solver each). ``overrides``
  replace SolverParameter fields (see ``solver.solver_param_with``).
* ``get_solver(path, **overrides)``: the class named by the file's ``type`` (or the ``type``
  override).
* ``set_mode_cpu()``, ``set_mode_gpu()``, ``set_device(id)``: the array backend of nets built
  afterwards (``backend.use_cpu`` / ``backend.use_gpu``; a GPU mode without a usable GPU raises
  ``BackendError`` with what to install).
* ``layer_type_list()``: every registered layer type, sorted.
* ``has_nccl()``: False (multi-GPU runs go through poseidon's parameter server, not NCCL).
"""
from __future__ import annotations

import numpy as np

from . import backend
from .net_pycaffe import set_random_seed  # noqa: F401  (re-exported)
from .solver import Solver, solver_param_with

_device = 0


class _TypedSolver(Solver):
    solver_type = "SGD"

    def __init__(self, solver_file, **overrides):
        overrides["type"] = self.solver_type
        param, path, kwargs = solver_param_with(solver_file, **overrides)
        super().__init__(param, solver_path=path, **kwargs)


class SGDSolver(_TypedSolver):
    solver_type = "SGD"


class NesterovSolver(_TypedSolver):
    solver_type = "Nesterov"


class AdaGradSolver(_TypedSolver):
    solver_type = "AdaGrad"


class RMSPropSolver(_TypedSolver):
    solver_type = "RMSProp"


class AdaDeltaSolver(_TypedSolver):
    solver_type = "AdaDelta"


class AdamSolver(_TypedSolver):
    solver_type = "Adam"


SOLVER_CLASSES = {cls.solver_type: cls for cls in (SGDSolver, NesterovSolver, AdaGradSolver,
                                                   RMSPropSolver, AdaDeltaSolver, AdamSolver)}


def get_solver(solver_file, **overrides):
    """The solver class for the file's ``type`` (an unknown type raises ``SolverError``)."""
    param, _, _ = solver_param_with(solver_file, **dict(overrides))
    cls = SOLVER_CLASSES.get(param.type)
    if cls is None:
        # Let the Solver report the unknown type with its usual message.
        param_, path, kwargs = solver_param_with(solver_file, **overrides)
        return Solver(param_, solver_path=path, **kwargs)
    overrides.pop("type", None)
    return cls(solver_file, **overrides)


def set_mode_cpu():
    backend.use_cpu()


def set_mode_gpu():
    backend.use_gpu(_device)


def set_device(device_id: int):
    """Choose the GPU that ``set_mode_gpu`` (or the GPU mode already on) uses."""
    global _device
    _device = int(device_id)
    if backend.default_xp() is not np:
        backend.use_gpu(_device)


def layer_type_list():
    from .layers import layer_types
    return layer_types()


def has_nccl() -> bool:
    return False
