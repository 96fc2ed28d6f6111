"""`import poseidon_cli as caffe` exposes pycaffe's names; importing stays cheap (no CuPy, no
layer modules); caffe.proto.caffe_pb2 is the one generated module; caffe.draw works with pydot
and says how to install it without."""
import subprocess
import sys

import pytest

import poseidon_cli as caffe

NAMES = ["Net", "TRAIN", "TEST", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
         "AdaDeltaSolver", "AdamSolver", "get_solver", "NetSpec", "layers", "params", "to_proto",
         "Layer", "layer_type_list", "set_mode_cpu", "set_mode_gpu", "set_device",
         "set_random_seed", "Classifier", "Detector", "io", "proto", "has_nccl", "draw"]


def test_every_pycaffe_name_is_there():
    missing = [n for n in NAMES if not hasattr(caffe, n)]
    assert not missing
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    from poseidon_cli.layers.base import TEST, TRAIN
    assert caffe.TRAIN is TRAIN and caffe.TEST is TEST        # one home
    assert caffe.has_nccl() is False
    types = caffe.layer_type_list()
    assert types == sorted(types)
    assert {"Python", "MemoryData", "HDF5Data", "HDF5Output", "Convolution"} <= set(types)
    assert caffe.io.Transformer and caffe.draw.draw_net_to_file and caffe.draw.get_pydot_graph
    assert callable(caffe.layers.Convolution) and caffe.params.Pooling.MAX == 0


def test_proto_alias_is_the_generated_module():
    from poseidon_cli._proto import caffe_pb2 as generated
    from poseidon_cli.proto import caffe_pb2
    import poseidon_cli.proto.caffe_pb2 as dotted
    assert caffe_pb2 is generated and dotted is generated and caffe.proto.caffe_pb2 is generated


def test_import_is_cheap_and_never_touches_cuda():
    code = ("import sys, poseidon_cli as caffe; caffe.TRAIN; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('cupy', 'h5py', 'pydot', 'PIL') "
            "or m.startswith('poseidon_cli.layers.') and m != 'poseidon_cli.layers.base' "
            "or m in ('poseidon_cli.net', 'poseidon_cli.solver')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_random_seed_makes_nets_repeat():
    text = 'layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 3 } ' \
           'data_filler { type: "gaussian" } } }'
    from google.protobuf import text_format
    from poseidon_cli._proto import caffe_pb2
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    caffe.set_random_seed(11)
    try:
        a = caffe.Net(param, caffe.TEST).blobs["x"].data.copy()
        b = caffe.Net(param, caffe.TEST).blobs["x"].data.copy()
    finally:
        caffe.set_random_seed(None)
    assert (a == b).all() and a.std() > 0
    caffe.set_mode_cpu()


def test_draw_writes_a_graph_of_the_phase(tmp_path):
    pytest.importorskip("pydot")
    from google.protobuf import text_format
    from poseidon_cli._proto import caffe_pb2
    net = text_format.Parse('''
name: "g"
layer { name: "data" type: "Input" top: "data" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 } convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" include { phase: TRAIN } }
''', caffe_pb2.NetParameter())
    caffe.draw.draw_net_to_file(net, str(tmp_path / "g.dot"), phase=caffe.TEST, display_lrm=True)
    dot = (tmp_path / "g.dot").read_text()
    assert "conv" in dot and "(Convolution)" in dot and "kernel 3 stride 1 pad 0" in dot
    assert "lr_mult 1" in dot and "Dropout" not in dot
    graph = caffe.draw.get_pydot_graph(net, "TB")
    # Input->data, data->conv, conv->conv blob, conv blob->drop, drop->conv blob (in place)
    assert len(graph.get_edges()) == 5


def test_draw_without_pydot_says_how_to_install(monkeypatch):
    import poseidon_cli.draw as draw
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(ImportError, match=r"pip install 'poseidon-cli\[draw\]'"):
        draw.get_pydot_graph(caffe.proto.caffe_pb2.NetParameter())


def test_hdf5_without_h5py_is_one_clear_line(monkeypatch, tmp_path):
    from poseidon_cli import hdf5
    from poseidon_cli.errors import ConfigError
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ConfigError) as info:
        hdf5.require_h5py()
    assert "pip install 'poseidon-cli[hdf5]'" in info.value.one_line()
    assert "\n" not in info.value.one_line()
