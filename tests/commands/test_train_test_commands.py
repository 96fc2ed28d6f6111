"""`poseidon train` / `poseidon test` end to end on a tiny LMDB written here: logs, snapshots in
Caffe's binary layout (decoded by field number), .netoutputs, resume, fine-tune, signals, and the
one-line errors with exit code 2."""
import os
import re
import signal
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.cli import main
from poseidon_cli.solver import get_solver
from poseidon_cli.solver.netoutputs import read_netoutputs
from poseidon_cli.commands.train import SignalActions

lmdb = pytest.importorskip("lmdb")

NET = """name: "tiny"
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "train_lmdb" batch_size: 4 backend: LMDB } transform_param { scale: 0.1 } }
layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }
  data_param { source: "test_lmdb" batch_size: 5 backend: LMDB } transform_param { scale: 0.1 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

SOLVER = """net: "net.prototxt"
test_iter: {test_iter}
test_interval: 2
base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed"
display: 2 max_iter: {max_iter} snapshot: 2 snapshot_prefix: "{prefix}" random_seed: 3
solver_mode: CPU {extra}
"""


def write_lmdb(path, n, rng):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i in range(n):
            label = i % 3
            pix = (rng.integers(0, 40, size=(1, 2, 2)) + 60 * label).astype(np.uint8)
            d = caffe_pb2.Datum(channels=1, height=2, width=2, data=pix.tobytes(), label=label)
            txn.put(f"{i:08d}".encode(), d.SerializeToString())
    env.close()


@pytest.fixture
def job(tmp_path):
    rng = np.random.default_rng(0)
    write_lmdb(tmp_path / "train_lmdb", 24, rng)
    write_lmdb(tmp_path / "test_lmdb", 10, rng)
    (tmp_path / "net.prototxt").write_text(NET)

    def solver(max_iter=4, test_iter="2", extra="", name="tiny_solver.prototxt", prefix="snap/tiny"):
        p = tmp_path / name
        p.write_text(SOLVER.format(max_iter=max_iter, test_iter=test_iter, extra=extra, prefix=prefix))
        return str(p)
    solver.dir = tmp_path
    return solver


def run(*args):
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output  # stdout and stderr, interleaved


def decode_fields(buf):
    """(field, value) pairs of a protobuf message: the minimal wire decoder needed here."""
    out, pos = [], 0
    def varint(pos):
        shift = v = 0
        while True:
            b = buf[pos]; pos += 1
            v |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                return v, pos
    while pos < len(buf):
        k, pos = varint(pos)
        f, wt = k >> 3, k & 7
        if wt == 0:
            v, pos = varint(pos)
        elif wt == 2:
            n, pos = varint(pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            v, pos = buf[pos:pos + 8], pos + 8
        out.append((f, v))
    return out


def test_train_writes_log_snapshots_and_netoutputs(job):
    solver = job()
    code, out = run("train", "--solver", solver, "--cpu")
    assert code == 0, out
    d = job.dir
    for n in (2, 4):
        assert (d / f"snap/tiny_iter_{n}.caffemodel").is_file()
        assert (d / f"snap/tiny_iter_{n}.solverstate").is_file()
    # SolverState by field number: iter 1, learned_net 2, history 3 (one per learnable param), current_step 4
    state = decode_fields((d / "snap/tiny_iter_4.solverstate").read_bytes())
    assert [v for f, v in state if f == 1] == [4]
    assert [v for f, v in state if f == 2] == [str(d / "snap/tiny_iter_4.caffemodel").encode()]
    history = [v for f, v in state if f == 3]
    assert len(history) == 2  # ip weights and bias, SGD: one history blob each
    shape = [v for f, v in decode_fields(history[0]) if f == 7][0]
    dims_payload = [v for f, v in decode_fields(shape) if f == 1][0]
    assert list(dims_payload) == [3, 4]  # packed varints of (3, 4)
    packed = [v for f, v in decode_fields(history[0]) if f == 5][0]
    assert len(packed) == 12 * 4 and np.isfinite(struct.unpack("<12f", packed)).all()
    # caffemodel: NetParameter name (1) and layers (100) holding the ip blobs
    model = caffe_pb2.NetParameter.FromString((d / "snap/tiny_iter_4.caffemodel").read_bytes())
    assert model.name == "tiny" and [len(l.blobs) for l in model.layer if l.name == "ip"] == [2]

    log = (d / "snap/tiny.log").read_text().splitlines()
    body = [re.sub(r"^\S+ \S+ \d+ \S+\] ", "", l) for l in log]
    assert "Solving tiny" in body and body[-1] == "Optimization Done."
    assert "Iteration 0, Testing net (#0)" in body and "Iteration 4, Testing net (#0)" in body
    assert any(re.fullmatch(r"    Test net output #0: accuracy = [\d.]+", b) for b in body)
    assert any(re.fullmatch(r"    Test net output #1: loss = \S+ \(\* 1 = \S+ loss\)", b) for b in body)
    assert "Snapshotting to binary proto file " + str(d / "snap/tiny_iter_2.caffemodel") in body

    blocks = read_netoutputs(d / "snap/tiny.netoutputs")
    assert [b["columns"] for b in blocks] == [["Iteration", "time", "loss", "loss"],
                                              ["Iteration", "time", "loss", "accuracy", "loss"]]
    assert [r[0] for r in blocks[0]["rows"]] == [0, 2]
    assert [r[0] for r in blocks[1]["rows"]] == [0, 2, 4]
    assert (d / "snap/tiny.netoutputs").read_text().startswith("Iteration,time,loss,loss,\n")


def test_resume_continues_from_the_snapshot(job):
    solver = job(max_iter=4)
    assert run("train", "--solver", solver, "--cpu")[0] == 0
    d = job.dir
    code, out = run("train", "--solver", job(max_iter=6), "--cpu",
                    "--snapshot", str(d / "snap/tiny_iter_4.solverstate"))
    assert code == 0, out
    log = (d / "snap/tiny.log").read_text()
    assert "Restoring previous solver status from" in log
    assert (d / "snap/tiny_iter_6.solverstate").is_file()
    assert not (d / "snap/tiny_iter_5.solverstate").exists()
    # weights at resume start equal the snapshot's: the restored solver reproduces them
    s = get_solver(solver, solver_path=solver)
    s.restore(str(d / "snap/tiny_iter_4.solverstate"))
    m = caffe_pb2.NetParameter.FromString((d / "snap/tiny_iter_4.caffemodel").read_bytes())
    w = np.array([l for l in m.layer if l.name == "ip"][0].blobs[0].data).reshape(3, 4)
    np.testing.assert_array_equal(s.net.params["ip"][0].data, w)
    assert s.iter == 4


def test_finetune_and_test_command(job):
    solver = job()
    assert run("train", "--solver", solver, "--cpu")[0] == 0
    d = job.dir
    weights = str(d / "snap/tiny_iter_4.caffemodel")
    code, out = run("train", "--solver", job(max_iter=2, prefix="ft/tiny",
                                              name="ft_solver.prototxt"),
                    "--cpu", "--weights", weights)
    assert code == 0, out
    assert "Finetuning from" in (d / "ft/ft.log").read_text()

    from poseidon_cli.commands import test as test_cmd
    code, out = run("test", "--model", str(d / "net.prototxt"), "--weights", weights,
                    "--iterations", "2", "--cpu")
    assert code == 0, out
    acc = test_cmd.run.last["accuracy"]
    # independent check: the saved weights scored by hand on the 10 test records
    m = caffe_pb2.NetParameter.FromString(open(weights, "rb").read())
    ip = [l for l in m.layer if l.name == "ip"][0]
    W, b = np.array(ip.blobs[0].data).reshape(3, 4), np.array(ip.blobs[1].data)
    env = lmdb.open(str(d / "test_lmdb"), readonly=True, lock=False)
    X, y = [], []
    with env.begin() as txn:
        for _, v in txn.cursor():
            dm = caffe_pb2.Datum.FromString(v)
            X.append(np.frombuffer(dm.data, np.uint8) * 0.1); y.append(dm.label)
    pred = (np.array(X) @ W.T + b).argmax(1)
    assert acc == pytest.approx((pred == np.array(y)).mean(), abs=1e-6)


def test_several_test_nets_and_no_test_initialization(job):
    solver = job(test_iter="1 test_iter: 2", extra="test_initialization: false")
    assert run("train", "--solver", solver, "--cpu")[0] == 0
    log = (job.dir / "snap/tiny.log").read_text()
    assert "Iteration 0, Testing net" not in log
    assert "Iteration 2, Testing net (#0)" in log and "Iteration 2, Testing net (#1)" in log
    blocks = read_netoutputs(job.dir / "snap/tiny.netoutputs")
    assert len(blocks) == 3 and [r[0] for r in blocks[2]["rows"]] == [2, 4]


@pytest.mark.parametrize("solver_text,match", [
    ("base_lr: 0.1 max_iter: 1", r"no net given"),
    ('net: "net.prototxt" type: "Lion" base_lr: 0.1 lr_policy: "fixed" max_iter: 1', r'unknown solver type "Lion"'),
    ('net: "net.prototxt" base_lr: 0.1 lr_policy: "cosine" max_iter: 1', r"unknown lr_policy"),
    ('net: "missing.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 1', r"missing.prototxt does not exist"),
])
def test_bad_solver_files_are_one_line_errors(job, solver_text, match):
    job()
    p = job.dir / "bad_solver.prototxt"
    p.write_text(solver_text)
    code, out = run("train", "--solver", str(p), "--cpu")
    assert code == 2
    err = [l for l in out.splitlines() if l.startswith("poseidon: error:")]
    assert len(err) == 1 and re.search(match, err[0]), out


def test_snapshot_of_another_net_is_refused(job):
    solver = job()
    assert run("train", "--solver", solver, "--cpu")[0] == 0
    d = job.dir
    (d / "other").mkdir()
    for name in ("train_lmdb", "test_lmdb"):
        os.symlink(d / name, d / "other" / name)
    (d / "other/net.prototxt").write_text(NET.replace('name: "tiny"', 'name: "other"'))
    (d / "other/s.prototxt").write_text(SOLVER.format(max_iter=4, test_iter=2, extra="", prefix="snap/tiny"))
    code, out = run("train", "--solver", str(d / "other/s.prototxt"), "--cpu",
                    "--snapshot", str(d / "snap/tiny_iter_2.solverstate"))
    assert code == 2 and "snapshot is of net 'tiny' but the solver trains 'other'" in out
    (d / "other/net.prototxt").write_text(NET.replace("num_output: 3", "num_output: 4"))
    code, out = run("train", "--solver", str(d / "other/s.prototxt"), "--cpu",
                    "--snapshot", str(d / "snap/tiny_iter_2.solverstate"))
    assert code == 2 and "param 0 of layer 'ip' has shape (3, 4) in the snapshot" in out


def test_weights_without_matching_layers_are_refused(job):
    solver = job()
    m = caffe_pb2.NetParameter(name="x")
    l = m.layer.add(name="nothing_here", type="InnerProduct")
    l.blobs.add().data.extend([1.0])
    (job.dir / "w.caffemodel").write_bytes(m.SerializeToString())
    code, out = run("train", "--solver", solver, "--cpu", "--weights", str(job.dir / "w.caffemodel"))
    assert code == 2 and "no layer of this model matches a layer of net 'tiny'" in out


def test_sighup_snapshots_and_sigint_stops(job):
    solver = job(max_iter=50)
    actions = SignalActions("stop", "snapshot").install()
    try:
        from poseidon_cli.solver.sync import LocalSync
        sent = []

        class Sender(LocalSync):
            """Sends the signal at the end of the update of iterations 3 and 5 (before the
            solver asks action_fn what to do)."""
            def update(self, s):
                super().update(s)
                if s.iter + 1 == 3:
                    os.kill(os.getpid(), signal.SIGHUP); sent.append("hup")
                if s.iter + 1 == 5:
                    os.kill(os.getpid(), signal.SIGINT); sent.append("int")
        s = get_solver(solver, solver_path=solver, action_fn=actions, sync=Sender())
        s.solve()
    finally:
        actions.uninstall()
    assert sent == ["hup", "int"] and s.iter == 5
    assert (job.dir / "snap/tiny_iter_3.solverstate").is_file()  # SIGHUP -> snapshot, go on
    assert (job.dir / "snap/tiny_iter_5.solverstate").is_file()  # stop -> snapshot_after_train


def test_same_random_seed_same_snapshot_bytes(job):
    a = job(prefix="a/tiny", name="a_solver.prototxt")
    b = job(prefix="b/tiny", name="b_solver.prototxt")
    c = job(prefix="c/tiny", name="c_solver.prototxt")
    with open(c) as f:
        text = f.read()
    with open(c, "w") as f:
        f.write(text.replace("random_seed: 3", "random_seed: 4"))
    for s in (a, b, c):
        assert run("train", "--solver", s, "--cpu")[0] == 0
    d = job.dir
    model = lambda k: (d / f"{k}/tiny_iter_4.caffemodel").read_bytes()
    assert model("a") == model("b")
    assert model("a") != model("c")  # another seed, other initial weights
