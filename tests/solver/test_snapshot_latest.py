"""``--snapshot latest``: the newest readable solverstate of a prefix (solver/snapshot.py)."""
import os

import numpy as np

from poseidon_cli.solver import snapshot as snap


def write_state(prefix, it, model=True):
    model_path = f"{prefix}_iter_{it}.caffemodel"
    if model:
        open(model_path, "wb").close()
    path = f"{prefix}_iter_{it}.solverstate"
    snap.write_solverstate(path, it, model_path, [np.zeros(3, np.float32)])
    return path


def test_newest_by_iteration_not_by_name_or_mtime(tmp_path):
    prefix = str(tmp_path / "net")
    p9 = write_state(prefix, 9)
    p100 = write_state(prefix, 100)
    write_state(prefix, 20)           # written last: newer mtime, older iteration
    assert snap.latest_state(prefix) == p100
    os.remove(p100)
    assert snap.latest_state(prefix) == str(tmp_path / "net_iter_20.solverstate")
    assert p9  # the oldest stays a candidate


def test_skips_a_state_cut_short_and_one_without_its_model(tmp_path):
    prefix = str(tmp_path / "net")
    good = write_state(prefix, 10)
    cut = write_state(prefix, 30)
    data = open(cut, "rb").read()
    with open(cut, "wb") as fh:   # a crash mid-write leaves a prefix of the bytes
        fh.write(data[: len(data) // 2])
    write_state(prefix, 20, model=False)
    assert snap.latest_state(prefix) == good


def test_other_prefixes_and_per_worker_form(tmp_path):
    prefix = str(tmp_path / "net")
    write_state(str(tmp_path / "net_b"), 50)          # another prefix that starts the same
    write_state(str(tmp_path / "other"), 60)
    assert snap.latest_state(prefix) is None
    p = write_state(prefix, 40)
    os.rename(p, p + ".0.0")                           # Poseidon's <state>.<client>.<worker>
    assert snap.latest_state(prefix) == p              # restore() finds the .0.0 file
    assert snap.latest_state("") is None


def test_resolve_follows_caffe_prefix_rules(tmp_path):
    solver = tmp_path / "lenet_solver.prototxt"
    solver.write_text(f'net: "x.prototxt"\nsnapshot_prefix: "{tmp_path}/snaps/"\n')
    (tmp_path / "snaps").mkdir()
    want = write_state(str(tmp_path / "snaps" / "lenet_solver"), 7)
    assert snap.resolve_snapshot("latest", str(solver)) == want
    assert snap.resolve_snapshot("given.solverstate", str(solver)) == "given.solverstate"
    assert snap.resolve_snapshot(None, str(solver)) is None
    assert snap.resolve_prefix("", "a/b.prototxt") == "a/b"
    assert snap.resolve_prefix("p/q", "a/b.prototxt") == "p/q"
