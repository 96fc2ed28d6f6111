"""Distributed snapshots resume exactly: on another number of clients, and on a single node.

Every iteration reads the whole 8-record training set (batch 8 on one node = 2 x 4 = 4 x 2 on a
cluster), so the trajectory does not depend on where the data cursor stands after a resume."""
import shutil

import lmdb
import numpy as np

from cluster_helpers import read_caffemodel, rel_diff, write_job
from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver
from poseidon_cli.tools.digits import load_digits_uint8
from test_worker_inprocess import train_cluster


def write_db(path, images, labels):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, (im, lab) in enumerate(zip(images, labels)):
            d = caffe_pb2.Datum(channels=1, height=8, width=8, data=im.tobytes(), label=int(lab))
            txn.put(b"%08d" % i, d.SerializeToString())
    env.close()


def setup_job(tmp_path, name, batch, iters, solver_type):
    images, labels = load_digits_uint8(8)
    paths = {"train": str(tmp_path / "train8"), "test": str(tmp_path / "test")}
    if not (tmp_path / "train8").exists():
        write_db(tmp_path / "train8", images[:8], labels[:8])
        write_db(tmp_path / "test", images[8:48], labels[8:48])
    path = write_job(tmp_path / name, paths, batch=batch, solver_type=solver_type, iters=iters)
    # snapshot every 10 iterations
    with open(path, "a") as fh:
        fh.write("snapshot: 10\n")
    return path


def single(path, resume=None):
    s = Solver(config.load_solver_param(path), solver_path=path, log=TrainLog(streams=[]))
    s.solve(resume_file=resume)
    return s


def test_resume_on_other_client_counts_and_single_node(tmp_path):
    for solver_type in ("SGD", "Adam"):
        root = tmp_path / solver_type
        root.mkdir()
        ref = setup_job(root, "ref", batch=8, iters=20, solver_type=solver_type)
        single(ref)
        expected = read_caffemodel(root / "ref/snap/tiny_iter_20.caffemodel")

        # 2 clients for 10 iterations, then 4 clients resume to 20
        a = setup_job(root, "a", batch=4, iters=20, solver_type=solver_type)
        train_cluster(a, workers=2, stop_at=10)
        assert (root / "a/snap/tiny_iter_10.solverstate").exists()
        b = setup_job(root, "b", batch=2, iters=20, solver_type=solver_type)
        workers = train_cluster(b, workers=4, resume=str(root / "a/snap/tiny_iter_10.solverstate"))
        # it really resumed: 10 clocks, not 20, and no snapshot of its own at iteration 10
        assert all(w.client.clock_value == 10 for w in workers)
        assert not (root / "b/snap/tiny_iter_10.caffemodel").exists()
        got = read_caffemodel(root / "b/snap/tiny_iter_20.caffemodel")
        for k in expected:
            assert rel_diff(got[k], expected[k]) < 1e-4, (solver_type, k)

        # a single node resumes the cluster's snapshot
        c = setup_job(root, "c", batch=8, iters=20, solver_type=solver_type)
        single(c, resume=str(root / "a/snap/tiny_iter_10.solverstate"))
        assert not (root / "c/snap/tiny_iter_10.caffemodel").exists()
        got = read_caffemodel(root / "c/snap/tiny_iter_20.caffemodel")
        for k in expected:
            assert rel_diff(got[k], expected[k]) < 1e-4, (solver_type, k)
