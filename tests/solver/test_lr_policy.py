"""Learning-rate policies against the closed forms written out here (BVLC sgd_solver.cpp GetLearningRate)."""
import math

import pytest

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import SolverError
from poseidon_cli.solver.lr_policy import LrSchedule, learning_rate, multistep_index


def sp(**kw):
    p = caffe_pb2.SolverParameter()
    for k, v in kw.items():
        if k == "stepvalue":
            p.stepvalue.extend(v)
        else:
            setattr(p, k, v)
    return p


def test_fixed():
    p = sp(lr_policy="fixed", base_lr=0.25)
    assert [learning_rate(p, i) for i in (0, 7, 10 ** 6)] == [0.25] * 3


def test_step():
    p = sp(lr_policy="step", base_lr=0.5, gamma=0.1, stepsize=3)
    got = [learning_rate(p, i) for i in range(8)]
    want = [0.5] * 3 + [0.05] * 3 + [0.005] * 2
    assert got == pytest.approx(want, rel=1e-6)


def test_exp():
    p = sp(lr_policy="exp", base_lr=0.5, gamma=0.9)
    for i in range(6):
        assert learning_rate(p, i) == pytest.approx(0.5 * 0.9 ** i, rel=1e-6)


def test_inv_lenet_reference_value():
    p = sp(lr_policy="inv", base_lr=0.01, gamma=1e-4, power=0.75)
    assert learning_rate(p, 0) == pytest.approx(0.01)
    # Reference value from the LeNet solver: 0.01 * 2^-0.75 at iteration 10000
    assert learning_rate(p, 10000) == pytest.approx(0.005946, rel=1e-4)


def test_poly_and_sigmoid():
    p = sp(lr_policy="poly", base_lr=0.1, power=2.0, max_iter=10)
    assert [learning_rate(p, i) for i in (0, 5, 10)] == pytest.approx([0.1, 0.025, 0.0])
    q = sp(lr_policy="sigmoid", base_lr=1.0, gamma=-0.5, stepsize=4)
    assert learning_rate(q, 4) == pytest.approx(0.5)
    assert learning_rate(q, 6) == pytest.approx(1.0 / (1.0 + math.exp(1.0)), rel=1e-6)


def test_multistep_counter_steps_once_per_iteration():
    p = sp(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[2, 2, 5])
    sched = LrSchedule(p)
    rates = [sched.rate(i) for i in range(8)]
    # iteration 2 reaches the first step, iteration 3 the duplicate one, iteration 5 the third
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.25, 0.125, 0.125, 0.125]
    assert sched.current_step == 3
    # the stateless form (parameter server) agrees iteration by iteration
    assert [learning_rate(p, i) for i in range(8)] == rates
    assert [multistep_index(p, i) for i in range(8)] == [0, 0, 1, 2, 2, 3, 3, 3]


def test_multistep_resumes_from_saved_counter():
    p = sp(lr_policy="multistep", base_lr=1.0, gamma=0.1, stepvalue=[3])
    sched = LrSchedule(p, current_step=1)
    assert sched.rate(4) == pytest.approx(0.1)


@pytest.mark.parametrize("policy", ["", "cosine"])
def test_unknown_policy_is_one_line_error(policy):
    with pytest.raises(SolverError, match="lr_policy"):
        LrSchedule(sp(lr_policy=policy, base_lr=1))


def test_step_needs_stepsize():
    with pytest.raises(SolverError, match="stepsize"):
        LrSchedule(sp(lr_policy="step", base_lr=1, gamma=0.1))
