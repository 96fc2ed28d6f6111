"""Workers (Solver + PSSync) over an in-process PS (threads + LocalTransport) against one node."""
import os

import numpy as np
import pytest

from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job
from inprocess import train_cluster as run_workers
from poseidon_cli import config
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver


def train_single(solver_path):
    param = config.load_solver_param(solver_path)
    s = Solver(param, solver_path=solver_path, log=TrainLog(streams=[]))
    s.initial = {f"{name}/{i}": np.array(b.data, dtype=np.float64).ravel()
                 for name, blobs in s.net.params.items() for i, b in enumerate(blobs)}
    s.solve()
    return s


def train_cluster(solver_path, workers, shards=2, staleness=0, stop_at=None, resume=None):
    """Train ``workers`` Workers in threads over ``shards`` in-process shards (``inprocess.py``).
    ``stop_at``: stop after that many iterations (snapshots as configured); ``resume``: start
    every worker from this .solverstate (as ``poseidon train --snapshot`` does)."""
    return run_workers(solver_path, workers, shards=shards, staleness=staleness, stop_at=stop_at,
                       resume=resume)


@pytest.mark.parametrize("solver_type,workers", [("SGD", 2), ("Adam", 2), ("SGD", 4), ("Adam", 4)])
def test_p_workers_equal_one_worker_of_p_times_the_batch(tmp_path, solver_type, workers):
    paths = make_digits(tmp_path)
    lr = 0.05 if solver_type == "SGD" else 0.01
    single = write_job(tmp_path / "single", paths, batch=4 * workers, solver_type=solver_type, lr=lr)
    dist = write_job(tmp_path / "dist", paths, batch=4, solver_type=solver_type, lr=lr)
    s1 = train_single(single)
    workers = train_cluster(dist, workers=workers)
    ref = read_caffemodel(tmp_path / "single/snap/tiny_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "dist/snap/tiny_iter_20.caffemodel")
    assert sorted(ref) == sorted(got)
    # training moved the weights well beyond the tolerance used below
    assert max(rel_diff(ref[k], s1.initial[k]) for k in ref) > 1e-2
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    # replicas identical (all communicated params)
    for k, blob in enumerate(workers[0].solver.net.learnable_params):
        if workers[0].sync.syncs[k].communicated:
            np.testing.assert_array_equal(blob.data, workers[1].solver.net.learnable_params[k].data)


def test_staleness_two_trains_and_finishes_every_clock(tmp_path):
    """With s=2 the trajectory differs from BSP (stale reads, timing-dependent), but training
    still lowers the test loss well below the starting one and every worker completes every
    clock; the bound itself is tested in tests/ps."""
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=4, iters=20)
    start = Solver(config.load_solver_param(dist), solver_path=dist, log=TrainLog(streams=[]))
    start.test(0)
    initial = start.last_test_scores[0]["loss"]
    workers = train_cluster(dist, workers=2, staleness=2)
    assert all(w.client.clock_value == 20 for w in workers)
    final = workers[0].solver.last_test_scores[0]["loss"]
    assert final < initial - 0.5, (initial, final)
    assert os.path.exists(tmp_path / "dist/snap/tiny_iter_20.caffemodel")


def test_test_phase_averages_over_workers(tmp_path):
    """Each of 2 workers tests half of test_iter; the logged mean is the mean over both."""
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=4, iters=10)
    workers = train_cluster(dist, workers=2)
    a, b = (w.solver.last_test_scores[0] for w in workers)
    assert a == b  # every worker logs the cluster-wide mean
    assert 0.0 <= a["acc"] <= 1.0


def test_each_parameter_has_one_sync_and_only_ps_ones_travel_once_per_iteration(tmp_path):
    """lr_mult 0 stays local (not in the PS layout, no bytes); a "ps" parameter is pushed once
    per iteration even with iter_size 2 and pulled once per clock plus the first pull; the stats
    file's rows are the ParamSyncs' counters."""
    import json
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=2, iters=6)
    net = tmp_path / "dist" / "net.prototxt"
    net.write_text(net.read_text().replace('convolution_param {', 'param { lr_mult: 1 } param { lr_mult: 0 } '
                                                                  'convolution_param {', 1))
    with open(dist, "a") as fh:
        fh.write("iter_size: 2\n")
    workers = train_cluster(dist, workers=2)
    for w in workers:
        syncs = w.sync.syncs
        assert [s.param for s in syncs] == list(w.solver.net.learnable)
        assert [(s.ps_name, s.scheme) for s in syncs] == [("conv1/0", "ps"), ("conv1/1", "local"),
                                                         ("ip1/0", "ps"), ("ip1/1", "ps")]
        names = [entry[0] for entry in w.sync.ps_layout()]
        assert "conv1/1" not in names and {"conv1/0", "ip1/0", "ip1/1"} <= set(names)
        for s in syncs:
            nbytes = s.param.blob.count * 4
            assert s.bytes_sent == (6 * nbytes if s.scheme == "ps" else 0), s.ps_name
            assert s.bytes_received == (7 * nbytes if s.scheme == "ps" else 0), s.ps_name
    path = str(tmp_path / "stats.json")
    workers[1].write_stats(path)
    doc = json.loads(open(path).read())
    assert doc["params"] == [s.row() for s in workers[1].sync.syncs]
    assert doc["params"][1] == {"param": "conv1/1", "communicated": False, "scheme": "local",
                                "bytes_sent": 0, "bytes_received": 0}
    assert len(doc["iterations"]) == 6


def test_wait_free_backprop_pushes_each_gradient_after_its_lowest_users_backward():
    """Each "ps" gradient is pushed from the backward hook of the lowest layer using it (top
    layers first, only on the last iter_size pass); --no-overlap pushes everything afterwards;
    before a layer's forward its pulled values are installed, "local" ones never travel."""
    import concurrent.futures as cf

    from google.protobuf import text_format

    from poseidon_cli._proto import caffe_pb2
    from poseidon_cli.distributed.param_sync import param_syncs
    from poseidon_cli.distributed.wfbp import WaitFreeBackprop
    from poseidon_cli.net import Net

    text = '''
    layer { name: "data" type: "Input" top: "x" top: "t"
            input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" param { lr_mult: 1 } param { lr_mult: 0 }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l" }'''

    class FakeClient:
        staleness, clock_value = 0, 0

        def __init__(self):
            self.events = []

        def push(self, name, grad, copy=True):
            self.events.append(("push", name, layer[0]))
            f = cf.Future()
            f.set_result(None)
            return f

        def pull(self, name, min_clock=0):
            f = cf.Future()
            f.set_result(np.full(shapes[name], 7.0, dtype=np.float32))
            return f

    for overlap in (True, False):
        net = Net(text_format.Parse(text, caffe_pb2.NetParameter()), seed=1)
        shapes = {r.name: r.blob.shape for r in net.learnable}
        layer = [None]
        net.add_after_backward(lambda li: layer.__setitem__(0, net.layer_names[li]))
        client = FakeClient()
        syncs = param_syncs(net)
        wfbp = WaitFreeBackprop(net, client, syncs, overlap=overlap, iter_size=2)
        net.blobs["x"].data[...] = 1.0
        wfbp.begin_pass(False)
        net.forward_backward()
        assert client.events == []                  # not the last pass: nothing pushed
        wfbp.begin_pass(True)
        net.forward_backward()
        layer[0] = "after backward"
        wfbp.push_remaining()
        want = [("ip2/0", "ip2"), ("ip2/1", "ip2"), ("ip1/0", "ip1")]
        if not overlap:
            want = [(n, "after backward") for n in ("ip1/0", "ip2/0", "ip2/1")]
        assert [(n, li) for _, n, li in client.events] == want
        assert [s.bytes_sent for s in syncs] == [12 * 4, 0, 8 * 4, 2 * 4]
        wfbp.end_iteration()
        wfbp.request_pulls()
        net.forward_prefilled()
        assert all(np.all(r.blob.data == 7.0) for r in net.learnable if r.name != "ip1/1")
        assert not np.any(net.learnable[1].blob.data == 7.0)   # lr_mult 0: local, never pulled


def test_reductions_use_their_stat_tensors_and_the_loss_only_on_display_iterations(tmp_path):
    """PSSync.mean: each Reduction (per test net for the TEST ones) has a STAT tensor of its own
    in the layout; the loss is averaged only on display iterations; a worker runs
    ceil(test_iter / P) test passes and only worker 0 writes files."""
    from inprocess import make_solver
    from poseidon_cli.ps.keys import STAT
    from poseidon_cli.solver.sync import Reduction

    paths = make_digits(tmp_path)
    job = write_job(tmp_path / "job", paths, batch=4, iters=20)       # display 5, test_iter 4
    s = make_solver(config.load_solver_param(job), job, 1, 3)
    calls = []

    class FakeClient:
        def mean_over_workers(self, name, values):
            calls.append((name, list(values)))
            return np.asarray(values, dtype=np.float64) * 10

    s.sync.client = FakeClient()
    s.iter = 3
    assert s.sync.mean([1.5], Reduction.LOSS) == [1.5] and calls == []
    s.iter = 5
    assert s.sync.mean([1.5], Reduction.LOSS) == [15.0]
    assert s.sync.mean([1.0], Reduction.TRAIN_OUTPUTS) == [10.0]
    assert s.sync.mean([2.0], Reduction.TEST_LOSS, 0) == [20.0]
    assert s.sync.mean([0.5, 3.0], Reduction.TEST_OUTPUTS, 0) == [5.0, 30.0]
    names = [n for n, _ in calls]
    assert len(set(names)) == 4
    layout = {entry[0]: entry for entry in s.sync.ps_layout()}
    assert all(layout[n][3] == STAT for n in names)
    assert [layout[n][1] for n in names] == [(1,), (1,), (1,), (2,)]   # loss; loss; loss; acc + loss
    assert s.test_iterations(0) == 2                                    # ceil(4 / 3)
    assert not s.sync.writes_files and s.snapshot() is None
