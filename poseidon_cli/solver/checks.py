"""Solver settings Caffe would abort on, or that train into nonsense, caught before any net is
built. Each error is one line ``<solver file>:<line>: <field> ...`` with what to do.

``check_solver_param(param, path, text=None)``: ``param`` is the upgraded SolverParameter read
from ``path`` (``text`` is the file's content; read again when None). Raises ``SolverError``.

Checked: ``type``, ``lr_policy`` and what each policy needs (``stepsize`` > 0 for step,
``stepvalue`` given and strictly increasing for multistep, ``max_iter`` > 0 for poly, ``gamma``
>= 0 for step/exp/inv/multistep), the signs of ``base_lr``, ``max_iter``, ``weight_decay``,
``momentum``, ``display``, ``snapshot``; ``momentum2`` in [0, 1) and ``delta`` > 0 for the
adaptive rules; ``rms_decay`` in [0, 1]; no momentum for AdaGrad/RMSProp; ``iter_size`` and
``average_loss`` >= 1; ``regularization_type``; ``test_iter`` > 0 and given together with a
``test_interval`` > 0 (one without the other runs no test at all or a test that never happens).
"""
from __future__ import annotations

from ..errors import SolverError
from ..textloc import field_line, where

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def check_solver_param(param, path: str, text: str | None = None) -> None:
    if text is None:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            text = ""
    p = param

    def fail(field, what, hint=None, nth=0):
        loc = where(path, field_line(text, field, nth, top_level=True))
        raise SolverError(f"{loc}: {what}", hint)

    nets = [f for f in ("net", "train_net") if getattr(p, f)]
    nets += [f for f in ("net_param", "train_net_param") if p.HasField(f)]
    if not nets:
        raise SolverError(f"{path}: no net given",
                          'add net: "train_val.prototxt" (or train_net) to the solver file')
    kind = p.type or "SGD"
    if kind not in SOLVER_TYPES:
        fail("type", f'unknown solver type "{kind}"', "use one of " + ", ".join(SOLVER_TYPES))
    if p.lr_policy not in POLICIES:
        shown = f'"{p.lr_policy}"' if p.lr_policy else "(unset)"
        fail("lr_policy", f"unknown lr_policy {shown}", "use one of " + ", ".join(POLICIES))
    for field in ("base_lr", "max_iter", "weight_decay", "momentum", "display", "snapshot"):
        value = getattr(p, field)
        if value < 0:
            fail(field, f"{field} must be >= 0, got {value:g}", f"set {field} to a value >= 0")
    if p.lr_policy == "step" and p.stepsize <= 0:
        fail("stepsize" if p.HasField("stepsize") else "lr_policy",
             f'lr_policy "step" needs stepsize > 0, got {p.stepsize}', "set stepsize: N (iterations)")
    if p.lr_policy == "poly" and p.max_iter <= 0:
        fail("max_iter" if p.HasField("max_iter") else "lr_policy",
             'lr_policy "poly" needs max_iter > 0', "set max_iter")
    if p.lr_policy in ("step", "exp", "inv", "multistep") and p.gamma < 0:
        fail("gamma", f'gamma must be >= 0 for lr_policy "{p.lr_policy}", got {p.gamma:g}')
    if p.lr_policy == "multistep":
        if not p.stepvalue:
            fail("lr_policy", 'lr_policy "multistep" needs stepvalue', "add stepvalue: N lines")
        for i in range(1, len(p.stepvalue)):
            if p.stepvalue[i] <= p.stepvalue[i - 1]:
                fail("stepvalue", f"stepvalue {p.stepvalue[i]} does not follow "
                     f"{p.stepvalue[i - 1]}: stepvalues must be strictly increasing",
                     "sort the stepvalue lines and drop repeats", nth=i)
    if kind in ("AdaGrad", "RMSProp") and p.momentum != 0:
        fail("momentum", f"{kind} does not use momentum (got momentum: {p.momentum:g})",
             f"remove momentum for type \"{kind}\"")
    if kind == "RMSProp" and not 0 <= p.rms_decay <= 1:
        fail("rms_decay", f"rms_decay must be between 0 and 1, got {p.rms_decay:g}")
    if kind == "Adam" and not 0 <= p.momentum2 < 1:
        fail("momentum2", f"momentum2 must be in [0, 1), got {p.momentum2:g}", "use e.g. 0.999")
    if kind in ("AdaGrad", "RMSProp", "AdaDelta", "Adam") and not p.delta > 0:
        fail("delta", f"delta must be > 0 for {kind}, got {p.delta:g}", "use e.g. 1e-8")
    if p.regularization_type not in ("L1", "L2"):
        fail("regularization_type", f'unknown regularization_type "{p.regularization_type}"',
             "use L2 or L1")
    for field in ("iter_size", "average_loss"):
        value = getattr(p, field)
        if value < 1:
            fail(field, f"{field} must be >= 1, got {value}")
    for i, n in enumerate(p.test_iter):
        if n <= 0:
            fail("test_iter", f"test_iter must be > 0, got {n}", "give the number of test batches",
                 nth=i)
    if p.test_interval < 0 or (p.test_iter and p.test_interval == 0):
        fail("test_interval" if p.HasField("test_interval") else "test_iter",
             f"test_iter is set but test_interval is {p.test_interval}",
             "set test_interval > 0 (or remove test_iter)")
    has_test_nets = bool(p.test_iter) or bool(p.test_net) or bool(p.test_net_param)
    if p.test_interval > 0 and not has_test_nets:
        fail("test_interval", "test_interval is set but there is no test_iter, so no test would run",
             "add test_iter: N (batches per test) or remove test_interval")
