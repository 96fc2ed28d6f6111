"""Update rules over several iterations of a least-squares problem, against per-element reference
updates written out here from Caffe's formulas (BVLC sgd_solvers.cpp), in the style of BVLC's
test_gradient_based_solver: weight decay 0.5, momentum 0.5, weights and a bias with lr_mult 2."""
import math

import numpy as np
import pytest

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import SolverError
from poseidon_cli.solver import updates as U


def least_squares_grads(X, y, w, b):
    """Gradient of 1/(2N) * sum_n (x_n . w + b - y_n)^2 w.r.t. w and b (Caffe's EuclideanLoss)."""
    n = X.shape[0]
    r = X @ w + b - y
    return X.T @ r / n, np.array([r.sum() / n])


def reference_step(kind, g, w, state, rate, it, mom, delta, rho, mom2, decay, reg):
    """One element's update, scalar math only. ``state`` is a dict per element."""
    if decay:
        g = g + decay * (w if reg == "L2" else math.copysign(1.0, w) if w != 0 else 0.0)
    if kind == "SGD":
        state["v"] = mom * state["v"] + rate * g
        return state["v"]
    if kind == "Nesterov":
        old = state["v"]
        state["v"] = mom * old + rate * g
        return (1 + mom) * state["v"] - mom * old
    if kind == "AdaGrad":
        state["h"] += g * g
        return rate * g / (math.sqrt(state["h"]) + delta)
    if kind == "RMSProp":
        state["h"] = rho * state["h"] + (1 - rho) * g * g
        return rate * g / (math.sqrt(state["h"]) + delta)
    if kind == "AdaDelta":
        state["h"] = mom * state["h"] + (1 - mom) * g * g
        u = g * math.sqrt((state["s"] + delta) / (state["h"] + delta))
        state["s"] = mom * state["s"] + (1 - mom) * u * u
        return rate * u
    if kind == "Adam":
        t = it + 1
        state["m"] = mom * state["m"] + (1 - mom) * g
        state["v2"] = mom2 * state["v2"] + (1 - mom2) * g * g
        # Caffe adds delta to the *uncorrected* sqrt(v)
        return rate * math.sqrt(1 - mom2 ** t) / (1 - mom ** t) * state["m"] / (math.sqrt(state["v2"]) + delta)
    raise AssertionError(kind)


CASES = [  # type, base_lr, momentum, rms_decay, reg
    ("SGD", 0.1, 0.5, 0.99, "L2"),
    ("SGD", 0.1, 0.5, 0.99, "L1"),
    ("Nesterov", 0.1, 0.5, 0.99, "L2"),
    ("AdaGrad", 0.1, 0.0, 0.99, "L2"),
    ("RMSProp", 0.05, 0.0, 0.95, "L2"),
    ("AdaDelta", 1.0, 0.95, 0.99, "L2"),
    ("Adam", 0.01, 0.9, 0.99, "L2"),
]


@pytest.mark.parametrize("kind,base_lr,mom,rho,reg", CASES)
def test_rule_matches_reference_over_iterations(kind, base_lr, mom, rho, reg):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 5))
    y = rng.normal(size=8)
    w0 = rng.normal(size=5)
    b0 = np.array([0.3])
    wd, delta, mom2 = 0.5, 1e-8, 0.999
    lr_mult, decay_mult = [1.0, 2.0], [1.0, 0.0]  # bias: twice the rate, no decay

    param = caffe_pb2.SolverParameter(type=kind, base_lr=base_lr, momentum=mom, rms_decay=rho,
                                      weight_decay=wd, regularization_type=reg)
    rule = U.make_rule(param)
    # proto floats are float32: the reference uses the values as stored
    base_lr, mom, rho, wd, delta, mom2 = (param.base_lr, param.momentum, param.rms_decay,
                                          param.weight_decay, param.delta, param.momentum2)
    assert rule.num_history == (2 if kind in ("AdaDelta", "Adam") else 1)

    # implementation under test
    w, b = w0.copy(), b0.copy()
    hist = [U.new_history(rule, a.shape, np, np.float64) for a in (w, b)]
    # reference state
    rw, rb = list(w0), list(b0)
    zero = {"v": 0.0, "h": 0.0, "s": 0.0, "m": 0.0, "v2": 0.0}
    states = [[dict(zero) for _ in rw], [dict(zero) for _ in rb]]

    for it in range(5):
        rate = base_lr * (0.9 ** it)  # a changing rate exercises the lr-scaled history
        gw, gb = least_squares_grads(X, y, w, b)
        for data, diff, h, lm, dm in ((w, gw, hist[0], lr_mult[0], decay_mult[0]),
                                      (b, gb, hist[1], lr_mult[1], decay_mult[1])):
            U.regularize(data, diff, wd * dm, reg)
            rule.compute_update(diff, h, rate * lm, it)
            data -= diff

        rgw, rgb = least_squares_grads(X, y, np.array(rw), np.array(rb))
        for vals, grads, st, p in ((rw, rgw, states[0], 0), (rb, rgb, states[1], 1)):
            for i in range(len(vals)):
                step = reference_step(kind, float(grads[i]), vals[i], st[i], rate * lr_mult[p], it,
                                      mom, delta, rho, mom2, wd * decay_mult[p], reg)
                vals[i] -= step
        np.testing.assert_allclose(w, rw, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b, rb, rtol=1e-10, atol=1e-12)
    # history holds the reference state too (what a snapshot would save)
    if kind in ("SGD", "Nesterov"):
        np.testing.assert_allclose(hist[0][0], [s["v"] for s in states[0]], rtol=1e-10)
    if kind == "Adam":
        np.testing.assert_allclose(hist[0][1], [s["v2"] for s in states[0]], rtol=1e-10)


def test_sgd_history_is_lr_scaled_velocity():
    # an lr drop does not rescale the existing velocity (unlike PyTorch's v = mu v + g)
    rule = U.SGD(momentum=0.9)
    h = [np.zeros(1)]
    d = np.array([1.0]); rule.compute_update(d, h, 1.0, 0)
    d = np.array([0.0]); rule.compute_update(d, h, 0.001, 1)
    assert d[0] == pytest.approx(0.9)


def test_regularize_l1_l2_and_zero_decay():
    w = np.array([-2.0, 0.0, 3.0])
    g = np.zeros(3); U.regularize(w, g, 0.5, "L2"); np.testing.assert_array_equal(g, [-1.0, 0.0, 1.5])
    g = np.zeros(3); U.regularize(w, g, 0.5, "L1"); np.testing.assert_array_equal(g, [-0.5, 0.0, 0.5])
    g = np.ones(3); U.regularize(w, g, 0.0, "L2"); np.testing.assert_array_equal(g, [1.0, 1.0, 1.0])
    with pytest.raises(SolverError, match="regularization_type"):
        U.regularize(w, g, 0.5, "L3")


def test_clip_gradients_global_norm():
    a, b = np.array([3.0, 0.0]), np.array([[4.0]])
    norm, scale = U.clip_gradients([a, b], 10.0)
    assert (norm, scale) == (5.0, 1.0) and a[0] == 3.0
    norm, scale = U.clip_gradients([a, b], 1.0)
    assert norm == pytest.approx(5.0) and scale == pytest.approx(0.2)
    np.testing.assert_allclose(np.concatenate([a, b.ravel()]), [0.6, 0.0, 0.8])
    assert U.clip_gradients([a], -1) == (None, 1.0)


def test_normalize():
    d = np.array([3.0, 6.0]); U.normalize(d, 3); np.testing.assert_allclose(d, [1.0, 2.0])


def test_bad_solver_types_and_momentum():
    with pytest.raises(SolverError, match='unknown solver type "Lion"'):
        U.make_rule(caffe_pb2.SolverParameter(type="Lion"))
    with pytest.raises(SolverError, match="AdaGrad does not use momentum"):
        U.make_rule(caffe_pb2.SolverParameter(type="AdaGrad", momentum=0.9))
    with pytest.raises(SolverError, match="RMSProp"):
        U.make_rule(caffe_pb2.SolverParameter(type="RMSProp", momentum=0.9))
    assert isinstance(U.make_rule(caffe_pb2.SolverParameter(type="adam")), U.Adam)


def test_history_flatten_order_matches_solverstate():
    hist = [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]]
    flat = U.flatten_history(hist)
    assert flat == ["a0", "b0", "c0", "a1", "b1", "c1"]
    assert U.unflatten_history(flat, 3, 2) == hist


def test_float32_stays_float32():
    rule = U.Adam(momentum=0.9)
    d = np.ones(3, np.float32)
    h = U.new_history(rule, (3,), np, np.float32)
    rule.compute_update(d, h, 0.1, 0)
    assert d.dtype == np.float32 and h[1].dtype == np.float32
