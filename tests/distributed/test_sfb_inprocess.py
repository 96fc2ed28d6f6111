"""Sufficient-factor broadcasting inside whole in-process clusters (threads, LocalTransport shards,
LocalFactorHub peers): --svb on equals --svb off, replicas stay identical, SSP bound, snapshots."""
import os
import threading

import numpy as np
import pytest

import inprocess
from cluster_helpers import read_caffemodel, rel_diff
from poseidon_cli import config
from poseidon_cli.distributed import sfb
from poseidon_cli.errors import ClusterError
from poseidon_cli.layers.base import RunContext
from poseidon_cli.solver.log import TrainLog

# two large-ish InnerProduct layers (256 -> 512 -> 512) and a small one (512 -> 10)
NET = """
name: "mlp"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{train}" batch_size: {batch} backend: LMDB shared_file_system: true }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.00390625 }}
  data_param {{ source: "{test}" batch_size: 20 backend: LMDB shared_file_system: true }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 512 weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  param {{ lr_mult: 1 decay_mult: 2 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 512 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "ip2" top: "ip2" }}
layer {{ name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3"
  param {{ lr_mult: 0.5 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip3" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip3" bottom: "label" top: "acc" include {{ phase: TEST }} }}
"""

SOLVER = """
net: "net.prototxt"
base_lr: {lr} lr_policy: "step" gamma: 0.5 stepsize: 7
momentum: 0.9 weight_decay: 0.001 type: "{type}"
max_iter: {iters} display: 5 random_seed: 7
test_iter: 4 test_interval: 10 test_initialization: false
snapshot: {snapshot} snapshot_after_train: true snapshot_prefix: "snap/mlp"
solver_mode: CPU
"""

SFB_LAYERS = ("ip1", "ip2", "ip3")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from poseidon_cli.tools.digits import write_digits
    return write_digits(tmp_path_factory.mktemp("digits") / "d", size=16, test_count=200)


def write_job(folder, paths, batch=4, solver_type="SGD", iters=20, snapshot=0):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "net.prototxt"), "w") as fh:
        fh.write(NET.format(train=paths["train"], test=paths["test"], batch=batch))
    path = os.path.join(folder, "solver.prototxt")
    lr = 0.05 if solver_type == "SGD" else 0.002
    with open(path, "w") as fh:
        fh.write(SOLVER.format(type=solver_type, iters=iters, lr=lr, snapshot=snapshot))
    return str(path)


class WorkerView:
    """One worker as the tests below read it: its Solver's net, its PSSync's plan and exchange,
    per-parameter names and PS bytes (from the ParamSyncs)."""

    def __init__(self, solver, worker=None):
        self.solver, self.worker = solver, worker
        sync = solver.sync
        self.net, self.sfb_plan, self.sfb_params = solver.net, sync.sfb_plan, sync.sfb_params
        self.ps_names = [p.ps_name for p in sync.syncs]
        self.setup_sfb = sync.setup_sfb
        self.client = worker.client if worker is not None else None

    @property
    def sfb(self):
        return self.solver.sync.sfb

    @property
    def wfbp(self):
        syncs = self.solver.sync.syncs
        return type("PSBytes", (), {"bytes_pushed": [p.bytes_sent for p in syncs],
                                    "bytes_pulled": [p.bytes_received for p in syncs]})()


def DistributedSolver(param, *, solver_path, log, context, svb, num_shards, deadline_s=30.0):
    """A Solver with a PSSync (inprocess.make_solver), seen through a WorkerView."""
    return WorkerView(inprocess.make_solver(param, solver_path, context.rank, context.world_size,
                                            shards=num_shards, svb=svb, deadline_s=deadline_s))


def train_cluster(solver_path, workers, svb, shards=2, staleness=0, resume=None, slow=None,
                  overlap=True, deadline_s=30.0):
    """Run a whole cluster in threads (inprocess.py); ``slow``: {worker: seconds} slept before
    each iteration."""
    ws = inprocess.build_cluster(solver_path, workers, shards=shards, staleness=staleness,
                                 resume=resume, svb=svb, overlap=overlap, deadline_s=deadline_s,
                                 chunk_bytes=64 * 1024, slow=slow)
    views = [WorkerView(w.solver, w) for w in ws]
    views[0].initial = {n: np.array(b.data, dtype=np.float64).ravel()
                        for n, b in zip(views[0].ps_names, views[0].net.learnable_params)}
    inprocess.run_cluster(ws)
    return views


@pytest.mark.parametrize("solver_type", ["SGD", "Adam"])
def test_svb_on_equals_svb_off_and_replicas_are_identical(tmp_path, digits, solver_type):
    off = write_job(tmp_path / "off", digits, solver_type=solver_type)
    on = write_job(tmp_path / "on", digits, solver_type=solver_type)
    w_off = train_cluster(off, 2, "off")
    w_on = train_cluster(on, 2, "on")
    assert not w_off[0].sfb_params
    assert {w_on[0].ps_names[k] for k in w_on[0].sfb_params} == {f"{n}/0" for n in SFB_LAYERS}
    ref = read_caffemodel(tmp_path / "off/snap/mlp_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "on/snap/mlp_iter_20.caffemodel")
    assert sorted(ref) == sorted(got)
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    # training moved the SFB weights far beyond the tolerance (both runs start from worker 0's
    # filler values, the same seed)
    for name in SFB_LAYERS:
        assert rel_diff(got[f"{name}/0"], w_on[0].initial[f"{name}/0"]) > 1e-3, name
    # replicas: every parameter identical on every worker, SFB weights bit for bit
    for k, blob in enumerate(w_on[0].net.learnable_params):
        for other in w_on[1:]:
            np.testing.assert_array_equal(blob.data, other.net.learnable_params[k].data,
                                          err_msg=w_on[0].ps_names[k])
    # the layers' own weight-gradient GEMM was skipped: SFB weight diffs stay zero
    for k in w_on[0].sfb_params:
        assert not np.any(w_on[0].net.learnable_params[k].diff)
    # bytes: 4 rows x (512 + 256), (512 + 512), (10 + 512) float32 values per clock and peer
    rows = {r["param"]: r for r in w_on[1].sfb.layer_stats(20)}
    for name, (m, n) in {"ip1": (512, 256), "ip2": (512, 512), "ip3": (10, 512)}.items():
        assert rows[f"{name}/0"]["bytes_sent"] == 20 * 4 * (m + n) * 4
        assert rows[f"{name}/0"]["bytes_received"] == 20 * 4 * (m + n) * 4
        assert rows[f"{name}/0"]["model_bytes_per_iteration"] == 2 * 4 * 1 * (m + n) * 4
    # nothing of the SFB weights went through the parameter server
    for k in w_on[1].sfb_params:
        assert w_on[1].wfbp.bytes_pushed[k] == 0 and w_on[1].wfbp.bytes_pulled[k] == 0


def test_three_workers_no_overlap_match_ps_and_each_other(tmp_path, digits):
    off = write_job(tmp_path / "off", digits, iters=10)
    on = write_job(tmp_path / "on", digits, iters=10)
    train_cluster(off, 3, "off", shards=3)
    w_on = train_cluster(on, 3, "on", shards=3, overlap=False)
    ref = read_caffemodel(tmp_path / "off/snap/mlp_iter_10.caffemodel")
    got = read_caffemodel(tmp_path / "on/snap/mlp_iter_10.caffemodel")
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    for k in w_on[0].sfb_params:
        for other in w_on[1:]:
            np.testing.assert_array_equal(w_on[0].net.learnable_params[k].data,
                                          other.net.learnable_params[k].data)


def test_snapshot_holds_sfb_history_and_resumes_on_one_node_and_on_the_cluster(tmp_path, digits):
    """A --svb on snapshot holds the SFB layers' local history: resuming it with --svb on equals
    resuming it with --svb off (history through the PS), and a single-node Solver restores it."""
    half = write_job(tmp_path / "half", digits, iters=10)
    train_cluster(half, 2, "on")
    first = tmp_path / "half/snap/mlp_iter_10.solverstate"
    state = config.load_solverstate(str(first))
    # momentum of every learnable param is in the file (SGD: one slot each), SFB weights' included
    assert len(state.history) == 6
    ip2 = np.array(state.history[2].data)
    assert ip2.size == 512 * 512 and np.abs(ip2).max() > 0
    on = write_job(tmp_path / "on", digits, iters=16)
    off = write_job(tmp_path / "off", digits, iters=16)
    train_cluster(on, 2, "on", resume=str(first))
    train_cluster(off, 2, "off", resume=str(first))
    ref = read_caffemodel(tmp_path / "off/snap/mlp_iter_16.caffemodel")
    got = read_caffemodel(tmp_path / "on/snap/mlp_iter_16.caffemodel")
    start = read_caffemodel(tmp_path / "half/snap/mlp_iter_10.caffemodel")
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    assert rel_diff(ref["ip2/0"], start["ip2/0"]) > 1e-3
    from poseidon_cli.solver.solver import Solver
    single = Solver(config.load_solver_param(on), solver_path=on, log=TrainLog(streams=[]))
    single.restore(str(first))
    assert single.iter == 10
    np.testing.assert_array_equal(np.asarray(single.history[2][0]).ravel(), ip2)


def _pair(tmp_path, digits, deadline_s=5.0):
    job = write_job(tmp_path / "pair", digits, iters=3)
    param = config.load_solver_param(job)
    hub = sfb.LocalFactorHub()
    solvers = []
    for r in range(2):
        s = DistributedSolver(param, solver_path=job, log=TrainLog(streams=[]),
                              context=RunContext(client_id=r, num_clients=2), svb="on", num_shards=2,
                              deadline_s=deadline_s)
        hub.register(r, s.setup_sfb("job", hub.transport(), chunk_bytes=4096))
        solvers.append(s)
    return param, solvers


def test_update_waits_for_every_peer_then_equals_one_sgd_step_on_the_mean(tmp_path, digits):
    """The SSP bound at s = 0: worker 0 cannot pass the forward of an SFB layer at clock 1 before
    worker 1's factors of clock 0 are in; the update then is lr * (mean of both workers'
    top_diff^T bottom + weight_decay * decay_mult * W), computed here with numpy."""
    param, (s0, s1) = _pair(tmp_path, digits)
    s0.sfb.publish_initial()
    s1.sfb.install_initial()
    j = 1  # ip2: decay_mult 2
    li = s0.sfb_plan[j].layer_index
    k = s0.sfb_plan[j].param_index
    w0 = np.array(s0.net.learnable_params[k].data, dtype=np.float64)
    np.testing.assert_array_equal(w0, s1.net.learnable_params[k].data)
    grads = []
    for s in (s0, s1):
        s.net.forward_backward()
        top, bottom = s.net.top_vecs[li][0], s.net.bottom_vecs[li][0]
        grads.append(np.asarray(top.diff, np.float64).reshape(4, -1).T
                     @ np.asarray(bottom.data, np.float64).reshape(4, -1))
    s0.sfb.capture(li, 0)
    done = threading.Event()
    t = threading.Thread(target=lambda: (s0.sfb.ensure(li, 1), done.set()))
    t.start()
    assert not done.wait(0.4)           # worker 1's factors of clock 0 are missing
    assert s0.sfb.applied[j] == 0
    s1.sfb.capture(li, 0)
    assert done.wait(5.0)
    t.join()
    s1.sfb.ensure(li, 1)
    expect = w0 - param.base_lr * ((grads[0] + grads[1]) / 2 + param.weight_decay * 2 * w0)
    np.testing.assert_allclose(s0.net.learnable_params[k].data, expect, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(s0.net.learnable_params[k].data, s1.net.learnable_params[k].data)
    assert s0.sfb.applied[j] == 1 and s0.sfb.applied[0] == 0  # only the layer asked for
    for s in (s0, s1):
        s.sfb.close()


def test_staleness_one_lets_a_worker_run_one_clock_ahead_only(tmp_path, digits):
    """s = 1: at clock 1 nothing needs to be applied yet; at clock 2 clock 0 of every peer does."""
    _, (s0, s1) = _pair(tmp_path, digits)
    li = s0.sfb_plan[0].layer_index
    s0.net.forward_backward()
    s0.sfb.capture(li, 0)
    s0.sfb.ensure(li, 1 - 1)            # clock 1 with s = 1: returns at once
    s0.net.forward_backward()
    s0.sfb.capture(li, 1)
    with pytest.raises(ClusterError, match="layer 'ip1' for clock 0 from worker 1 within"):
        s0.sfb.deadline_s = 0.3
        s0.sfb.ensure(li, 2 - 1)        # clock 2 with s = 1 needs clock 0 of worker 1
    for s in (s0, s1):
        s.sfb.close()


def test_finished_factor_sends_are_not_kept_until_flush(tmp_path, digits):
    """Every clock sends each SFB layer's factors to every peer; the exchange keeps only the sends
    still in flight (a long run kept every finished future: memory growing with the run's length)."""
    _, (s0, s1) = _pair(tmp_path, digits)
    li = s0.sfb_plan[0].layer_index
    for clock in range(12):
        s0.net.forward_backward()
        s0.sfb.capture(li, clock)
        for f in list(s0.sfb._sends):
            f.result(5)
    s0.net.forward_backward()
    s0.sfb.capture(li, 12)
    assert len(s0.sfb._sends) == 1        # the newest send to the one peer; 13 before the fix
    s0.sfb.flush()
    for s in (s0, s1):
        s.sfb.close()


def test_staleness_training_keeps_replicas_identical(tmp_path, digits):
    job = write_job(tmp_path / "s1", digits, iters=8)
    w = train_cluster(job, 2, "on", staleness=1, slow={1: 0.02})
    for k in w[0].sfb_params:
        np.testing.assert_array_equal(w[0].net.learnable_params[k].data, w[1].net.learnable_params[k].data)


def test_missing_peer_factors_time_out_naming_the_peer(tmp_path, digits):
    """A peer that never sends its factors: the wait ends at the deadline naming it."""
    job = write_job(tmp_path / "dead", digits, iters=3)
    param = config.load_solver_param(job)
    s = DistributedSolver(param, solver_path=job, log=TrainLog(streams=[]),
                          context=RunContext(client_id=0, num_clients=3), svb="on", num_shards=3,
                          deadline_s=0.5)
    hub = sfb.LocalFactorHub()
    ex = s.setup_sfb("job", hub.transport())
    hub.register(0, ex)
    sink = type("Sink", (), {"receive": lambda self, msg: None})()
    hub.register(1, sink)
    hub.register(2, sink)
    s.net.forward_backward()
    li = s.sfb_plan[0].layer_index
    ex.capture(li, 0)
    with pytest.raises(ClusterError, match=r"layer 'ip1' for clock 0 from worker 1, worker 2 within"):
        ex.ensure(li, 1)
    ex.close()
