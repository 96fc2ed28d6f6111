"""Prototxt loading, Caffe's upgrade rules, path resolution, and the conformance corpus."""
import os

import pytest
from google.protobuf import text_format

from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import ConfigError


def _net_files(root):
    return sorted(p for p in root.rglob("*.prototxt") if "solver" not in p.name)


def _solver_files(root):
    return sorted(p for p in root.rglob("*solver*.prototxt"))


def test_every_conformance_net_parses_upgrades_and_round_trips(conformance_dir):
    files = _net_files(conformance_dir)
    assert len(files) >= 20
    for path in files:
        net = config.load_net_param(path, resolve=False)
        assert net.layer and not net.layers and not net.input, path
        assert all(l.type for l in net.layer), path
        text = text_format.MessageToString(net)
        again = caffe_pb2.NetParameter()
        text_format.Parse(text, again)
        assert again == net, path
        # upgrading the upgraded text changes nothing
        twice = caffe_pb2.NetParameter()
        twice.CopyFrom(again)
        config.upgrade_net(twice)
        assert twice == again, path


def test_every_conformance_solver_loads(conformance_dir):
    files = _solver_files(conformance_dir)
    assert len(files) >= 10
    for path in files:
        s = config.load_solver_param(path)
        assert s.type in config.SOLVER_TYPES
        assert not s.HasField("solver_type")


def test_v1_lenet_upgrade_matches_bvlc_current_format(conformance_dir):
    """Poseidon's V1 LeNet upgrades to the same layers as BVLC's current-format LeNet."""
    v1 = config.load_net_param(conformance_dir / "poseidon/examples/mnist/lenet_train_test.prototxt", resolve=False)
    v2 = config.load_net_param(conformance_dir / "bvlc/examples/mnist/lenet_train_test.prototxt", resolve=False)
    assert [l.type for l in v1.layer] == [l.type for l in v2.layer]
    for a, b in zip(v1.layer, v2.layer):
        assert [(p.lr_mult, p.decay_mult) for p in a.param] == [(p.lr_mult, p.decay_mult) for p in b.param], a.name
        if a.type in ("Convolution", "InnerProduct", "Pooling"):
            for field in ("convolution_param", "inner_product_param", "pooling_param"):
                assert getattr(a, field) == getattr(b, field), (a.name, field)
    data = v1.layer[0]
    assert data.data_param.shared_file_system is True
    assert data.transform_param.scale == pytest.approx(0.00390625)


def test_v1_blobs_lr_and_weight_decay_become_param_specs():
    net = caffe_pb2.NetParameter()
    text_format.Parse("""
      layers { name: "fc" type: INNER_PRODUCT bottom: "x" top: "y"
               blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
               inner_product_param { num_output: 10 } }
      layers { name: "loss" type: SOFTMAX_LOSS bottom: "y" bottom: "label" top: "loss" }
    """, net)
    config.upgrade_net(net)
    fc, loss = net.layer
    assert fc.type == "InnerProduct" and loss.type == "SoftmaxWithLoss"
    assert [(p.lr_mult, p.decay_mult) for p in fc.param] == [(1, 1), (2, 0)]
    assert fc.inner_product_param.num_output == 10
    assert not net.layers


def test_v1_data_transform_fields_move_to_transform_param():
    net = caffe_pb2.NetParameter()
    text_format.Parse("""
      layers { name: "d" type: DATA top: "data" top: "label"
               data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto"
                            crop_size: 3 mirror: true } }
    """, net)
    config.upgrade_net(net)
    (d,) = net.layer
    assert d.type == "Data"
    tp = d.transform_param
    assert (tp.scale, tp.mean_file, tp.crop_size, tp.mirror) == (0.5, "m.binaryproto", 3, True)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        assert not d.data_param.HasField(f)


def test_input_dim_becomes_input_layer():
    net = caffe_pb2.NetParameter()
    text_format.Parse('input: "data" input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227 '
                      'layers { name: "r" type: RELU bottom: "data" top: "data" }', net)
    config.upgrade_net(net)
    assert net.layer[0].type == "Input"
    assert list(net.layer[0].top) == ["data"]
    assert list(net.layer[0].input_param.shape[0].dim) == [10, 3, 227, 227]
    assert net.layer[1].type == "ReLU"
    assert not net.input and not net.input_dim


def test_input_dim_count_mismatch_is_an_error():
    net = caffe_pb2.NetParameter()
    text_format.Parse('input: "data" input_dim: 10 input_dim: 3', net)
    with pytest.raises(ConfigError, match="input_dim"):
        config.upgrade_net(net)


def test_v0_upgrade_folds_padding_layer_into_conv():
    net = caffe_pb2.NetParameter()
    text_format.Parse("""
      layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
      layers { layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1
                       blobs_lr: 1 blobs_lr: 2 } bottom: "pad1" top: "conv1" }
      layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 }
               bottom: "conv1" top: "pool1" }
      layers { layer { name: "data" type: "data" source: "db" batchsize: 8 meanfile: "m" cropsize: 4 }
               top: "x" }
    """, net)
    config.upgrade_net(net)
    conv, pool, data = net.layer
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    cp = conv.convolution_param
    assert (list(cp.pad), list(cp.kernel_size), list(cp.stride), cp.num_output) == ([2], [5], [1], 8)
    assert [p.lr_mult for p in conv.param] == [1, 2]
    assert pool.type == "Pooling" and pool.pooling_param.kernel_size == 3 and pool.pooling_param.stride == 2
    assert data.type == "Data" and data.data_param.batch_size == 8
    assert data.transform_param.mean_file == "m" and data.transform_param.crop_size == 4


def test_batchnorm_param_specs_dropped():
    net = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" '
                      'param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }', net)
    config.upgrade_net(net)
    assert len(net.layer[0].param) == 0


def test_mixed_layer_and_layers_is_an_error():
    net = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }', net)
    with pytest.raises(ConfigError, match="both"):
        config.upgrade_net(net)


@pytest.mark.parametrize("legacy,name", [("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
                                         ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_upgrade(tmp_path, legacy, name):
    p = tmp_path / "s.prototxt"
    p.write_text(f'net: "n.prototxt" base_lr: 0.1 solver_type: {legacy}\n')
    s = config.load_solver_param(p)
    assert s.type == name and not s.HasField("solver_type")


def test_solver_type_conflict(tmp_path):
    p = tmp_path / "s.prototxt"
    p.write_text('net: "n" solver_type: ADAM type: "SGD"\n')
    with pytest.raises(ConfigError, match="conflicts"):
        config.load_solver_param(p)


def test_relative_paths_resolve_against_prototxt_folder(tmp_path, monkeypatch):
    sub = tmp_path / "model"
    sub.mkdir()
    (sub / "net.prototxt").write_text(
        'layer { name: "d" type: "Data" top: "x" data_param { source: "train_lmdb" batch_size: 1 } '
        'transform_param { mean_file: "mean.binaryproto" } }')
    (sub / "solver.prototxt").write_text('net: "net.prototxt" snapshot_prefix: "snaps/lenet"')
    monkeypatch.chdir(tmp_path)
    s = config.load_solver_param("model/solver.prototxt")
    assert s.net == str(sub / "net.prototxt")
    assert s.snapshot_prefix == str(sub / "snaps" / "lenet")
    net = config.load_net_param(s.net)
    assert net.layer[0].data_param.source == str(sub / "train_lmdb")
    assert net.layer[0].transform_param.mean_file == str(sub / "mean.binaryproto")


def test_path_existing_only_relative_to_cwd_is_kept(tmp_path, monkeypatch):
    """BVLC's examples name paths relative to Caffe's root (the working directory)."""
    (tmp_path / "examples/mnist/mnist_train_lmdb").mkdir(parents=True)
    (tmp_path / "examples/mnist/net.prototxt").write_text(
        'layer { name: "d" type: "Data" top: "x" data_param { source: "examples/mnist/mnist_train_lmdb" } }')
    monkeypatch.chdir(tmp_path)
    net = config.load_net_param("examples/mnist/net.prototxt")
    assert net.layer[0].data_param.source == "examples/mnist/mnist_train_lmdb"


def test_placeholders_replaced_from_environment(tmp_path, monkeypatch):
    p = tmp_path / "n.prototxt"
    p.write_text('layer { name: "d" type: "Data" top: "x" data_param { source: "CAFFE_ROOT/examples/db" } }'
                 'layer { name: "e" type: "Data" top: "y" data_param { source: "POSEIDON_ROOT/db2" } }')
    monkeypatch.setenv("CAFFE_ROOT", "/opt/caffe")
    monkeypatch.delenv("POSEIDON_ROOT", raising=False)
    net = config.load_net_param(p)
    assert net.layer[0].data_param.source == "/opt/caffe/examples/db"
    # unset placeholder stays a (relative) path, resolved beside the prototxt
    assert net.layer[1].data_param.source == str(tmp_path / "POSEIDON_ROOT/db2")
    assert config.expand_placeholders("CAFFE_ROOTX/a") == "CAFFE_ROOTX/a"


def test_syntax_error_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(ConfigError) as err:
        config.load_net_param(p)
    msg = str(err.value)
    assert f"{p}:4:" in msg and "tpye" in msg and "\n" not in msg


def test_unbalanced_braces(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('layer {\n  name: "a"\n')
    with pytest.raises(ConfigError, match=str(p)):
        config.load_net_param(p)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such file"):
        config.load_net_param("/definitely/not/here.prototxt")


def test_binary_file_that_is_not_a_caffemodel(tmp_path):
    p = tmp_path / "x.caffemodel"
    p.write_bytes(b"\xff\xff\xff\xff garbage")
    with pytest.raises(ConfigError, match="not a binary NetParameter"):
        config.load_caffemodel(p)
    text = tmp_path / "t.caffemodel"
    text.write_text('name: "looks like text"\n')
    with pytest.raises(ConfigError):
        config.load_caffemodel(text)


def test_blobproto_round_trip_and_shape(tmp_path):
    b = caffe_pb2.BlobProto(num=1, channels=3, height=2, width=2)
    b.data.extend(range(12))
    p = tmp_path / "mean.binaryproto"
    config.write_binary(b, p)
    got = config.load_blobproto(p)
    assert config.blob_shape(got) == (1, 3, 2, 2)
    assert list(got.data) == list(range(12))
    assert not any(name.startswith("mean.binaryproto.tmp") for name in os.listdir(tmp_path))
