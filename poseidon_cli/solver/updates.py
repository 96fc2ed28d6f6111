"""Caffe's update rules as pure array functions (no Net, no Blob): shared by the Solver, the
parameter server and sufficient-factor broadcasting through ``step.apply_step``, the one place that
strings them together.

Per learnable parameter, one iteration of Caffe's ``ApplyUpdate`` is (all but the clipping, with
the normalization as a ``scale``, are :func:`~poseidon_cli.solver.step.apply_step`)::

    scale = clip_gradients(all_diffs, clip)            # global L2 norm over every param, optional
    normalize(diff, iter_size)                          # diff /= iter_size
    regularize(data, diff, local_decay, reg_type)       # local_decay = weight_decay * decay_mult
    rule.compute_update(diff, history, local_rate, it)  # local_rate = lr(it) * lr_mult
    data -= diff

``diff``, ``data`` and every array of ``history`` have the same shape and dtype and live on the
same array module (numpy or cupy); every function works in place. ``history`` is a list of
``rule.num_history`` arrays for that one parameter, zero-initialised (:func:`new_history`). A solver
keeps ``history[p][k]`` for param p; the SolverState stores all params' ``k = 0`` arrays, then all
params' ``k = 1`` arrays (:func:`flatten_history` / :func:`unflatten_history`).

Formulas (r = local_rate, g = diff, mu = momentum, d = delta):

* SGD:      v = mu v + r g;                  step = v
* Nesterov: v' = mu v + r g;                 step = (1 + mu) v' - mu v
* AdaGrad:  h += g^2;                        step = r g / (sqrt(h) + d)
* RMSProp:  h = rho h + (1 - rho) g^2;       step = r g / (sqrt(h) + d)       (rho = rms_decay)
* AdaDelta: h = mu h + (1 - mu) g^2;  u = g sqrt((s + d) / (h + d));  s = mu s + (1 - mu) u^2;
            step = r u
* Adam:     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = it + 1;
            step = r sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + d)   (b1 = momentum, b2 = momentum2)

``compute_update`` leaves ``step`` in ``diff`` (to be subtracted from the weights).
"""
from __future__ import annotations

import math

from ..backend import get_array_module
from ..errors import SolverError


class UpdateRule:
    """Base class: ``type`` (Caffe's solver type string), ``num_history`` arrays per param."""

    type = ""
    num_history = 1

    def __init__(self, momentum: float = 0.0, delta: float = 1e-8, rms_decay: float = 0.99,
                 momentum2: float = 0.999):
        self.momentum = float(momentum)
        self.delta = float(delta)
        self.rms_decay = float(rms_decay)
        self.momentum2 = float(momentum2)

    @classmethod
    def from_param(cls, param, where: str = "solver"):
        """Build from a ``SolverParameter`` (reads momentum, delta, rms_decay, momentum2)."""
        rule = cls(momentum=param.momentum, delta=param.delta, rms_decay=param.rms_decay,
                   momentum2=param.momentum2)
        rule.check(where)
        return rule

    def check(self, where: str = "solver") -> None:
        """Raise ``SolverError`` for settings Caffe refuses."""

    def compute_update(self, diff, history, local_rate: float, it: int, data=None) -> None:
        """Turn the regularized gradient in ``diff`` into the step to subtract (in place)."""
        raise NotImplementedError

    def __repr__(self):
        return (f"{type(self).__name__}(momentum={self.momentum}, delta={self.delta}, "
                f"rms_decay={self.rms_decay}, momentum2={self.momentum2})")


class SGD(UpdateRule):
    type = "SGD"

    def compute_update(self, diff, history, local_rate, it, data=None):
        v = history[0]
        # r * g in place rather than into a temporary: the same products, and no fresh array per
        # call (a shard steps every 1 MiB chunk separately; the allocation cost more than the math)
        diff *= local_rate
        v *= self.momentum
        v += diff
        diff[...] = v


class Nesterov(UpdateRule):
    type = "Nesterov"

    def compute_update(self, diff, history, local_rate, it, data=None):
        v = history[0]
        previous = v.copy()
        v *= self.momentum
        v += local_rate * diff
        # step back along the old velocity, then over-step along the new one
        diff[...] = (1.0 + self.momentum) * v - self.momentum * previous


class AdaGrad(UpdateRule):
    type = "AdaGrad"

    def check(self, where="solver"):
        if self.momentum != 0:
            raise SolverError(f"{where}: AdaGrad does not use momentum (got momentum: {self.momentum})",
                              "remove momentum or set it to 0")

    def compute_update(self, diff, history, local_rate, it, data=None):
        xp = get_array_module(diff)
        h = history[0]
        h += diff * diff
        diff /= xp.sqrt(h) + self.delta
        diff *= local_rate


class RMSProp(UpdateRule):
    type = "RMSProp"

    def check(self, where="solver"):
        if self.momentum != 0:
            raise SolverError(f"{where}: RMSProp does not use momentum (got momentum: {self.momentum})",
                              "remove momentum or set it to 0; rms_decay sets the averaging")
        if not 0.0 <= self.rms_decay <= 1.0:
            raise SolverError(f"{where}: rms_decay must be in [0, 1] (got {self.rms_decay})")

    def compute_update(self, diff, history, local_rate, it, data=None):
        xp = get_array_module(diff)
        h = history[0]
        h *= self.rms_decay
        h += (1.0 - self.rms_decay) * (diff * diff)
        diff /= xp.sqrt(h) + self.delta
        diff *= local_rate


class AdaDelta(UpdateRule):
    type = "AdaDelta"
    num_history = 2

    def compute_update(self, diff, history, local_rate, it, data=None):
        xp = get_array_module(diff)
        hg, hu = history
        mu = self.momentum
        hg *= mu
        hg += (1.0 - mu) * (diff * diff)
        diff *= xp.sqrt((hu + self.delta) / (hg + self.delta))
        hu *= mu
        hu += (1.0 - mu) * (diff * diff)
        diff *= local_rate


class Adam(UpdateRule):
    type = "Adam"
    num_history = 2

    def compute_update(self, diff, history, local_rate, it, data=None):
        xp = get_array_module(diff)
        m, v = history
        b1, b2 = self.momentum, self.momentum2
        t = it + 1
        correction = math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        m *= b1
        m += (1.0 - b1) * diff
        v *= b2
        v += (1.0 - b2) * (diff * diff)
        diff[...] = (local_rate * correction) * m / (xp.sqrt(v) + self.delta)


#: Caffe solver ``type`` string -> rule class
UPDATE_RULES = {cls.type: cls for cls in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}


def get_rule_class(type_name: str, where: str = "solver"):
    """The rule class for a solver ``type`` (case-insensitive, Caffe's names); ``SolverError`` if unknown."""
    for name, cls in UPDATE_RULES.items():
        if name.lower() == str(type_name).lower():
            return cls
    raise SolverError(f"{where}: unknown solver type \"{type_name}\"",
                      "use one of " + ", ".join(UPDATE_RULES))


def make_rule(param, where: str = "solver") -> UpdateRule:
    """The configured rule of a ``SolverParameter`` (``type`` field, already upgraded from solver_type)."""
    return get_rule_class(param.type or "SGD", where).from_param(param, where)


def compute_update(type_name: str, diff, history, local_rate, it, param, data=None) -> None:
    """Functional form: ``make_rule`` for ``param`` then ``compute_update``."""
    rule = get_rule_class(type_name).from_param(param)
    rule.compute_update(diff, history, local_rate, it, data)


def new_history(rule, shape, xp, dtype) -> list:
    """Zero history arrays for one param."""
    return [xp.zeros(shape, dtype=dtype) for _ in range(rule.num_history)]


def normalize(diff, iter_size: int) -> None:
    """Average gradients accumulated over ``iter_size`` forward/backward passes (in place)."""
    if iter_size != 1:
        diff *= 1.0 / iter_size


def regularize(data, diff, local_decay: float, reg_type: str = "L2") -> None:
    """Coupled weight decay added to the gradient (in place): L2 ``g += decay * w``,
    L1 ``g += decay * sign(w)``. Nothing happens when ``local_decay`` is 0."""
    if reg_type not in ("L1", "L2"):
        raise SolverError(f"solver: unknown regularization_type \"{reg_type}\"", "use L2 or L1")
    if not local_decay:
        return
    if reg_type == "L2":
        diff += local_decay * data
    else:
        xp = get_array_module(data)
        diff += local_decay * xp.sign(data)


def global_l2_norm(diffs) -> float:
    """sqrt of the sum of squares over all arrays (computed in float64)."""
    total = 0.0
    for d in diffs:
        xp = get_array_module(d)
        flat = d.ravel().astype(xp.float64, copy=False)
        total += float(flat @ flat)
    return math.sqrt(total)


def clip_gradients(diffs, clip: float):
    """Caffe's ClipGradients: when ``clip >= 0`` and the global L2 norm of ``diffs`` exceeds it,
    scale every diff by ``clip / norm`` in place. Returns ``(norm, scale)``; ``scale`` is 1.0 when
    nothing was clipped and ``norm`` is None when clipping is off (``clip < 0``)."""
    if clip < 0:
        return None, 1.0
    norm = global_l2_norm(diffs)
    if norm > clip:
        scale = clip / norm
        for d in diffs:
            d *= scale
        return norm, scale
    return norm, 1.0


def flatten_history(history) -> list:
    """Per-param lists ``[[h0, h1], ...]`` -> SolverState order ``[p0.h0, p1.h0, ..., p0.h1, ...]``."""
    if not history:
        return []
    k = len(history[0])
    return [history[p][j] for j in range(k) for p in range(len(history))]


def unflatten_history(flat, num_params: int, num_history: int) -> list:
    """Inverse of :func:`flatten_history`."""
    if len(flat) != num_params * num_history:
        raise ValueError(f"expected {num_params * num_history} history arrays, got {len(flat)}")
    return [[flat[j * num_params + p] for j in range(num_history)] for p in range(num_params)]
