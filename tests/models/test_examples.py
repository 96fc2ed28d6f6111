"""CI smoke test of the example flows: each model trains 2 iterations at a reduced batch on a
tiny generated dataset, through its own examples/<dataset>/create_*.sh and train_*.sh (LeNet on
two loopback clients, partitioned data). The reduced solver is the committed one with batch
sizes, iteration counts, data paths and the snapshot prefix rewritten; the net is unchanged.
"""
import gzip
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 240  # generous: a loaded CI machine; a hang fails instead of blocking the suite


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def env(**extra):
    e = dict(os.environ)
    exe = pathlib.Path(sys.executable).parent / "poseidon"
    e["POSEIDON"] = str(exe) if exe.exists() else shutil.which("poseidon") or "poseidon"
    e["PYTHONUNBUFFERED"] = "1"
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(script, cwd, **extra):
    # from a folder that is not the repository: the scripts must find their way themselves
    r = subprocess.run(["bash", str(EXAMPLES / script)], cwd=cwd, env=env(**extra),
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, f"{script} exited {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"
    return r


def smoke_solver(model, tmp, sources, batch=2, mean=None):
    """The committed solver of models/<model> with 2 iterations, one test batch at the end, and
    the data layers reading ``sources`` (TRAIN, TEST) at ``batch``; returns its path."""
    solver = config.load_solver_param(str(ROOT / "models" / model / "solver.prototxt"))
    net = config.load_net_param(str(ROOT / "models" / model / "train_val.prototxt"), resolve=False)
    for lp in net.layer:
        if lp.type == "Data":
            test = any(r.phase == caffe_pb2.TEST for r in lp.include)
            lp.data_param.source = str(sources[1 if test else 0])
            lp.data_param.batch_size = batch
            if lp.transform_param.mean_file:
                lp.transform_param.mean_file = str(mean)
    net_path = tmp / f"{model}_train_val.prototxt"
    net_path.write_text(text_format.MessageToString(net))
    solver.net = str(net_path)
    solver.max_iter, solver.display = 2, 1
    del solver.test_iter[:]
    solver.test_iter.append(1)
    solver.test_interval, solver.test_initialization = 2, False
    solver.snapshot, solver.snapshot_after_train = 0, False
    solver.snapshot_prefix = str(tmp / model)
    solver.solver_mode = caffe_pb2.SolverParameter.CPU
    path = tmp / f"{model}_solver.prototxt"
    path.write_text(text_format.MessageToString(solver))
    return path


def check_trained(run_dir, model):
    logs = sorted(pathlib.Path(run_dir).glob("*.log"))
    assert logs, f"no log in {run_dir}: {list(pathlib.Path(run_dir).iterdir())}"
    text = "\n".join(p.read_text() for p in logs)
    assert "Iteration 2, Testing net (#0)" in text, text[-3000:]
    assert "Optimization Done." in text
    return text


# ---- mnist: IDX files -> create_mnist.sh (2 partitions) -> train_lenet.sh on 2 clients ---------

def write_idx(path, arr, magic):
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


def test_mnist_lenet_two_loopback_clients(tmp_path):
    rng = np.random.default_rng(0)
    raw, out = tmp_path / "raw", tmp_path / "mnist"
    raw.mkdir()
    for prefix, n in (("train", 8), ("t10k", 4)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n), 2049)
    ports = free_ports(2)
    hosts = tmp_path / "hosts.txt"
    hosts.write_text(f"# two clients here\n0 127.0.0.1 {ports[0]}\n1 127.0.0.1 {ports[1]}\n")
    run("mnist/create_mnist.sh", tmp_path, DATA=raw, OUT=out, HOSTS=hosts)
    for db in ("mnist_train_lmdb", "mnist_test_lmdb"):
        assert (out / db).is_dir() and (out / f"{db}_0").is_dir() and (out / f"{db}_1").is_dir()
    solver = smoke_solver("lenet", tmp_path, (out / "mnist_train_lmdb", out / "mnist_test_lmdb"))
    run("mnist/train_lenet.sh", tmp_path, SOLVER=solver, HOSTS=hosts, OUTPUT=tmp_path / "output",
        DEADLINE=120)
    run_dir = tmp_path / "output" / "lenet.S0.M2.T1"
    check_trained(run_dir, "lenet")
    # the run's own log through parse-log and plot, as a user would look at it
    log = run_dir / "lenet.log"  # client 0's console, kept by the script
    r = subprocess.run([env()["POSEIDON"], "parse-log", str(log), str(tmp_path)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / f"{log.name}.train").read_bytes().decode().split("\r\n")
    assert rows[0] == "NumIters,Seconds,LearningRate,loss"
    assert [row.split(",")[0] for row in rows[1:] if row] == ["0.0", "1.0"]
    r = subprocess.run([env()["POSEIDON"], "plot", str(log), "-o", str(tmp_path / "c.png")],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0 and (tmp_path / "c.png").stat().st_size > 1000, r.stderr


# ---- cifar10: binary batches -> create_cifar10.sh (+ mean) -> train_cifar10.sh, both nets ------

def test_cifar10_quick_and_full(tmp_path):
    rng = np.random.default_rng(1)
    raw, out = tmp_path / "raw", tmp_path / "cifar10"
    raw.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        recs = [bytes([int(rng.integers(0, 10))])
                + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in range(2)]
        (raw / name).write_bytes(b"".join(recs))
    run("cifar10/create_cifar10.sh", tmp_path, DATA=raw, OUT=out)
    assert (out / "mean.binaryproto").is_file()
    for model in ("cifar10_quick", "cifar10_full"):
        dbs = (out / "cifar10_train_lmdb", out / "cifar10_test_lmdb")
        solver = smoke_solver(model, tmp_path, dbs, mean=out / "mean.binaryproto")
        run("cifar10/train_cifar10.sh", tmp_path, NET=model, SOLVER=solver,
            OUTPUT=tmp_path / "output")
        check_trained(tmp_path / "output" / f"{model}.S0.M1.T1", model)


# ---- imagenet: image folders + lists -> create_imagenet.sh, make_imagenet_mean.sh -> 4 nets ----

@pytest.fixture(scope="module")
def imagenet_data(tmp_path_factory):
    from PIL import Image
    tmp = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(2)
    lists = tmp / "lists"
    lists.mkdir()
    for split, n in (("train", 3), ("val", 1)):
        folder = tmp / split
        (folder / "n01").mkdir(parents=True)
        lines = []
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
                folder / "n01" / f"img{i}.png")
            lines.append(f"n01/img{i}.png {i % 2}")
        (lists / f"{split}.txt").write_text("\n".join(lines) + "\n")
    out = tmp / "out"
    run("imagenet/create_imagenet.sh", tmp, TRAIN_DATA_ROOT=tmp / "train",
        VAL_DATA_ROOT=tmp / "val", LISTS=lists, OUT=out)
    run("imagenet/make_imagenet_mean.sh", tmp, OUT=out)
    assert (out / "imagenet_mean.binaryproto").is_file()
    return out


@pytest.mark.parametrize("model", ["bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet",
                                   "resnet_50"])
def test_imagenet_nets(imagenet_data, tmp_path, model):
    out = imagenet_data
    solver = smoke_solver(model, tmp_path, (out / "ilsvrc12_train_lmdb", out / "ilsvrc12_val_lmdb"),
                          batch=1, mean=out / "imagenet_mean.binaryproto")
    run("imagenet/train_imagenet.sh", tmp_path, NET=model, SOLVER=solver,
        OUTPUT=tmp_path / "output")
    check_trained(tmp_path / "output" / f"{model}.S0.M1.T1", model)


def test_remote_hosts_are_started_over_ssh(tmp_path):
    # a stand-in for ssh that records what it was asked to run on each host
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0 10.0.0.1 9999\n1 10.0.0.2 9999\n")
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/ssh_calls\n')
    fake_ssh.chmod(0o755)
    r = run("imagenet/train_imagenet.sh", tmp_path, HOSTS=hosts, SSH=fake_ssh, SSH_OPTS="-x",
            OUTPUT=tmp_path / "out", STALENESS=2, SNAPSHOT="/snap/a_iter_10.solverstate")
    calls = sorted((tmp_path / "ssh_calls").read_text().splitlines())
    assert len(calls) == 2, r.stderr
    for k, call in enumerate(calls):
        assert call.startswith(f"-x 10.0.0.{k + 1} cd {ROOT} && ")
        assert f"--client-id {k}" in call and "--staleness 2" in call
        assert "--snapshot /snap/a_iter_10.solverstate" in call
        assert f"models/bvlc_alexnet/solver.prototxt --hosts {hosts}" in call
    assert (tmp_path / "out" / "bvlc_alexnet.S2.M2.T1").is_dir()
