"""A Python data layer and a Python loss layer (examples/pycaffe/digits_layers.py) train the
digits example to the accuracy the built-in Data and SoftmaxWithLoss layers reach: both read the
same records in the same order and start from the same weights, so they follow one trajectory."""
import importlib.util
import pathlib
import shutil
import sys

import numpy as np
import pytest

import poseidon_cli as caffe

ROOT = pathlib.Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "digits"
PYCAFFE = ROOT / "examples" / "pycaffe"

PY_DATA = '''layer {{
  name: "digits"
  type: "Python"
  top: "data"
  top: "label"
  include {{ phase: TRAIN }}
  python_param {{ module: "digits_layers" layer: "DigitsData"
    param_str: '{{"source": "{source}", "batch_size": 50, "scale": 0.00390625}}' }}
}}'''
PY_LOSS = '''layer {
  name: "loss"
  type: "Python"
  bottom: "ip2"
  bottom: "label"
  top: "loss"
  loss_weight: 1
  python_param { module: "digits_layers" layer: "SoftmaxLoss" }
}'''


def make_data(out):
    spec = importlib.util.spec_from_file_location("digits_make_data", DIGITS / "make_data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(out)]) == 0


def python_net(text, source):
    start = text.index("layer {\n  name: \"digits\"")
    end = text.index("}\n}\n", start) + 4           # the TRAIN Data layer, as written
    assert "include { phase: TRAIN }" in text[start:end]
    text = text[:start] + PY_DATA.format(source=source) + "\n" + text[end:]
    start = text.index("layer {\n  name: \"loss\"")
    return text[:start] + PY_LOSS + "\n"


def train_and_test(solver_path, iters):
    s = caffe.SGDSolver(str(solver_path), max_iter=iters, snapshot=0, test_interval=iters + 1)
    s.solve()
    net = s.test_nets[0]
    net.share_with(s.net)
    accs = []
    for _ in range(3):                                    # 297 test images = 3 batches of 99
        net.forward()
        accs.append(float(net.blobs["accuracy"].data))
    return float(np.mean(accs)), s


@pytest.mark.slow
def test_python_data_and_loss_layers_match_the_built_in_layers(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    make_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(PYCAFFE))
    sys.modules.pop("digits_layers", None)
    text = (DIGITS / "digits_net.prototxt").read_text()
    (tmp_path / "builtin").mkdir()
    (tmp_path / "python").mkdir()
    solver = (DIGITS / "digits_solver.prototxt").read_text()
    (tmp_path / "builtin" / "digits_net.prototxt").write_text(
        text.replace("data/digits_", str(tmp_path / "data") + "/digits_"))
    # a copy of the same records: LMDB refuses to open one environment twice in a process,
    # and the built-in Data layer of the other run holds it open
    shutil.copytree(tmp_path / "data" / "digits_train_lmdb", tmp_path / "py_train_lmdb")
    (tmp_path / "python" / "digits_net.prototxt").write_text(python_net(
        text.replace("data/digits_", str(tmp_path / "data") + "/digits_"),
        str(tmp_path / "py_train_lmdb")))
    for d in ("builtin", "python"):
        (tmp_path / d / "digits_solver.prototxt").write_text(solver)
    acc_builtin, sb = train_and_test(tmp_path / "builtin" / "digits_solver.prototxt", 150)
    acc_python, sp = train_and_test(tmp_path / "python" / "digits_solver.prototxt", 150)
    assert sp.net.layer_dict["digits"].type == "Python"
    assert sp.net.layer_dict["loss"].type == "Python"
    print(f"digits accuracy after 150 iterations: built-in {acc_builtin:.4f}, Python layers {acc_python:.4f}")
    assert acc_builtin > 0.85                              # chance is 0.1
    assert abs(acc_python - acc_builtin) <= 0.01, (acc_python, acc_builtin)
    for a, b in zip(sp.net.learnable_params, sb.net.learnable_params):
        assert np.allclose(a.data, b.data, rtol=1e-3, atol=1e-4)
