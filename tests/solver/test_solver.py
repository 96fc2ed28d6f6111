"""The training loop on Caffe's least-squares problem (InnerProduct + EuclideanLoss), against a
reference trajectory computed here with hand-derived gradients and the update formulas of
BVLC solver.cpp and sgd_solvers.cpp: every solver type, lr policies, lr_mult/decay_mult, clip_gradients,
iter_size, resume, average_loss and the log lines."""
import math
import re

import numpy as np
import pytest

from poseidon_cli.errors import SolverError
from poseidon_cli.solver import get_solver

BASE = """type: "{kind}" base_lr: {lr} lr_policy: "{policy}" gamma: 0.5 stepsize: 2 power: 0.75
momentum: {mom} weight_decay: 0.25 display: 1 max_iter: {iters} random_seed: 1701
snapshot_after_train: false {extra}"""


def caffe_lr(policy, base, it, gamma=0.5, stepsize=2, power=0.75, max_iter=10, stepvalue=()):
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (it // stepsize)
    if policy == "exp":
        return base * gamma ** it
    if policy == "inv":
        return base * (1 + gamma * it) ** -power
    if policy == "poly":
        return base * (1 - it / max_iter) ** power
    if policy == "sigmoid":
        return base / (1 + math.exp(-gamma * (it - stepsize)))
    if policy == "multistep":
        return base * gamma ** sum(1 for s in stepvalue if it >= s)
    raise AssertionError(policy)


def reference(kind, X, Y, w, b, p, iters, batch, policy, iter_size=1, clip=-1.0, stepvalue=()):
    """Caffe's update loop for y = X w^T + b, loss = |y - t|^2 / (2B), written out from the formulas."""
    w, b = w.copy(), b.copy()
    mu, wd, delta, rho, mu2 = p.momentum, p.weight_decay, p.delta, p.rms_decay, p.momentum2
    hist = {k: [np.zeros_like(w), np.zeros_like(b)] for k in ("v", "h", "s", "m")}
    pos = 0
    for it in range(iters):
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for _ in range(iter_size):
            idx = (pos + np.arange(batch)) % len(X)
            pos = (pos + batch) % len(X)
            r = X[idx] @ w.T + b - Y[idx]              # (B, 1)
            gw += r.T @ X[idx] / batch
            gb += r.sum(axis=0) / batch
        if clip >= 0:
            norm = math.sqrt((gw ** 2).sum() + (gb ** 2).sum())
            if norm > clip:
                gw, gb = gw * clip / norm, gb * clip / norm
        gw, gb = gw / iter_size, gb / iter_size
        rate = caffe_lr(policy, p.base_lr, it, p.gamma, p.stepsize, p.power, p.max_iter, stepvalue)
        new = []
        for j, (data, g, lr_mult, decay_mult) in enumerate(((w, gw, 1.0, 1.0), (b, gb, 2.0, 0.0))):
            g = g + wd * decay_mult * data
            r_ = rate * lr_mult
            if kind == "SGD":
                hist["v"][j] = mu * hist["v"][j] + r_ * g
                step = hist["v"][j]
            elif kind == "Nesterov":
                old = hist["v"][j]
                hist["v"][j] = mu * old + r_ * g
                step = (1 + mu) * hist["v"][j] - mu * old
            elif kind == "AdaGrad":
                hist["h"][j] = hist["h"][j] + g * g
                step = r_ * g / (np.sqrt(hist["h"][j]) + delta)
            elif kind == "RMSProp":
                hist["h"][j] = rho * hist["h"][j] + (1 - rho) * g * g
                step = r_ * g / (np.sqrt(hist["h"][j]) + delta)
            elif kind == "AdaDelta":
                hist["h"][j] = mu * hist["h"][j] + (1 - mu) * g * g
                u = g * np.sqrt((hist["s"][j] + delta) / (hist["h"][j] + delta))
                hist["s"][j] = mu * hist["s"][j] + (1 - mu) * u * u
                step = r_ * u
            elif kind == "Adam":
                t = it + 1
                hist["m"][j] = mu * hist["m"][j] + (1 - mu) * g
                hist["v"][j] = mu2 * hist["v"][j] + (1 - mu2) * g * g
                step = r_ * math.sqrt(1 - mu2 ** t) / (1 - mu ** t) * hist["m"][j] / (
                    np.sqrt(hist["v"][j]) + delta)
            new.append(data - step)
        w, b = new
    return w, b, hist


def make(kit, X, Y, kind="SGD", lr=0.1, policy="fixed", mom=0.5, iters=4, batch=8, extra="",
         **kw):
    q = kit.Quiet()
    p = kit.solver_param(BASE.format(kind=kind, lr=lr, policy=policy, mom=mom, iters=iters,
                                     extra=extra), kit.ls_net_param(batch))
    s = get_solver(p, dtype=np.float64, log=q.log, **kw)
    kit.Feeder(s.net, X, Y, batch)
    return s, q


RULES = [("SGD", 0.1, 0.5), ("Nesterov", 0.1, 0.5), ("AdaGrad", 0.1, 0.0), ("RMSProp", 0.05, 0.0),
         ("AdaDelta", 1.0, 0.95), ("Adam", 0.05, 0.9)]


@pytest.mark.parametrize("kind,lr,mom", RULES)
def test_each_rule_follows_the_reference_trajectory(kit, ls_data, kind, lr, mom):
    X, Y = ls_data
    s, _ = make(kit, X, Y, kind, lr, "inv", mom, iters=5)
    w0, b0 = s.net.params["ip"][0].data.copy(), s.net.params["ip"][1].data.copy()
    s.solve()
    w, b, _ = reference(kind, X, Y, w0, b0, s.param, 5, 8, "inv")
    assert s.iter == 5
    np.testing.assert_allclose(s.net.params["ip"][0].data, w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.net.params["ip"][1].data, b, rtol=1e-9, atol=1e-12)
    assert not np.allclose(w, w0)  # it really moved


@pytest.mark.parametrize("policy", ["fixed", "step", "exp", "inv", "poly", "sigmoid", "multistep"])
def test_each_lr_policy_in_the_loop(kit, ls_data, policy):
    X, Y = ls_data
    extra = "stepvalue: 1 stepvalue: 3" if policy == "multistep" else ""
    s, q = make(kit, X, Y, "SGD", 0.2, policy, 0.5, iters=5, extra=extra)
    w0, b0 = s.net.params["ip"][0].data.copy(), s.net.params["ip"][1].data.copy()
    s.solve()
    w, b, _ = reference("SGD", X, Y, w0, b0, s.param, 5, 8, policy, stepvalue=(1, 3))
    np.testing.assert_allclose(s.net.params["ip"][0].data, w, rtol=1e-9)
    np.testing.assert_allclose(s.net.params["ip"][1].data, b, rtol=1e-9)
    logged = [float(m.group(2)) for m in (re.search(r"Iteration (\d+), lr = (\S+)", l)
                                            for l in q.lines()) if m]
    want = [caffe_lr(policy, s.param.base_lr, i, s.param.gamma, 2, s.param.power, 5, (1, 3))
            for i in range(5)]
    np.testing.assert_allclose(logged, want, rtol=1e-5)


def test_clip_gradients_in_the_loop(kit, ls_data):
    X, Y = ls_data
    s, q = make(kit, X, Y, "SGD", 0.1, "fixed", 0.5, iters=3, extra="clip_gradients: 0.1")
    w0, b0 = s.net.params["ip"][0].data.copy(), s.net.params["ip"][1].data.copy()
    s.solve()
    w, b, _ = reference("SGD", X, Y, w0, b0, s.param, 3, 8, "fixed", clip=0.1)
    np.testing.assert_allclose(s.net.params["ip"][0].data, w, rtol=1e-9)
    assert any("Gradient clipping: scaling down gradients" in l for l in q.lines())


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_iter_size_k_equals_batch_k_times_b(kit, ls_data, kind):
    X, Y = ls_data
    small, _ = make(kit, X, Y, kind, 0.05, "fixed", 0.9, iters=4, batch=2, extra="iter_size: 2")
    big, _ = make(kit, X, Y, kind, 0.05, "fixed", 0.9, iters=4, batch=4)
    # same initial weights (same seed), then different batching of the same records
    np.testing.assert_array_equal(small.net.params["ip"][0].data, big.net.params["ip"][0].data)
    w0, b0 = small.net.params["ip"][0].data.copy(), small.net.params["ip"][1].data.copy()
    small.step(4)
    big.step(4)
    for j in range(2):
        np.testing.assert_allclose(small.net.params["ip"][j].data, big.net.params["ip"][j].data,
                                   rtol=1e-10, atol=1e-12)
    # the displayed loss is the mean over the iter_size passes = the big batch's loss
    assert small.smoothed_loss == pytest.approx(big.smoothed_loss, rel=1e-10)
    w, b, _ = reference(kind, X, Y, w0, b0, small.param, 4, 2, "fixed", iter_size=2)
    np.testing.assert_allclose(small.net.params["ip"][0].data, w, rtol=1e-9)


@pytest.mark.parametrize("kind,policy", [("SGD", "multistep"), ("Nesterov", "step"),
                                         ("AdaDelta", "fixed"), ("Adam", "inv")])
def test_resume_is_exact(kit, ls_data, tmp_path, kind, policy):
    X, Y = ls_data
    mom = 0.9 if kind != "AdaDelta" else 0.95
    lr = 1.0 if kind == "AdaDelta" else 0.05
    extra = f'stepvalue: 2 stepvalue: 5 snapshot_prefix: "{tmp_path}/ls"'
    full, _ = make(kit, X, Y, kind, lr, policy, mom, iters=7, extra=extra)
    full.solve()

    first, _ = make(kit, X, Y, kind, lr, policy, mom, iters=7, extra=extra)
    first.step(3)
    state = first.snapshot()
    assert state == f"{tmp_path}/ls_iter_3.solverstate"
    assert (tmp_path / "ls_iter_3.caffemodel").is_file()

    resumed, _ = make(kit, X, Y, kind, lr, policy, mom, iters=7, extra=extra)
    resumed.solve(resume_file=state)
    assert resumed.iter == 7
    for j in range(2):
        np.testing.assert_allclose(resumed.net.params["ip"][j].data, full.net.params["ip"][j].data,
                                   rtol=1e-12, atol=1e-14)
    for hr, hf in zip(resumed.history, full.history):
        for a, b in zip(hr, hf):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert resumed.schedule.current_step == full.schedule.current_step


def test_average_loss_window(kit, ls_data):
    X, Y = ls_data
    s, q = make(kit, X, Y, "SGD", 0.1, "fixed", 0.0, iters=5, batch=2, extra="average_loss: 3")
    per_iter = []
    orig = s.forward_backward
    s.forward_backward = lambda: per_iter.append(orig()) or per_iter[-1]
    s.step(5)
    # step() (not solve()) logs exactly one "Iteration N, loss = X" line per displayed iteration
    displayed = [float(m.group(1)) for m in (re.search(r"\] Iteration \d+, loss = (\S+)$", l)
                                             for l in q.lines()) if m]
    want = [np.mean(per_iter[max(0, i - 2):i + 1]) for i in range(5)]
    np.testing.assert_allclose(displayed, want, rtol=1e-5)


def test_log_lines_parse_like_caffe(kit, ls_data):
    X, Y = ls_data
    s, q = make(kit, X, Y, "SGD", 0.1, "fixed", 0.5, iters=2)
    s.solve()
    lines = q.lines()
    prefix = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ [\w.]+:\d+\] ")
    assert all(prefix.match(l) for l in lines)
    body = [prefix.sub("", l) for l in lines]
    assert body.index("Solving least_squares") < body.index("Learning Rate Policy: fixed")
    first = body.index("Learning Rate Policy: fixed") + 1
    assert re.fullmatch(r"Iteration 0, loss = \S+", body[first])
    assert re.fullmatch(r"Iteration 0, \S+ iter/s, \S+s/1 iters", body[first + 1])
    # parse_log.sh: awk field 9 of a ", loss = " line (4 prefix tokens) is the loss
    loss_line = next(l for l in lines if ", loss = " in l)
    assert loss_line.split()[8] == body[first].split()[-1]
    out = [l for l in body if "Train net output #0" in l]
    assert len(out) == 2 and re.fullmatch(r"    Train net output #0: loss = (\S+) \(\* 1 = \1 loss\)", out[0])
    assert body[-1] == "Optimization Done." and body[-2].startswith("Iteration 2, loss = ")
    # parse_log.sh takes the value after ", lr = " from awk field 9 of the full line
    lr_line = next(l for l in lines if ", lr = " in l)
    assert lr_line.split()[8] == "0.1"


def test_same_seed_same_run(kit, ls_data):
    X, Y = ls_data
    a, _ = make(kit, X, Y, iters=3)
    b, _ = make(kit, X, Y, iters=3)
    a.solve(); b.solve()
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_nan_loss_stops_with_iteration_and_last_snapshot(kit, ls_data, tmp_path):
    X, Y = ls_data
    s, _ = make(kit, X, Y, "SGD", 10.0, "fixed", 0.9, iters=200,
                extra=f'snapshot: 2 snapshot_prefix: "{tmp_path}/boom"')
    with pytest.raises(SolverError, match=r"loss became (nan|inf) at iteration \d+; last snapshot: "
                                          r".*boom_iter_\d+\.solverstate"):
        s.solve()


def test_action_stop_and_snapshot(kit, ls_data, tmp_path):
    X, Y = ls_data
    requests = iter(["none", "snapshot", "none", "stop"])
    s, q = make(kit, X, Y, iters=10, extra=f'snapshot_prefix: "{tmp_path}/sig"',
                action_fn=lambda: next(requests, "none"))
    s.param.snapshot_after_train = True
    s.solve()
    assert s.iter == 4
    assert (tmp_path / "sig_iter_2.solverstate").is_file()
    assert (tmp_path / "sig_iter_4.solverstate").is_file()  # snapshot_after_train still applies
    assert any(l.endswith("Optimization stopped early.") for l in q.lines())


def test_sync_is_called_at_caffes_points_and_replaces_the_update(kit, ls_data):
    """A Sync sees each of the iter_size passes (the last flagged), the loss reduction, then the
    update instead of the local one; pycaffe's callbacks keep their places around them."""
    from poseidon_cli.solver.sync import LocalSync, Reduction
    X, Y = ls_data
    seen = []

    class Recording(LocalSync):
        def bind(self, solver): seen.append(("bind", solver.iter))
        def begin_pass(self, last): seen.append(("pass", last))
        def mean(self, values, what, net_id=0):
            seen.append(("mean", what))
            return [2 * v for v in values]          # what the solver logs is what mean returned
        def update(self, solver): seen.append(("update", solver.iter))

    s, q = make(kit, X, Y, iters=2, extra="iter_size: 2", sync=Recording())
    s.add_callback(lambda: seen.append(("start", s.iter)), lambda: seen.append(("grads", s.iter)))
    w0 = s.net.params["ip"][0].data.copy()
    plain, q_plain = make(kit, X, Y, iters=2, extra="iter_size: 2")
    s.step(2)
    plain.step(2)
    it = [("start", 0), ("pass", False), ("pass", True), ("mean", Reduction.LOSS),
          ("mean", Reduction.TRAIN_OUTPUTS), ("grads", 0), ("update", 0)]
    assert seen == [("bind", 0)] + it + [(e[0], 1) if e[0] in ("start", "grads", "update") else e
                                         for e in it]
    np.testing.assert_array_equal(s.net.params["ip"][0].data, w0)  # the sync replaced the update
    # same weights and data at iteration 0: the logged loss is the reduced one, 2x the local loss
    loss0 = lambda lines: float(next(l for l in lines if "Iteration 0, loss = " in l).rsplit("= ", 1)[1])
    assert loss0(q_plain.lines()) > 0
    assert loss0(q.lines()) == pytest.approx(2 * loss0(q_plain.lines()), rel=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("kind,lr,mom", [("SGD", 0.1, 0.5), ("Adam", 0.05, 0.9)])
def test_cupy_solver_matches_numpy(kit, ls_data, tmp_path, kind, lr, mom):
    from poseidon_cli import backend
    if not backend.gpu_available():
        pytest.skip("no GPU")
    import cupy
    X, Y = ls_data
    extra = f'snapshot_prefix: "{tmp_path}/g"'
    cpu, _ = make(kit, X, Y, kind, lr, "inv", mom, iters=4, extra=extra)
    gpu, _ = make(kit, X, Y, kind, lr, "inv", mom, iters=4, extra=extra, xp=cupy)
    cpu.solve()
    gpu.solve()
    for j in range(2):
        np.testing.assert_allclose(cupy.asnumpy(gpu.net.params["ip"][j].data),
                                   cpu.net.params["ip"][j].data, rtol=1e-9, atol=1e-12)
    state = gpu.snapshot()
    again, _ = make(kit, X, Y, kind, lr, "inv", mom, iters=4, extra=extra, xp=cupy)
    again.restore(state)
    np.testing.assert_allclose(cupy.asnumpy(again.history[0][0]), cupy.asnumpy(gpu.history[0][0]))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_nan_loss_error_carries_the_syncs_hint(kit, ls_data):
    """One node: Caffe's advice; a synchronisation that can cause divergence (staleness) says so."""
    X, Y = ls_data
    s, _ = make(kit, X, Y, "SGD", 10.0, "fixed", 0.9, iters=200)
    with pytest.raises(SolverError) as exc:
        s.solve()
    assert "lower base_lr or check the data" in str(exc.value)
    s, _ = make(kit, X, Y, "SGD", 10.0, "fixed", 0.9, iters=200)
    s.sync.divergence_hint = lambda: "staleness 3 with 8 workers makes gradients up to 3 clocks old"
    with pytest.raises(SolverError) as exc:
        s.solve()
    assert "staleness 3 with 8 workers" in str(exc.value) and "check the data" not in str(exc.value)


def test_ps_sync_hint_names_staleness_and_workers():
    from poseidon_cli.distributed.ps_sync import PSSync
    sync = PSSync()
    assert sync.divergence_hint() == ""            # not attached to a cluster
    sync.client = type("C", (), {"staleness": 2})()
    sync.solver = type("S", (), {"context": type("X", (), {"world_size": 4})()})()
    assert sync.divergence_hint().startswith("staleness 2 with 4 workers")
    sync.client.staleness = 0
    assert sync.divergence_hint() == ""
