"""Every real solver prototxt from BVLC Caffe and Poseidon (../shared/conformance) is accepted:
its type and lr policy are known, and the rate schedule evaluates to the documented values."""
import math

import pytest

from poseidon_cli import config
from poseidon_cli.solver.lr_policy import LrSchedule, learning_rate
from poseidon_cli.solver.updates import make_rule


def solver_files(root):
    return sorted(p for p in root.rglob("*solver*.prototxt"))


def test_all_conformance_solvers_are_accepted(conformance_dir):
    files = solver_files(conformance_dir)
    assert files, "no solver prototxts found"
    kinds = set()
    for path in files:
        p = config.load_solver_param(path)
        rule = make_rule(p, str(path))
        LrSchedule(p, where=str(path))
        kinds.add(rule.type)
        rate = learning_rate(p, 0, 0)
        assert math.isfinite(rate) and rate >= 0, path
    assert {"SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"} <= kinds


def test_lenet_inv_schedule_reference_value(conformance_dir):
    path = conformance_dir / "bvlc" / "examples" / "mnist" / "lenet_solver.prototxt"
    if not path.exists():
        pytest.skip("BVLC lenet_solver.prototxt not in the conformance set")
    p = config.load_solver_param(path)
    assert learning_rate(p, 10000) == pytest.approx(0.01 * 2 ** -0.75, rel=1e-5)


def test_multistep_solver_steps_at_its_stepvalues(conformance_dir):
    path = conformance_dir / "bvlc" / "examples" / "mnist" / "lenet_multistep_solver.prototxt"
    if not path.exists():
        pytest.skip("lenet_multistep_solver.prototxt not in the conformance set")
    p = config.load_solver_param(path)
    sched = LrSchedule(p)
    rates = [sched.rate(i) for i in range(p.max_iter)]
    for k, sv in enumerate(p.stepvalue):
        assert rates[sv] == pytest.approx(p.base_lr * p.gamma ** (k + 1), rel=1e-6)
        assert rates[sv - 1] == pytest.approx(p.base_lr * p.gamma ** k, rel=1e-6)
