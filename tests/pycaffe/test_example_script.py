"""examples/pycaffe/lenet_pycaffe.py, a pycaffe script whose only change is the import line, runs
end to end: NetSpec, a Python data layer, caffe.SGDSolver in a Python loop, caffe.Classifier."""
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "examples" / "pycaffe" / "lenet_pycaffe.py"


def test_script_imports_poseidon_as_caffe_and_nothing_of_poseidons_own():
    text = SCRIPT.read_text()
    imports = [line for line in text.splitlines() if "poseidon_cli" in line and "import" in line]
    # each is a pycaffe import with "caffe" renamed, nothing poseidon-only
    assert imports == ["import poseidon_cli as caffe                         # was: import caffe",
                       "from poseidon_cli import layers as L, params as P    # was: from caffe "
                       "import layers as L, params as P",
                       "from poseidon_cli.proto import caffe_pb2             # was: from caffe.proto "
                       "import caffe_pb2"]
    assert "poseidon_cli." not in text.replace("poseidon_cli.proto import", "")


@pytest.mark.slow
def test_lenet_pycaffe_script_trains_and_classifies(tmp_path):
    pytest.importorskip("sklearn")
    r = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path / "data"),
                        "--work", str(tmp_path / "work"), "--iters", "200"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"Classifier accuracy on 297 test images: ([0-9.]+)", r.stdout)
    assert m and float(m.group(1)) > 0.85, r.stdout[-2000:]
    for name in ("lenet_train.prototxt", "lenet_test.prototxt", "lenet_deploy.prototxt",
                 "lenet.caffemodel"):
        assert (tmp_path / "work" / name).is_file()
    assert 'type: "Python"' in (tmp_path / "work" / "lenet_train.prototxt").read_text()
