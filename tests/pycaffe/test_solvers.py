"""Solvers from Python: the per-type classes, get_solver with keyword overrides (protobuf 7),
step/solve/iter/lr, add_callback at Caffe's points, snapshots (binary and HDF5) and restore, and
the working-directory rule for a relative snapshot_prefix. References: hand-computed SGD steps
and a second, uninterrupted run."""
import os

import numpy as np
import pytest

import poseidon_cli as caffe
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import SolverError

NET = '''
name: "lin"
layer { name: "x" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''

SOLVER = ('net: "net.prototxt" base_lr: 0.05 lr_policy: "step" gamma: 0.5 stepsize: 3 '
          'momentum: 0.9 max_iter: 6 display: 0 random_seed: 5 type: "SGD" {extra}\n')


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)

    def write(extra=""):
        (tmp_path / "solver.prototxt").write_text(SOLVER.format(extra=extra))
        return "solver.prototxt"
    return write


def weights(solver):
    return [b.data.copy() for b in solver.net.learnable_params]


def test_typed_classes_force_their_type_and_get_solver_follows_the_file(job):
    path = job()
    assert caffe.SGDSolver(path).param.type == "SGD"
    # AdaGrad and RMSProp refuse momentum (Caffe's checks): an override removes it
    for cls, name, nhist, extra in [(caffe.NesterovSolver, "Nesterov", 1, {}),
                                    (caffe.AdaGradSolver, "AdaGrad", 1, {"momentum": 0}),
                                    (caffe.RMSPropSolver, "RMSProp", 1, {"momentum": 0}),
                                    (caffe.AdaDeltaSolver, "AdaDelta", 2, {}),
                                    (caffe.AdamSolver, "Adam", 2, {})]:
        s = cls(path, **extra)
        assert isinstance(s, cls) and s.param.type == name and len(s.history[0]) == nhist
    assert isinstance(caffe.get_solver(path), caffe.SGDSolver)
    assert isinstance(caffe.get_solver(path, type="Adam"), caffe.AdamSolver)


def test_get_solver_keyword_overrides_every_field_kind(job):
    path = job()
    s = caffe.get_solver(path, max_iter=2, base_lr=0.5, stepvalue=[1, 2], lr_policy="multistep",
                         snapshot_format="HDF5", train_state=dict(stage=["a"]))
    assert s.param.max_iter == 2 and s.param.base_lr == 0.5
    assert list(s.param.stepvalue) == [1, 2] and s.param.lr_policy == "multistep"
    assert s.param.snapshot_format == caffe_pb2.SolverParameter.HDF5
    assert list(s.param.train_state.stage) == ["a"]
    with pytest.raises(SolverError, match="cannot set SolverParameter field 'snapshot_format'"):
        caffe.get_solver(path, snapshot_format="PNG")


def test_step_iter_lr_and_callbacks_at_caffes_points(job):
    s = caffe.SGDSolver(job())
    events = []
    s.add_callback(lambda: events.append(("start", s.iter, float(s.net.learnable_params[0].diff.any()))),
                   lambda: events.append(("grads", s.iter, float(s.net.learnable_params[0].diff.any()))))
    lrs = []
    for _ in range(4):
        lrs.append(s.lr)
        s.step(1)
    assert s.iter == 4
    assert lrs == pytest.approx([0.05, 0.05, 0.05, 0.025])     # step policy: gamma^(iter // 3)
    # on_start sees cleared gradients before forward/backward; on_gradients the fresh ones
    assert events[:2] == [("start", 0, 0.0), ("grads", 0, 1.0)] and len(events) == 8
    # the update is plain momentum SGD: w1 = w0 - lr * grad  (first step, no history)
    s2 = caffe.SGDSolver("solver.prototxt")
    w0 = weights(s2)
    grads = []
    s2.add_callback(lambda: None, lambda: grads.append([b.diff.copy() for b in s2.net.learnable_params]))
    s2.step(1)
    for w, g, b in zip(w0, grads[0], s2.net.learnable_params):
        assert np.allclose(b.data, w - 0.05 * g, rtol=1e-5, atol=1e-7)
    s2.solve()
    assert s2.iter == 6


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshot_restore_continue_equals_uninterrupted(job, tmp_path, fmt):
    if fmt == "HDF5":
        pytest.importorskip("h5py")
    path = job(f'snapshot_prefix: "snaps/lin" snapshot_format: {fmt}')
    os.mkdir("snaps")
    full = caffe.SGDSolver(path)
    full.step(6)
    half = caffe.SGDSolver(path)
    half.step(3)
    state = half.snapshot()
    ext = ".h5" if fmt == "HDF5" else ""
    assert state == f"snaps/lin_iter_3.solverstate{ext}"
    # relative prefix: from the working directory, as in Caffe
    assert os.path.isfile(f"snaps/lin_iter_3.caffemodel{ext}") and os.path.isfile(state)
    resumed = caffe.SGDSolver(path)
    resumed.restore(state)
    assert resumed.iter == 3
    resumed.step(3)
    for a, b in zip(weights(resumed), weights(full)):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
    if fmt == "HDF5":
        import h5py
        with h5py.File(state, "r") as f:
            assert int(f["iter"][0]) == 3 and sorted(f["history"].keys()) == ["0", "1"]   # weight, bias
            assert f["learned_net"][()].decode() == "snaps/lin_iter_3.caffemodel.h5"
        net = caffe.Net("net.prototxt", caffe.TRAIN)
        net.copy_from("snaps/lin_iter_3.caffemodel.h5")
        assert np.allclose(net.params["ip"][0].data, weights(half)[0])


def test_relative_snapshot_prefix_resolves_against_working_directory(tmp_path, monkeypatch):
    sub = tmp_path / "model"
    sub.mkdir()
    (sub / "net.prototxt").write_text(NET)
    (sub / "solver.prototxt").write_text(SOLVER.format(extra='snapshot_prefix: "out/lin"'))
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    s = caffe.SGDSolver("model/solver.prototxt")
    s.step(1)
    s.snapshot()
    assert (tmp_path / "out" / "lin_iter_1.caffemodel").is_file()
    assert not (sub / "out").exists()


SHARED = '''
name: "shared"
layer { name: "x" type: "DummyData" top: "x" top: "t"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 3 }
    data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -1 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } param { name: "b1" }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "y" param { name: "w" } param { name: "b2" }
  inner_product_param { num_output: 3 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
'''


def test_hdf5_stores_a_shared_param_once_and_resumes(tmp_path, monkeypatch):
    h5py = pytest.importorskip("h5py")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(SHARED)
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(
        extra='snapshot_prefix: "sh" snapshot_format: HDF5'))
    full = caffe.SGDSolver("solver.prototxt")
    full.step(4)
    half = caffe.SGDSolver("solver.prototxt")
    half.step(2)
    state = half.snapshot()
    with h5py.File("sh_iter_2.caffemodel.h5", "r") as f:
        assert sorted(f["data/a"].keys()) == ["0", "1"] and sorted(f["data/b"].keys()) == ["1"]
    resumed = caffe.SGDSolver("solver.prototxt")
    resumed.restore(state)
    resumed.step(2)
    for a, b in zip(weights(resumed), weights(full)):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-7)
