"""The examples/digits pieces: the split is disjoint and stratified, and a short (~6 s) training
run on the real digits learns far above chance."""
import importlib.util
import pathlib

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "digits"


def load_make_data():
    spec = importlib.util.spec_from_file_location("digits_make_data", EXAMPLE / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_shuffled_split_is_disjoint_stratified_and_seeded():
    mod = load_make_data()
    labels = np.repeat(np.arange(10), 180)[:1797]
    tr, te = mod.shuffled_split(labels, 297, seed=1701)
    assert len(te) == 297 and len(tr) == 1797 - 297
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(1797))
    counts = np.bincount(labels[te], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 33  # ~ 297/10 per class
    tr2, te2 = mod.shuffled_split(labels, 297, seed=1701)
    assert (tr == tr2).all() and (te == te2).all()


def test_digits_example_learns(tmp_path):
    pytest.importorskip("sklearn")
    from poseidon_cli.commands import test as test_cmd, train as train_cmd
    mod = load_make_data()
    assert mod.main([str(tmp_path / "data")]) == 0
    for name in ("digits_net.prototxt", "digits_solver.prototxt"):
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    solver = tmp_path / "digits_solver.prototxt"
    solver.write_text(solver.read_text().replace("max_iter: 1200", "max_iter: 150")
                      .replace("snapshot: 600", "snapshot: 0"))
    assert train_cmd.run(solver=str(solver), cpu=True, output_dir=str(tmp_path / "out")) == 0
    test_cmd.run(model=str(tmp_path / "digits_net.prototxt"),
                 weights=str(tmp_path / "output/digits_iter_150.caffemodel"), iterations=3,
                      cpu=True)
    assert test_cmd.run.last["accuracy"] > 0.85  # chance is 0.1
