"""pycaffe's Net members on poseidon's Net: constructor forms, name tables, forward/backward with
start/end, forward_all, MemoryData input, sharing, weights in binary and HDF5, file fidelity
(layer phase, 0-d blobs). References: hand-computed numpy, Caffe's formats built from field
numbers (tests/wire.py)."""
import numpy as np
import pytest

import poseidon_cli as caffe
from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import NetError

from wire import f_bytes, f_string, f_varint, packed_floats

NET = '''
name: "mini"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.25 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "scale" type: "Power" bottom: "ip" top: "out" power_param { scale: 3 } }
'''


@pytest.fixture
def proto(tmp_path):
    p = tmp_path / "mini.prototxt"
    p.write_text(NET)
    return str(p)


def test_constructor_forms_and_name_tables(proto, tmp_path):
    net = caffe.Net(proto, caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    legacy = caffe.Net(proto, str(tmp_path / "w.caffemodel"), caffe.TEST)   # (proto, weights, phase)
    keyword = caffe.Net(proto, caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    for other in (legacy, keyword):
        assert other.phase == caffe.TEST
        assert np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)
    assert list(net.layer_dict) == ["data", "ip", "relu", "scale"]
    assert net.layer_dict["ip"] is net.layers[1] and net.layers[1].type == "InnerProduct"
    assert [b.shape for b in net.layers[1].blobs] == [(2, 4), (2,)]
    assert dict(net.top_names) == {"data": ["data"], "ip": ["ip"], "relu": ["ip"], "scale": ["out"]}
    assert dict(net.bottom_names) == {"data": [], "ip": ["data"], "relu": ["ip"], "scale": ["ip"]}
    assert net._layer_names == ["data", "ip", "relu", "scale"]
    assert net._blob_names == ["data", "ip", "out"]
    assert dict(net.blob_loss_weights) == {"data": 0.0, "ip": 0.0, "out": 0.0}
    assert net.inputs == ["data"] and net.outputs == ["out"]
    b = net.blobs["data"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (3, 4, 1, 1, 12)


def test_forward_backward_start_end_return_what_pycaffe_returns(proto):
    net = caffe.Net(proto, caffe.TEST)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    W, bias = net.params["ip"][0].data.copy(), net.params["ip"][1].data.copy()
    ip = np.maximum(x @ W.T + bias, 0)
    out = net.forward(data=x)
    assert set(out) == {"out"} and np.allclose(out["out"], 3 * ip, rtol=1e-5)
    part = net.forward(end="ip", blobs=["data"])           # the end layer's tops + blobs asked
    assert set(part) == {"ip", "data"}
    rest = net.forward(start="relu")
    assert np.allclose(rest["out"], 3 * ip, rtol=1e-5)
    top = np.ones((3, 2), np.float32)
    # backward to the end layer returns the diffs of that layer's bottoms
    diffs = net.backward(end="scale", out=top)
    assert set(diffs) == {"ip"} and np.allclose(diffs["ip"], 3 * top)
    full = net.backward(out=top)                           # to the first layer: the net inputs
    assert set(full) == {"data"}
    assert np.allclose(full["data"], (3 * top * (ip > 0)) @ W, rtol=1e-5)
    assert set(net.backward(out=top, diffs=["ip"])) == {"data", "ip"}
    assert np.isclose(net._forward(0, 3), 0.0)


def test_forward_all_pads_the_last_batch_and_drops_the_padding(proto):
    net = caffe.Net(proto, caffe.TEST)
    x = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    W, bias = net.params["ip"][0].data, net.params["ip"][1].data
    out = net.forward_all(data=x)
    assert out["out"].shape == (7, 2)
    assert np.allclose(out["out"], 3 * np.maximum(x @ W.T + bias, 0), rtol=1e-5)
    outs, diffs = net.forward_backward_all(data=x, out=np.ones((7, 2), np.float32))
    assert outs["out"].shape == (7, 2) and diffs["data"].shape == (7, 4)
    assert np.allclose(diffs["data"], (3 * (x @ W.T + bias > 0)) @ W, rtol=1e-5)
    net.forward(data=x[:3])
    back = net.backward_all(out=np.full((3, 2), 2, np.float32))
    assert back["data"].shape == (3, 4)
    assert np.allclose(back["data"], (6 * (x[:3] @ W.T + bias > 0)) @ W, rtol=1e-5)


MEMORY_NET = '''
name: "mem"
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }
layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }
layer { name: "sink" type: "Silence" bottom: "label" }
'''


def test_set_input_arrays_with_memory_data(tmp_path):
    p = tmp_path / "mem.prototxt"
    p.write_text(MEMORY_NET)
    net = caffe.Net(str(p), caffe.TRAIN)
    data = np.arange(24, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([5, 6, 7, 8], dtype=np.float32)
    net.set_input_arrays(data, labels)
    seen = []
    for _ in range(3):   # batches 0-1, 2-3, then wrap to 0-1
        net.forward()
        seen.append((net.blobs["flat"].data.copy(), net.blobs["label"].data.copy()))
    assert np.array_equal(seen[0][0], data[:2].reshape(2, 6)) and list(seen[0][1]) == [5, 6]
    assert np.array_equal(seen[1][0], data[2:].reshape(2, 6)) and list(seen[1][1]) == [7, 8]
    assert np.array_equal(seen[2][0], seen[0][0])
    with pytest.raises(NetError, match="multiple of batch_size 2"):
        net.set_input_arrays(data[:3], labels[:3])
    with pytest.raises(NetError, match="float32"):
        net.set_input_arrays(data.astype(np.float64), labels)
    with pytest.raises(NetError, match="set_input_arrays"):
        caffe.Net(str(p), caffe.TRAIN).forward()     # no arrays handed over yet
    other = tmp_path / "nomem.prototxt"
    other.write_text(NET)
    with pytest.raises(NetError, match="MemoryData"):
        caffe.Net(str(other), caffe.TEST).set_input_arrays(data, labels)


def test_share_with_aliases_weights(proto):
    a, b = caffe.Net(proto, caffe.TEST), caffe.Net(proto, caffe.TEST)
    b.share_with(a)
    a.params["ip"][0].data[...] = 7
    assert (b.params["ip"][0].data == 7).all()


def test_hdf5_weights_layout_and_round_trip(proto, tmp_path):
    h5py = pytest.importorskip("h5py")
    net = caffe.Net(proto, caffe.TEST)
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path)
    with h5py.File(path, "r") as f:        # Caffe's layout: data/<layer>/<blob index>
        assert sorted(f["data"].keys()) == ["ip"]
        assert np.array_equal(f["data/ip/0"][()], net.params["ip"][0].data)
        assert np.array_equal(f["data/ip/1"][()], net.params["ip"][1].data)
    fresh = caffe.Net(proto, caffe.TEST)
    fresh.load_hdf5(path)
    assert np.array_equal(fresh.params["ip"][0].data, net.params["ip"][0].data)
    again = caffe.Net(proto, caffe.TEST)
    again.copy_from(path)                  # copy_from picks the format from ".h5"
    assert np.array_equal(again.params["ip"][1].data, net.params["ip"][1].data)


def test_saved_caffemodel_carries_each_layers_phase(proto, tmp_path):
    net = caffe.Net(proto, caffe.TEST)
    net.save(str(tmp_path / "m.caffemodel"))
    model = caffe_pb2.NetParameter()
    model.ParseFromString((tmp_path / "m.caffemodel").read_bytes())
    assert [l.phase for l in model.layer] == [caffe_pb2.TEST] * 4
    assert all(l.HasField("phase") for l in model.layer)


PRELU = '''
name: "p"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "out" prelu_param { channel_shared: true
  filler { type: "constant" value: 0.3 } } }
'''


def test_channel_shared_prelu_slope_is_a_zero_d_blob_both_ways(tmp_path):
    p = tmp_path / "p.prototxt"
    p.write_text(PRELU)
    net = caffe.Net(str(p), caffe.TEST)
    assert net.params["prelu"][0].shape == ()
    net.save(str(tmp_path / "p.caffemodel"))
    # What we write: BlobProto with data (field 5) only, no shape message (field 7)
    raw = caffe_pb2.NetParameter()
    raw.ParseFromString((tmp_path / "p.caffemodel").read_bytes())
    blob = [l for l in raw.layer if l.name == "prelu"][0].blobs[0]
    assert not blob.HasField("shape") and list(blob.data) == pytest.approx([0.3])
    # What Caffe writes: layer { name: "prelu" blobs { data: [0.75] } }, built from field numbers
    blob_bytes = packed_floats(5, [0.75])
    layer_bytes = f_string(1, "prelu") + f_string(2, "PReLU") + f_bytes(7, blob_bytes)
    caffe_model = tmp_path / "caffe.caffemodel"
    caffe_model.write_bytes(f_string(1, "p") + f_bytes(100, layer_bytes))
    assert config.blob_shape(config.load_caffemodel(caffe_model).layer[0].blobs[0]) == ()
    net.copy_from(str(caffe_model))
    assert float(net.params["prelu"][0].data) == pytest.approx(0.75)
    # legacy dims are used when any of them is set, as Caffe's Blob::FromProto does
    legacy = caffe_pb2.BlobProto()
    legacy.ParseFromString(f_varint(2, 3) + f_varint(4, 2) + packed_floats(5, [0.0] * 6))
    assert config.blob_shape(legacy) == (0, 3, 0, 2)
