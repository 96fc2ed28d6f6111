"""NetSpec.to_proto gives the NetParameter pycaffe's net_spec gives: compared, message for
message, with hand-written prototxt (pycaffe's documented naming and assignment rules)."""
import pytest
from google.protobuf import text_format

import poseidon_cli as caffe
from poseidon_cli import layers as L, params as P
from poseidon_cli._proto import caffe_pb2


def parse(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def lenet(lmdb, batch_size):
    # Caffe's "learning LeNet" notebook net, written as pycaffe users write it
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


LENET = '''
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00392156862745098 }
  data_param { source: "mnist/train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
'''


def test_lenet_equals_hand_written_prototxt():
    got = lenet("mnist/train_lmdb", 64)
    assert got == parse(LENET), text_format.MessageToString(got)
    # and it round-trips through text (str(n.to_proto()) is how users write the file)
    assert parse(str(got)) == got


def test_in_place_ntop0_params_repeated_include_and_autonames():
    n = caffe.NetSpec()
    n.data = L.Input(shape=[dict(dim=[2, 3, 8, 8])])
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, pad=[1],
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           bias_filler=dict(type="constant", value=0.1))
    n.bn = L.BatchNorm(n.conv, in_place=True, include=dict(phase=caffe.TRAIN))
    n.act = L.ReLU(n.conv, in_place=True)
    pooled = L.Pooling(n.conv, pool=P.Pooling.AVE, global_pooling=True)   # not assigned: autoname
    n.ip = L.InnerProduct(pooled, num_output=2, loss_weight=0.5, name="classifier")
    n.silence = L.Silence(n.data, ntop=0)
    want = parse('''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 pad: 1 kernel_size: 3
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" include { phase: TRAIN } }
layer { name: "act" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "Pooling1" type: "Pooling" bottom: "conv" top: "Pooling1"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "classifier" type: "InnerProduct" bottom: "Pooling1" top: "ip" loss_weight: 0.5
  inner_product_param { num_output: 2 } }
layer { name: "silence" type: "Silence" bottom: "data" }
''')
    got = n.to_proto()
    assert got == want, text_format.MessageToString(got)


def test_to_proto_of_tops_generates_every_name():
    data = L.DummyData(shape=dict(dim=[1, 2]))
    a = L.ReLU(data)
    b = L.ReLU(data)
    got = caffe.to_proto(L.Eltwise(a, b), L.TanH(a))
    want = parse('''
layer { name: "DummyData1" type: "DummyData" top: "DummyData1" dummy_data_param { shape { dim: 1 dim: 2 } } }
layer { name: "ReLU1" type: "ReLU" bottom: "DummyData1" top: "ReLU1" }
layer { name: "ReLU2" type: "ReLU" bottom: "DummyData1" top: "ReLU2" }
layer { name: "Eltwise1" type: "Eltwise" bottom: "ReLU1" bottom: "ReLU2" top: "Eltwise1" }
layer { name: "TanH1" type: "TanH" bottom: "ReLU1" top: "TanH1" }
''')
    assert got == want, text_format.MessageToString(got)
    assert a.to_proto().layer[-1].type == "ReLU"


def test_netspec_net_builds_and_errors_are_clear():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3]))
    n["out"] = L.Power(n.data, power=2)
    assert n.keys() == ["data", "out"] and n["out"] is n.out
    net = caffe.Net(n.to_proto(), caffe.TEST)
    import numpy as np
    assert np.allclose(net.forward(data=np.array([[1, 2, 3]], np.float32))["out"], [[1, 4, 9]])
    with pytest.raises(TypeError, match="bottom 0 is not a top"):
        L.ReLU("data")
    with pytest.raises(AttributeError, match="neither convolution_param nor LayerParameter has a field 'kernal_size'"):
        bad = caffe.NetSpec()
        bad.data = L.Input(shape=dict(dim=[1]))
        bad.c = L.Convolution(bad.data, kernal_size=3)
        bad.to_proto()
