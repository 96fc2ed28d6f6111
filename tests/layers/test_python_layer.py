"""Python layers (type "Python"): pycaffe's contract. The user's module is written to a temporary
working directory and imported from there; references are hand-computed with numpy."""
import itertools
import textwrap
import traceback

import numpy as np
import pytest
from google.protobuf import text_format

import poseidon_cli as caffe
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import NetError
from poseidon_cli.layers.python_layer import PythonLayer, PythonLayerError
from poseidon_cli.net import Net

_ids = itertools.count()

SCALE_MODULE = '''
import numpy as np
import poseidon_cli as caffe

class Scale(caffe.Layer):
    """top = a * bottom with one learnable scalar a (initial value from param_str)."""
    def setup(self, bottom, top):
        self.init = float(self.param_str or "1")
        self.seen_phase = self.phase
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = self.init
        self.reshapes = 0

    def reshape(self, bottom, top):
        self.reshapes += 1
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff

class Broken(caffe.Layer):
    def setup(self, bottom, top):
        pass
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        helper_that_fails(bottom)

def helper_that_fails(bottom):
    raise ValueError("user bug in forward: %d items" % bottom[0].count)
'''


@pytest.fixture(params=[False, True], ids=["direct", "host-copies"])
def mirror(request, monkeypatch):
    """Run once on the net's own arrays and once through the host copies a GPU net uses."""
    monkeypatch.setattr(PythonLayer, "host_mirror", request.param)
    return request.param


def write_module(tmp_path, monkeypatch, source=SCALE_MODULE):
    name = f"user_pylayer_{next(_ids)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.chdir(tmp_path)      # imported from the working directory, as pycaffe allows
    return name


def net_text(module, layer="Scale", param_str="2.5", extra=""):
    return f'''
name: "py"
layer {{ name: "x" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 3 }} }} }}
layer {{ name: "scale" type: "Python" bottom: "x" top: "y" {extra}
  python_param {{ module: "{module}" layer: "{layer}" param_str: "{param_str}" }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x" top: "loss" }}
'''


def build(text, phase=caffe.TRAIN):
    return Net(text_format.Parse(text, caffe_pb2.NetParameter()), phase)


def test_forward_backward_param_str_phase_and_learnable_blob(tmp_path, monkeypatch, mirror):
    mod = write_module(tmp_path, monkeypatch)
    net = build(net_text(mod), caffe.TEST)
    layer = net.layer_dict["scale"]
    assert (layer.user_layer.blobs is not layer.blobs) == mirror
    assert layer.type == "Python" and layer.seen_phase == caffe.TEST and layer.init == 2.5
    assert len(net.params["scale"]) == 1 and net.learnable_params[0] is net.params["scale"][0]
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    out = net.forward(x=x)
    y = 2.5 * x
    assert np.allclose(net.blobs["y"].data, y)
    # EuclideanLoss(y, x) = sum((y-x)^2) / (2N)
    assert np.isclose(out["loss"], ((y - x) ** 2).sum() / 4, rtol=1e-6)
    net.clear_param_diffs()
    net.backward()
    # d loss / d a = sum((a x - x) * x) / N
    assert np.isclose(net.params["scale"][0].diff[0], ((y - x) * x).sum() / 2, rtol=1e-5)
    # Caffe reshapes a layer before every forward: once at setup, once per forward
    reshapes = layer.reshapes
    net.forward(x=x)
    assert layer.reshapes == reshapes + 1


def test_user_error_names_layer_and_keeps_traceback(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch)
    net = build(net_text(mod, layer="Broken"))
    with pytest.raises(PythonLayerError) as info:
        net.forward(x=np.ones((2, 3), np.float32))
    err = info.value
    assert "layer 'scale' (type Python)" in str(err) and f"module '{mod}' layer 'Broken'" in str(err)
    assert "forward raised ValueError: user bug in forward: 6 items" in str(err)
    # the user's frames (their file, their function) are kept: in the chain and in the CLI text
    assert isinstance(err.__cause__, ValueError)
    frames = [f.name for f in traceback.extract_tb(err.__cause__.__traceback__)]
    assert "helper_that_fails" in frames
    assert "helper_that_fails" in err.one_line() and f"{mod}.py" in err.one_line()
    assert "python_layer.py" not in err.one_line()


def test_missing_module_or_class_is_a_net_error(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch)
    with pytest.raises(NetError, match="has no class 'Nope'"):
        build(net_text(mod, layer="Nope"))
    with pytest.raises(NetError, match="cannot import python_param.module 'no_such_mod_xyz'"):
        build(net_text("no_such_mod_xyz"))


def test_learnable_blob_updated_snapshotted_and_resumed(tmp_path, monkeypatch, mirror):
    mod = write_module(tmp_path, monkeypatch)
    # y = a * x fit to target 3 x: the solver must move a from 1 to 3.
    net = f'''
name: "fit"
layer {{ name: "x" type: "DummyData" top: "x" top: "t"
  dummy_data_param {{ shape {{ dim: 4 dim: 2 }} shape {{ dim: 4 dim: 2 }}
    data_filler {{ type: "constant" value: 1 }} data_filler {{ type: "constant" value: 3 }} }} }}
layer {{ name: "scale" type: "Python" bottom: "x" top: "y"
  python_param {{ module: "{mod}" layer: "Scale" param_str: "1" }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }}
'''
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 10 display: 0 '
        'snapshot: 5 snapshot_prefix: "snaps/fit"\n')
    (tmp_path / "snaps").mkdir()
    s = caffe.SGDSolver("solver.prototxt")
    a = [float(s.net.params["scale"][0].data[0])]
    for _ in range(5):
        s.step(1)
        a.append(float(s.net.params["scale"][0].data[0]))
    # EuclideanLoss = sum over 8 values of (a-3)^2 / (2*4) = (a-3)^2, so dL/da = 2 (a-3)
    expect = [1.0]
    for _ in range(5):
        expect.append(expect[-1] - 0.1 * 2 * (expect[-1] - 3))
    assert np.allclose(a, expect, rtol=1e-5)
    # the snapshot holds the Python layer's blob
    model = caffe_pb2.NetParameter()
    model.ParseFromString((tmp_path / "snaps/fit_iter_5.caffemodel").read_bytes())
    stored = [l for l in model.layer if l.name == "scale"][0]
    assert np.isclose(stored.blobs[0].data[0], a[5])
    s.step(3)
    a8 = float(s.net.params["scale"][0].data[0])
    resumed = caffe.SGDSolver("solver.prototxt")
    resumed.restore("snaps/fit_iter_5.solverstate")
    assert resumed.iter == 5 and np.isclose(resumed.net.params["scale"][0].data[0], a[5])
    resumed.step(3)
    assert np.isclose(resumed.net.params["scale"][0].data[0], a8, rtol=1e-6)


def test_cli_prints_user_traceback_under_one_line(tmp_path, monkeypatch):
    import subprocess
    import sys
    mod = write_module(tmp_path, monkeypatch)
    (tmp_path / "net.prototxt").write_text(net_text(mod, layer="Broken").replace(
        'type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } }',
        'type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: 3 } }'))
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 2 display: 1\n')
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver",
                        "solver.prototxt", "--cpu"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2
    err = r.stderr[r.stderr.index("poseidon: error:"):]
    assert err.startswith("poseidon: error: layer 'scale' (type Python)")
    assert "helper_that_fails" in err and "ValueError: user bug in forward" in err


@pytest.mark.gpu
def test_python_layer_sees_numpy_on_a_gpu_net(tmp_path, monkeypatch):
    from poseidon_cli import backend
    if not backend.gpu_available():
        pytest.skip("no GPU")
    mod = write_module(tmp_path, monkeypatch, SCALE_MODULE + """
class Check(Scale):
    def forward(self, bottom, top):
        assert type(bottom[0].data) is np.ndarray and type(self.blobs[0].data) is np.ndarray
        Scale.forward(self, bottom, top)
""")
    cp = backend.use_gpu(0)
    try:
        net = Net(text_format.Parse(net_text(mod, layer="Check"), caffe_pb2.NetParameter()),
                  caffe.TRAIN, xp=cp)
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        net.forward(x=x)
        assert np.allclose(backend.to_host(net.blobs["y"].data), 2.5 * x)
        net.backward()
        assert float(backend.to_host(net.params["scale"][0].diff)[0]) != 0
    finally:
        backend.use_cpu()


VARIABLE_BATCH = '''
import numpy as np
import poseidon_cli as caffe

class Batches(caffe.Layer):
    """Batches of 4 then 2 rows, alternating (a data layer whose last batch is smaller)."""
    def setup(self, bottom, top):
        self.k = 0
    def reshape(self, bottom, top):
        top[0].reshape(4 if self.k % 2 == 0 else 2, 3)
    def forward(self, bottom, top):
        n = top[0].data.shape[0]
        top[0].data[...] = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + self.k
        self.k += 1
'''


def test_layers_after_a_python_layer_follow_its_shape_changes(tmp_path, monkeypatch, mirror):
    mod = write_module(tmp_path, monkeypatch, VARIABLE_BATCH)
    net = build(f'''
layer {{ name: "src" type: "Python" top: "x" python_param {{ module: "{mod}" layer: "Batches" }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "sq" type: "Power" bottom: "y" top: "z" power_param {{ power: 2 }} }}
''')
    W, b = net.params["ip"][0].data.copy(), net.params["ip"][1].data.copy()
    for k in range(4):
        out = net.forward()
        n = 4 if k % 2 == 0 else 2
        x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) + k
        assert out["z"].shape == (n, 2)
        assert np.allclose(out["z"], (x @ W.T + b) ** 2, rtol=1e-5)


def test_a_module_failing_at_import_shows_its_own_frames(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch, "import numpy\n\ndef boom():\n    return 1 / 0\n\nboom()\n")
    with pytest.raises(PythonLayerError, match=r"import raised ZeroDivisionError") as info:
        build(net_text(mod))
    text = info.value.one_line()
    assert f"{mod}.py" in text and "boom" in text
    assert "importlib" not in text and "<frozen" not in text


def test_net_layer_attributes_reach_the_users_object(tmp_path, monkeypatch):
    mod = write_module(tmp_path, monkeypatch)
    net = build(net_text(mod))
    layer = net.layer_dict["scale"]
    layer.custom = 41                       # pycaffe: net.layers[i] is the user's object
    assert layer.user_layer.custom == 41 and layer.custom == 41
    layer.init = 9.0
    assert layer.user_layer.init == 9.0
    assert isinstance(layer.user_layer, caffe.Layer) and layer.type == "Python"
