"""Python layers in distributed training, through the CLI: 2 local clients of batch B with a
Python layer holding a learnable blob follow one node of batch 2B (staleness 0), and the
module is found from the working directory in every client process."""
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "distributed"))
from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job  # noqa: E402
from test_cluster_processes import write_hosts  # noqa: E402

MODULE = '''
import poseidon_cli as caffe

class LearnedScale(caffe.Layer):
    """top = a * bottom, a learnable scalar starting at 1."""
    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 1.0
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data
    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff
'''

PY_LAYER = ('layer { name: "pyscale" type: "Python" bottom: "conv1" top: "scaled" '
            'python_param { module: "dist_pylayer" layer: "LearnedScale" } }\n')


def with_python_layer(folder):
    net = folder / "net.prototxt"
    text = net.read_text()
    text = text.replace('layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
                        PY_LAYER + 'layer { name: "relu1" type: "ReLU" bottom: "scaled" top: "scaled" }')
    text = text.replace('bottom: "conv1" top: "ip1"', 'bottom: "scaled" top: "ip1"')
    assert 'type: "Python"' in text and 'bottom: "scaled" top: "ip1"' in text
    net.write_text(text)
    (folder / "dist_pylayer.py").write_text(MODULE)


@pytest.mark.slow
def test_python_layer_with_learnable_blob_trains_distributed_like_single_node(tmp_path):
    paths = make_digits(tmp_path)
    single = write_job(tmp_path / "single", paths, batch=8)
    dist = write_job(tmp_path / "dist", paths, batch=4)
    with_python_layer(tmp_path / "single")
    with_python_layer(tmp_path / "dist")
    cli = [sys.executable, "-m", "poseidon_cli.cli", "train"]
    r1 = subprocess.run(cli + ["--solver", single, "--cpu"], capture_output=True, text=True,
                        cwd=tmp_path / "single", timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    r2 = subprocess.run(cli + ["--solver", dist, "--hosts", str(hosts), "--deadline", "60"],
                        capture_output=True, text=True, cwd=tmp_path / "dist", timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    ref = read_caffemodel(tmp_path / "single/snap/tiny_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "dist/snap/tiny_iter_20.caffemodel")
    assert "pyscale/0" in ref and abs(ref["pyscale/0"][0] - 1.0) > 1e-4     # it was trained
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
