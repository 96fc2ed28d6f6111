"""The Caffe update step exists once (issue 12): ``solver/step.py: apply_step``.

Part 1 checks ``apply_step`` itself against per-element scalar math written out here from Caffe's
formulas (caffe-semantics.md), including the ``scale`` (1/iter_size) factor, lr_mult/decay_mult and
L1, and that stepping a tensor in row blocks gives exactly the whole-tensor result.
"""
import math

import numpy as np
import pytest

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.solver import updates as U
from poseidon_cli.solver.step import apply_step, history_slot

RULES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
MOMENTUM = {"SGD": 0.9, "Nesterov": 0.9, "AdaGrad": 0.0, "RMSProp": 0.0, "AdaDelta": 0.95, "Adam": 0.9}


def solver_param(kind, **kw):
    fields = dict(type=kind, base_lr=0.05, momentum=MOMENTUM[kind], rms_decay=0.95, momentum2=0.999,
                  delta=1e-6, weight_decay=0.01, regularization_type="L2", lr_policy="fixed")
    fields.update(kw)
    return caffe_pb2.SolverParameter(**fields)


def scalar_step(kind, p, w, g, st, it, rate, decay, reg, scale):
    """One element of one Caffe iteration in plain float math; ``st`` holds that element's history."""
    g = g * scale
    if decay:
        g += decay * (w if reg == "L2" else (0.0 if w == 0 else math.copysign(1.0, w)))
    mom, d = p.momentum, p.delta
    if kind == "SGD":
        st[0] = mom * st[0] + rate * g
        step = st[0]
    elif kind == "Nesterov":
        old = st[0]
        st[0] = mom * old + rate * g
        step = (1 + mom) * st[0] - mom * old
    elif kind == "AdaGrad":
        st[0] += g * g
        step = rate * g / (math.sqrt(st[0]) + d)
    elif kind == "RMSProp":
        st[0] = p.rms_decay * st[0] + (1 - p.rms_decay) * g * g
        step = rate * g / (math.sqrt(st[0]) + d)
    elif kind == "AdaDelta":
        st[0] = mom * st[0] + (1 - mom) * g * g
        u = g * math.sqrt((st[1] + d) / (st[0] + d))
        st[1] = mom * st[1] + (1 - mom) * u * u
        step = rate * u
    else:  # Adam
        t = it + 1
        st[0] = mom * st[0] + (1 - mom) * g
        st[1] = p.momentum2 * st[1] + (1 - p.momentum2) * g * g
        step = rate * math.sqrt(1 - p.momentum2 ** t) / (1 - mom ** t) * st[0] / (math.sqrt(st[1]) + d)
    return w - step


def test_history_slot_names():
    assert [history_slot(j) for j in range(3)] == ["h0", "h1", "h2"]


@pytest.mark.parametrize("reg", ["L2", "L1"])
@pytest.mark.parametrize("kind", RULES)
def test_apply_step_matches_scalar_reference(kind, reg):
    p = solver_param(kind, regularization_type=reg)
    rule = U.make_rule(p)
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3))
    w[0, 0] = 0.0  # L1's sign(0) = 0
    history = U.new_history(rule, w.shape, np, w.dtype)
    ref_w = w.copy()
    ref_h = [[0.0] * rule.num_history for _ in range(w.size)]
    lr_mult, decay_mult, scale = 2.0, 0.5, 0.25
    for it in range(5):
        g = rng.normal(size=w.shape)
        rate = 0.05 * (0.5 ** it)  # any per-iteration rate: apply_step takes it as given
        flat_w = ref_w.reshape(-1)
        for e, ge in enumerate(g.reshape(-1)):
            flat_w[e] = scalar_step(kind, p, flat_w[e], ge, ref_h[e], it, rate * lr_mult,
                                    p.weight_decay * decay_mult, reg, scale)
        apply_step(rule, w, g.copy(), history, it=it, lr=rate, lr_mult=lr_mult,
                   decay=p.weight_decay, decay_mult=decay_mult, reg_type=reg, scale=scale)
        np.testing.assert_allclose(w, ref_w, rtol=1e-12, atol=1e-14)
        for j in range(rule.num_history):
            np.testing.assert_allclose(history[j].reshape(-1), [h[j] for h in ref_h],
                                       rtol=1e-12, atol=1e-14)


def test_apply_step_leaves_the_step_in_grad():
    p = solver_param("SGD", momentum=0.0, weight_decay=0.0)
    rule = U.make_rule(p)
    w = np.array([1.0, 2.0, 3.0])
    g = np.array([1.0, -2.0, 0.5])
    apply_step(rule, w, g, U.new_history(rule, w.shape, np, w.dtype), it=0, lr=0.1, lr_mult=1.0,
               decay=0.0, decay_mult=1.0, reg_type="L2")
    np.testing.assert_allclose(g, [0.1, -0.2, 0.05])
    np.testing.assert_allclose(w, [0.9, 2.2, 2.95])


@pytest.mark.parametrize("kind", RULES)
def test_row_blocks_give_the_whole_tensor_result_bit_for_bit(kind):
    p = solver_param(kind)
    rule = U.make_rule(p)
    rng = np.random.default_rng(11)
    w_whole = rng.normal(size=(7, 5)).astype(np.float32)
    w_blocks = w_whole.copy()
    h_whole = U.new_history(rule, w_whole.shape, np, np.float32)
    h_blocks = U.new_history(rule, w_whole.shape, np, np.float32)
    kw = dict(lr=0.05, lr_mult=1.0, decay=p.weight_decay, decay_mult=1.0, reg_type="L2")
    for it in range(4):
        g = rng.normal(size=w_whole.shape).astype(np.float32)
        apply_step(rule, w_whole, g.copy(), h_whole, it=it, **kw)
        gb = g.copy()
        for r in range(0, 7, 3):  # uneven blocks: 3, 3, 1 rows
            s = slice(r, r + 3)
            apply_step(rule, w_blocks[s], gb[s], [h[s] for h in h_blocks], it=it, **kw)
    assert w_blocks.tobytes() == w_whole.tobytes()
    for a, b in zip(h_blocks, h_whole):
        assert a.tobytes() == b.tobytes()
