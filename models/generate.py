#!/usr/bin/env python
"""Write the reference models under ``models/`` from their architectures, with our NetSpec.

Each model folder gets ``train_val.prototxt`` (TRAIN and TEST data layers, loss, accuracy),
``solver.prototxt`` and ``deploy.prototxt`` (an ``Input`` layer, no loss, a ``Softmax`` "prob").
The nets are the published architectures (LeNet, the two CIFAR-10 nets, AlexNet, CaffeNet,
GoogLeNet, ResNet-50) with Caffe's layer and blob names, so a ``.caffemodel`` trained by Caffe
loads into them by layer name; the files themselves are generated here.

Data paths are Caffe's: relative to the repository root (``examples/<dataset>/...``), which is
where the ``examples/*/train_*.sh`` scripts run from.

    python models/generate.py            # rewrite every model folder beside this file
    python models/generate.py --check    # exit 1 when a committed file differs from this script

``tests/models`` checks that the committed files are what this script writes.
"""
from __future__ import annotations

import argparse
import os
import sys

from google.protobuf import text_format

from poseidon_cli import NetSpec, layers as L, params as P
from poseidon_cli._proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
HERE = os.path.dirname(os.path.abspath(__file__))

# lr/decay multipliers Caffe's reference nets give weights and biases
WB = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
WB_CAFFE = [dict(lr_mult=1), dict(lr_mult=2)]  # how the MNIST / CIFAR-10 examples write it
FROZEN3 = [dict(lr_mult=0, decay_mult=0)] * 3  # BatchNorm's mean, variance, moving-average factor


def gauss(std):
    return dict(type="gaussian", std=std)


def const(v):
    return dict(type="constant", value=v)


# ---- data and heads shared by every model -----------------------------------------------------

def data_layer(phase, source, batch, transform, name="data"):
    return L.Data(name=name, source=source, batch_size=batch, backend=P.Data.LMDB,
                  transform_param=transform, include=dict(phase=phase), ntop=2)


def train_val(name, body, train_src, test_src, batches, train_tf, test_tf, heads, data_name):
    """A TRAIN+TEST net: two Data layers (same tops), ``body(n, data)`` -> scores, then ``heads``
    (list of (suffix-free layer names, score top, loss_weight, accuracy tops))."""
    n = NetSpec()
    n.data, n.label = data_layer(TRAIN, train_src, batches[0], train_tf, data_name)
    body(n, n.data)
    heads(n, n.label)
    net = n.to_proto()
    test = NetSpec()
    test.data, test.label = data_layer(TEST, test_src, batches[1], test_tf, data_name)
    test_layer = test.to_proto().layer[0]
    net.layer.insert(1, test_layer)
    net.name = name
    return net


def deploy(name, body, shape, prob_of):
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=list(shape)))
    body(n, n.data)
    n.prob = L.Softmax(n[prob_of])
    net = n.to_proto()
    net.name = name
    for lp in net.layer:
        if lp.type == "BatchNorm":  # a deploy net normalizes with the learned statistics
            lp.batch_norm_param.use_global_stats = True
    return net


def loss_and_accuracy(score, top5=False):
    """Heads: TEST-phase ``accuracy`` (and ``accuracy_top5``), then the ``loss``."""
    def heads(n, label):
        n.accuracy = L.Accuracy(n[score], label, include=dict(phase=TEST))
        if top5:
            n.accuracy_top5 = L.Accuracy(n[score], label, include=dict(phase=TEST),
                                         accuracy_param=dict(top_k=5))
        n.loss = L.SoftmaxWithLoss(n[score], label)
    return heads


def solver_text(fields):
    """SolverParameter text, fields in the order given (Caffe's own files' order)."""
    sp = caffe_pb2.SolverParameter()
    for key, value in fields:
        if isinstance(value, list) or sp.DESCRIPTOR.fields_by_name[key].is_repeated:
            getattr(sp, key).extend(value if isinstance(value, list) else [value])
        elif key == "solver_mode":
            sp.solver_mode = getattr(caffe_pb2.SolverParameter, value)
        else:
            setattr(sp, key, value)
    # text_format orders by field number; keep the author's order for people reading it
    lines = []
    for key, value in fields:
        field = sp.DESCRIPTOR.fields_by_name[key]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if field.type == field.TYPE_STRING:
                lines.append(f'{key}: "{v}"')
            elif field.enum_type is not None:
                lines.append(f"{key}: {v}")
            elif isinstance(v, bool):
                lines.append(f"{key}: {'true' if v else 'false'}")  # what Caffe parses
            elif isinstance(v, float):
                lines.append(f"{key}: {v!r}")
            else:
                lines.append(f"{key}: {v}")
    text = "\n".join(lines) + "\n"
    # what we wrote must parse back to the same message
    assert text_format.Parse(text, caffe_pb2.SolverParameter()) == sp, key
    return text


# ---- LeNet (MNIST) ----------------------------------------------------------------------------

def lenet_body(n, data, deploy=False):
    xavier = dict(type="xavier")
    n.conv1 = L.Convolution(data, num_output=20, kernel_size=5, stride=1, param=WB_CAFFE,
                            weight_filler=xavier, bias_filler=dict(type="constant"))
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=50, kernel_size=5, stride=1, param=WB_CAFFE,
                            weight_filler=xavier, bias_filler=dict(type="constant"))
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, param=WB_CAFFE, weight_filler=xavier,
                           bias_filler=dict(type="constant"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, param=WB_CAFFE, weight_filler=xavier,
                           bias_filler=dict(type="constant"))


# ---- CIFAR-10 quick and full ------------------------------------------------------------------

def cifar_conv(n, name, bottom, num, std):  # noqa: D103
    n[name] = L.Convolution(bottom, num_output=num, pad=2, kernel_size=5, stride=1, param=WB_CAFFE,
                            weight_filler=gauss(std), bias_filler=dict(type="constant"))
    return n[name]


def cifar10_quick_body(n, data):
    cifar_conv(n, "conv1", data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    cifar_conv(n, "conv2", n.relu1, 32, 0.01)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    cifar_conv(n, "conv3", n.pool2, 64, 0.01)
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.pool3 = L.Pooling(n.relu3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, num_output=64, param=WB_CAFFE, weight_filler=gauss(0.1),
                           bias_filler=dict(type="constant"))
    n.ip2 = L.InnerProduct(n.ip1, num_output=10, param=WB_CAFFE, weight_filler=gauss(0.1),
                           bias_filler=dict(type="constant"))


def cifar10_full_body(n, data):
    lrn = dict(local_size=3, alpha=5e-05, beta=0.75, norm_region=P.LRN.WITHIN_CHANNEL)
    cifar_conv(n, "conv1", data, 32, 0.0001)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.relu1 = L.ReLU(n.pool1, in_place=True)
    n.norm1 = L.LRN(n.relu1, **lrn)
    cifar_conv(n, "conv2", n.norm1, 32, 0.01)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.norm2 = L.LRN(n.pool2, **lrn)
    # Caffe's cifar10_full gives conv3 no multipliers (defaults 1 and 1)
    n.conv3 = L.Convolution(n.norm2, num_output=64, pad=2, kernel_size=5, stride=1,
                            weight_filler=gauss(0.01), bias_filler=dict(type="constant"))
    n.relu3 = L.ReLU(n.conv3, in_place=True)
    n.pool3 = L.Pooling(n.relu3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.ip1 = L.InnerProduct(n.pool3, num_output=10,
                           param=[dict(lr_mult=1, decay_mult=250), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=gauss(0.01), bias_filler=dict(type="constant"))


# ---- AlexNet and CaffeNet ---------------------------------------------------------------------

def _alex_family(n, data, caffenet):
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    b1 = 1 if caffenet else 0.1  # CaffeNet's biases of conv2/4/5 and fc6/7

    def conv(name, bottom, num, k, bias, **kw):
        n[name] = L.Convolution(bottom, num_output=num, kernel_size=k, param=WB,
                                weight_filler=gauss(0.01), bias_filler=const(bias), **kw)
        n["relu" + name[-1]] = L.ReLU(n[name], in_place=True)
        return n["relu" + name[-1]]

    x = conv("conv1", data, 96, 11, 0, stride=4)
    for i in (1, 2):
        if caffenet:  # CaffeNet pools before normalizing; AlexNet normalizes first
            n[f"pool{i}"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            n[f"norm{i}"] = L.LRN(n[f"pool{i}"], **lrn)
            x = n[f"norm{i}"]
        else:
            n[f"norm{i}"] = L.LRN(x, **lrn)
            n[f"pool{i}"] = L.Pooling(n[f"norm{i}"], pool=P.Pooling.MAX, kernel_size=3, stride=2)
            x = n[f"pool{i}"]
        if i == 1:
            x = conv("conv2", x, 256, 5, b1, pad=2, group=2)
    x = conv("conv3", x, 384, 3, 0, pad=1)
    x = conv("conv4", x, 384, 3, b1, pad=1, group=2)
    x = conv("conv5", x, 256, 3, b1, pad=1, group=2)
    n.pool5 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool5
    for i in (6, 7):
        n[f"fc{i}"] = L.InnerProduct(x, num_output=4096, param=WB, weight_filler=gauss(0.005),
                                     bias_filler=const(b1))
        n[f"relu{i}"] = L.ReLU(n[f"fc{i}"], in_place=True)
        n[f"drop{i}"] = L.Dropout(n[f"relu{i}"], dropout_ratio=0.5, in_place=True)
        x = n[f"drop{i}"]
    n.fc8 = L.InnerProduct(x, num_output=1000, param=WB, weight_filler=gauss(0.01),
                           bias_filler=const(0))


def alexnet_body(n, data):
    _alex_family(n, data, caffenet=False)


def caffenet_body(n, data):
    _alex_family(n, data, caffenet=True)


# ---- GoogLeNet --------------------------------------------------------------------------------

def _gconv(n, name, bottom, num, k, relu, std=None, **kw):
    wf = dict(type="xavier")  # Caffe's file also gives std, which xavier ignores
    n[name] = L.Convolution(bottom, num_output=num, kernel_size=k, param=WB, weight_filler=wf,
                            bias_filler=const(0.2), **kw)
    n[relu] = L.ReLU(n[name], in_place=True)
    return n[relu]


def _inception(n, name, bottom, c1, c3r, c3, c5r, c5, cp):
    p = f"inception_{name}/"
    a = _gconv(n, p + "1x1", bottom, c1, 1, p + "relu_1x1", std=0.03)
    b = _gconv(n, p + "3x3_reduce", bottom, c3r, 1, p + "relu_3x3_reduce", std=0.09)
    b = _gconv(n, p + "3x3", b, c3, 3, p + "relu_3x3", std=0.03, pad=1)
    c = _gconv(n, p + "5x5_reduce", bottom, c5r, 1, p + "relu_5x5_reduce", std=0.2)
    c = _gconv(n, p + "5x5", c, c5, 5, p + "relu_5x5", std=0.03, pad=2)
    n[p + "pool"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    d = _gconv(n, p + "pool_proj", n[p + "pool"], cp, 1, p + "relu_pool_proj", std=0.1)
    n[p + "output"] = L.Concat(a, b, c, d)
    return n[p + "output"]


def _aux_head(n, k, bottom, label):
    p = f"loss{k}/"
    n[p + "ave_pool"] = L.Pooling(bottom, pool=P.Pooling.AVE, kernel_size=5, stride=3)
    x = _gconv(n, p + "conv", n[p + "ave_pool"], 128, 1, p + "relu_conv", std=0.08)
    n[p + "fc"] = L.InnerProduct(x, num_output=1024, param=WB,
                                 weight_filler=dict(type="xavier"),
                                 bias_filler=const(0.2))
    n[p + "relu_fc"] = L.ReLU(n[p + "fc"], in_place=True)
    n[p + "drop_fc"] = L.Dropout(n[p + "relu_fc"], dropout_ratio=0.7, in_place=True)
    n[p + "classifier"] = L.InnerProduct(n[p + "drop_fc"], num_output=1000, param=WB,
                                         weight_filler=dict(type="xavier"),
                                         bias_filler=const(0))
    _googlenet_loss(n, k, label)


def googlenet_body(n, data, label=None):
    """The deploy body; given the ``label`` top it adds the two auxiliary classifiers (loss1 after
    inception_4a, loss2 after 4d, each weighted 0.3) where Caffe's train_val has them."""
    x = _gconv(n, "conv1/7x7_s2", data, 64, 7, "conv1/relu_7x7", std=0.1, pad=3, stride=2)
    n["pool1/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], local_size=5, alpha=0.0001, beta=0.75)
    x = _gconv(n, "conv2/3x3_reduce", n["pool1/norm1"], 64, 1, "conv2/relu_3x3_reduce", std=0.1)
    x = _gconv(n, "conv2/3x3", x, 192, 3, "conv2/relu_3x3", std=0.03, pad=1)
    n["conv2/norm2"] = L.LRN(x, local_size=5, alpha=0.0001, beta=0.75)
    n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = _inception(n, "3a", n["pool2/3x3_s2"], 64, 96, 128, 16, 32, 32)
    x = _inception(n, "3b", x, 128, 128, 192, 32, 96, 64)
    n["pool3/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = _inception(n, "4a", n["pool3/3x3_s2"], 192, 96, 208, 16, 48, 64)
    if label is not None:
        _aux_head(n, 1, x, label)
    x = _inception(n, "4b", x, 160, 112, 224, 24, 64, 64)
    x = _inception(n, "4c", x, 128, 128, 256, 24, 64, 64)
    x = _inception(n, "4d", x, 112, 144, 288, 32, 64, 64)
    if label is not None:
        _aux_head(n, 2, x, label)
    x = _inception(n, "4e", x, 256, 160, 320, 32, 128, 128)
    n["pool4/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = _inception(n, "5a", n["pool4/3x3_s2"], 256, 160, 320, 32, 128, 128)
    x = _inception(n, "5b", x, 384, 192, 384, 48, 128, 128)
    n["pool5/7x7_s1"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], dropout_ratio=0.4, in_place=True)
    n["loss3/classifier"] = L.InnerProduct(n["pool5/drop_7x7_s1"], num_output=1000, param=WB,
                                           weight_filler=dict(type="xavier"),
                                           bias_filler=const(0))


def _googlenet_loss(n, k, label):
    score = n[f"loss{k}/classifier"]
    n[f"loss{k}/loss{k}"] = L.SoftmaxWithLoss(score, label, loss_weight=0.3 if k < 3 else 1,
                                              name=f"loss{k}/loss" + ("3" if k == 3 else ""))
    n[f"loss{k}/top-1"] = L.Accuracy(score, label, include=dict(phase=TEST))
    n[f"loss{k}/top-5"] = L.Accuracy(score, label, include=dict(phase=TEST),
                                     accuracy_param=dict(top_k=5))


def googlenet_heads(n, label):
    _googlenet_loss(n, 3, label)


# ---- ResNet-50 --------------------------------------------------------------------------------

def _conv_bn(n, suffix, bottom, num, k, stride=1, pad=0, relu=True):
    """conv ``res<suffix>`` + BatchNorm ``bn<suffix>`` + Scale ``scale<suffix>``
    in place, + ReLU ``res<suffix>_relu``; the names the ResNet release uses."""
    if suffix == "_conv1":  # the released model's first convolution has a bias; no other one has
        conv, kw = "conv1", dict(param=WB, bias_filler=const(0))
    else:
        conv, kw = f"res{suffix}", dict(bias_term=False, param=[dict(lr_mult=1, decay_mult=1)])
    n[conv] = L.Convolution(bottom, num_output=num, kernel_size=k, stride=stride, pad=pad,
                            weight_filler=dict(type="msra"), **kw)
    n[f"bn{suffix}"] = L.BatchNorm(n[conv], in_place=True, param=FROZEN3)
    n[f"scale{suffix}"] = L.Scale(n[f"bn{suffix}"], in_place=True, bias_term=True)
    x = n[f"scale{suffix}"]
    if relu:
        n[f"{conv}_relu"] = L.ReLU(x, in_place=True)
        x = n[f"{conv}_relu"]
    return x


def _bottleneck(n, name, bottom, mid, out, stride, project):
    if project:
        short = _conv_bn(n, f"{name}_branch1", bottom, out, 1, stride=stride, relu=False)
    else:
        short = bottom
    x = _conv_bn(n, f"{name}_branch2a", bottom, mid, 1, stride=stride)
    x = _conv_bn(n, f"{name}_branch2b", x, mid, 3, pad=1)
    x = _conv_bn(n, f"{name}_branch2c", x, out, 1, relu=False)
    n[f"res{name}"] = L.Eltwise(short, x)
    n[f"res{name}_relu"] = L.ReLU(n[f"res{name}"], in_place=True)
    return n[f"res{name}_relu"]


def resnet50_body(n, data):
    x = _conv_bn(n, "_conv1", data, 64, 7, stride=2, pad=3)
    n.pool1 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool1
    for stage, blocks, mid in ((2, 3, 64), (3, 4, 128), (4, 6, 256), (5, 3, 512)):
        for b in range(blocks):
            x = _bottleneck(n, f"{stage}{'abcdef'[b]}", x, mid, mid * 4,
                            stride=(2 if b == 0 and stage > 2 else 1), project=(b == 0))
    n.pool5 = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000, param=WB,
                              weight_filler=dict(type="msra"), bias_filler=const(0))


# ---- the zoo ----------------------------------------------------------------------------------

IMAGENET_TRAIN = "examples/imagenet/ilsvrc12_train_lmdb"
IMAGENET_VAL = "examples/imagenet/ilsvrc12_val_lmdb"
IMAGENET_MEAN = "examples/imagenet/imagenet_mean.binaryproto"
BGR_MEAN = [104, 117, 123]
TUTORIAL = "%s test accuracy after %s iterations (Caffe's %s tutorial)"
ZOO = "%s top-1 / %s top-5 on ILSVRC 2012 val, single center crop (BVLC model zoo)"


def _imagenet_solver(prefix, base_lr, policy, extra, max_iter, display, wd, test_iter=1000,
                     test_interval=10000, snapshot=10000):
    return [("net", f"models/{prefix}/train_val.prototxt"), ("test_iter", test_iter),
            ("test_interval", test_interval), ("base_lr", base_lr), ("lr_policy", policy),
            *extra, ("display", display), ("max_iter", max_iter), ("momentum", 0.9),
            ("weight_decay", wd), ("snapshot", snapshot),
            ("snapshot_prefix", f"models/{prefix}/{prefix}_train"), ("solver_mode", "GPU")]


MODELS = {
    "lenet": dict(
        body=lenet_body, input=(64, 1, 28, 28), score="ip2", batches=(64, 100),
        train="examples/mnist/mnist_train_lmdb", test="examples/mnist/mnist_test_lmdb",
        train_tf=dict(scale=0.00390625), test_tf=dict(scale=0.00390625),
        heads=loss_and_accuracy("ip2"),
        solver=[("net", "models/lenet/train_val.prototxt"), ("test_iter", 100),
                ("test_interval", 500), ("base_lr", 0.01), ("momentum", 0.9),
                ("weight_decay", 0.0005), ("lr_policy", "inv"), ("gamma", 0.0001),
                ("power", 0.75), ("display", 100), ("max_iter", 10000), ("snapshot", 5000),
                ("snapshot_prefix", "models/lenet/lenet"), ("solver_mode", "GPU")],
        dataset="mnist", data_name="mnist",
        accuracy=TUTORIAL % ("99.1%", "10,000", "MNIST"),
        shapes={"conv1": (20, 24, 24), "pool1": (20, 12, 12), "conv2": (50, 8, 8),
                "pool2": (50, 4, 4), "ip1": (500,), "ip2": (10,), "prob": (10,)}),
    "cifar10_quick": dict(
        body=cifar10_quick_body, input=(1, 3, 32, 32), score="ip2", batches=(100, 100),
        train="examples/cifar10/cifar10_train_lmdb", test="examples/cifar10/cifar10_test_lmdb",
        train_tf=dict(mean_file="examples/cifar10/mean.binaryproto"),
        test_tf=dict(mean_file="examples/cifar10/mean.binaryproto"),
        heads=loss_and_accuracy("ip2"),
        solver=[("net", "models/cifar10_quick/train_val.prototxt"), ("test_iter", 100),
                ("test_interval", 500), ("base_lr", 0.001), ("momentum", 0.9),
                ("weight_decay", 0.004), ("lr_policy", "fixed"), ("display", 100),
                ("max_iter", 4000), ("snapshot", 4000),
                ("snapshot_prefix", "models/cifar10_quick/cifar10_quick"), ("solver_mode", "GPU")],
        dataset="cifar10", data_name="cifar",
        accuracy=TUTORIAL % ("about 75%", "4,000", "CIFAR-10"),
        shapes={"conv1": (32, 32, 32), "pool1": (32, 16, 16), "conv2": (32, 16, 16),
                "pool2": (32, 8, 8), "conv3": (64, 8, 8), "pool3": (64, 4, 4), "ip1": (64,),
                "ip2": (10,), "prob": (10,)}),
    "cifar10_full": dict(
        body=cifar10_full_body, input=(1, 3, 32, 32), score="ip1", batches=(100, 100),
        train="examples/cifar10/cifar10_train_lmdb", test="examples/cifar10/cifar10_test_lmdb",
        train_tf=dict(mean_file="examples/cifar10/mean.binaryproto"),
        test_tf=dict(mean_file="examples/cifar10/mean.binaryproto"),
        heads=loss_and_accuracy("ip1"),
        solver=[("net", "models/cifar10_full/train_val.prototxt"), ("test_iter", 100),
                ("test_interval", 1000), ("base_lr", 0.001), ("momentum", 0.9),
                ("weight_decay", 0.004), ("lr_policy", "multistep"), ("gamma", 0.1),
                ("stepvalue", [60000, 65000]), ("display", 200), ("max_iter", 70000),
                ("snapshot", 10000), ("snapshot_prefix", "models/cifar10_full/cifar10_full"),
                ("solver_mode", "GPU")],
        dataset="cifar10", data_name="cifar",
        accuracy=TUTORIAL % ("about 81%", "70,000", "CIFAR-10"),
        shapes={"conv1": (32, 32, 32), "pool1": (32, 16, 16), "norm1": (32, 16, 16),
                "pool2": (32, 8, 8), "pool3": (64, 4, 4), "ip1": (10,), "prob": (10,)}),
    "bvlc_alexnet": dict(
        body=alexnet_body, input=(10, 3, 227, 227), score="fc8", batches=(256, 50),
        train=IMAGENET_TRAIN, test=IMAGENET_VAL,
        train_tf=dict(mirror=True, crop_size=227, mean_file=IMAGENET_MEAN),
        test_tf=dict(mirror=False, crop_size=227, mean_file=IMAGENET_MEAN),
        heads=loss_and_accuracy("fc8"),
        solver=_imagenet_solver("bvlc_alexnet", 0.01, "step",
                                [("gamma", 0.1), ("stepsize", 100000)],
                                450000, 20, 0.0005),
        dataset="imagenet",
        accuracy=ZOO % ("57.1%", "80.2%"),
        shapes={"conv1": (96, 55, 55), "pool1": (96, 27, 27), "conv2": (256, 27, 27),
                "pool2": (256, 13, 13), "conv3": (384, 13, 13), "conv5": (256, 13, 13),
                "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
                "prob": (1000,)}),
    "bvlc_reference_caffenet": dict(
        body=caffenet_body, input=(10, 3, 227, 227), score="fc8", batches=(256, 50),
        train=IMAGENET_TRAIN, test=IMAGENET_VAL,
        train_tf=dict(mirror=True, crop_size=227, mean_file=IMAGENET_MEAN),
        test_tf=dict(mirror=False, crop_size=227, mean_file=IMAGENET_MEAN),
        heads=loss_and_accuracy("fc8"),
        solver=_imagenet_solver("bvlc_reference_caffenet", 0.01, "step",
                                [("gamma", 0.1), ("stepsize", 100000)], 450000, 20, 0.0005),
        dataset="imagenet",
        accuracy=ZOO % ("57.4%", "80.4%"),
        shapes={"conv1": (96, 55, 55), "pool1": (96, 27, 27), "norm1": (96, 27, 27),
                "conv2": (256, 27, 27), "pool2": (256, 13, 13), "pool5": (256, 6, 6),
                "fc6": (4096,), "fc8": (1000,), "prob": (1000,)}),
    "bvlc_googlenet": dict(
        body=googlenet_body, input=(10, 3, 224, 224), score="loss3/classifier", batches=(32, 50),
        train=IMAGENET_TRAIN, test=IMAGENET_VAL,
        train_tf=dict(mirror=True, crop_size=224, mean_value=BGR_MEAN),
        test_tf=dict(mirror=False, crop_size=224, mean_value=BGR_MEAN),
        heads=googlenet_heads, aux=True,
        solver=[("net", "models/bvlc_googlenet/train_val.prototxt"), ("test_iter", 1000),
                ("test_interval", 4000), ("test_initialization", False), ("display", 40),
                ("average_loss", 40), ("base_lr", 0.01), ("lr_policy", "poly"), ("power", 0.5),
                ("max_iter", 2400000), ("momentum", 0.9), ("weight_decay", 0.0002),
                ("snapshot", 40000), ("snapshot_prefix", "models/bvlc_googlenet/bvlc_googlenet"),
                ("solver_mode", "GPU")],
        dataset="imagenet",
        accuracy=ZOO % ("68.7%", "88.9%"),
        shapes={"conv1/7x7_s2": (64, 112, 112), "pool1/3x3_s2": (64, 56, 56),
                "conv2/3x3": (192, 56, 56), "pool2/3x3_s2": (192, 28, 28),
                "inception_3a/output": (256, 28, 28), "inception_3b/output": (480, 28, 28),
                "pool3/3x3_s2": (480, 14, 14), "inception_4a/output": (512, 14, 14),
                "inception_4e/output": (832, 14, 14), "pool4/3x3_s2": (832, 7, 7),
                "inception_5b/output": (1024, 7, 7), "pool5/7x7_s1": (1024, 1, 1),
                "loss3/classifier": (1000,), "prob": (1000,)}),
    "resnet_50": dict(
        body=resnet50_body, input=(1, 3, 224, 224), score="fc1000", batches=(32, 50),
        train=IMAGENET_TRAIN, test=IMAGENET_VAL,
        train_tf=dict(mirror=True, crop_size=224, mean_value=BGR_MEAN),
        test_tf=dict(mirror=False, crop_size=224, mean_value=BGR_MEAN),
        heads=loss_and_accuracy("fc1000", top5=True),
        # the authors published no solver: the common 90-epoch schedule (steps at epochs 30, 60,
        # 80) at batch 32, 40,000 iterations an epoch, lr 0.1 scaled by 32/256
        solver=_imagenet_solver("resnet_50", 0.0125, "multistep",
                                [("gamma", 0.1), ("stepvalue", [1200000, 2400000, 3200000])],
                                3600000, 20, 0.0001, test_interval=40000, snapshot=40000),
        note="No solver was published with the model; `solver.prototxt` is the common 90-epoch "
             "schedule (lr 0.1 x 32/256, divided by 10 at epochs 30, 60 and 80) at batch 32.",
        dataset="imagenet",
        accuracy=("75.3% top-1 / 92.2% top-5 on ILSVRC 2012 val, 10-crop (He et al., 2015), "
                  "for the released Caffe model"),
        shapes={"conv1": (64, 112, 112), "pool1": (64, 56, 56), "res2c": (256, 56, 56),
                "res3d": (512, 28, 28), "res4f": (1024, 14, 14), "res5c": (2048, 7, 7),
                "pool5": (2048, 1, 1), "fc1000": (1000,), "prob": (1000,)}),
}


def build(name):
    """{file name: text} of one model (train_val, deploy, solver)."""
    m = MODELS[name]
    body = m["body"]
    if m.get("aux"):
        def train_body(n, data):
            body(n, data, label=n.label)
    else:
        train_body = body
    tv = train_val(name, train_body, m["train"], m["test"], m["batches"], m["train_tf"],
                   m["test_tf"], m["heads"], m.get("data_name", "data"))
    dp = deploy(name, body, m["input"], m["score"])
    header = "# generated by models/generate.py; edit that script, then run it\n"
    return {
        "train_val.prototxt": header + text_format.MessageToString(tv),
        "deploy.prototxt": header + text_format.MessageToString(dp),
        "solver.prototxt": header + solver_text(m["solver"]),
    }


def param_count(net_param):
    """Learnable parameters of a deploy net (BatchNorm statistics are not learned)."""
    from poseidon_cli.net import Net  # noqa: PLC0415 (building costs memory; only on demand)
    stats = {lp.name for lp in net_param.layer if lp.type == "BatchNorm"}
    net = Net(net_param, TEST)
    return sum(int(b.data.size) for lname, blobs in net.params.items() if lname not in stats
               for b in blobs)


def readme(name, files):
    m = MODELS[name]
    dp = text_format.Parse(files["deploy.prototxt"], caffe_pb2.NetParameter())
    n_params = param_count(dp)
    c, h, w = m["input"][1:]
    rows = "\n".join(f"| `{blob}` | {' x '.join(map(str, shape))} |"
                     for blob, shape in m["shapes"].items())
    batch = "batch %d (TRAIN) / %d (TEST)" % m["batches"]
    return f"""# {name}

Generated by `models/generate.py` (our NetSpec); layer and blob names are Caffe's, so weights
trained by Caffe load by name (`poseidon train --weights X.caffemodel`).

- Files: `train_val.prototxt` (TRAIN + TEST data layers), `solver.prototxt`, `deploy.prototxt`.
- Learnable parameters: {n_params:,} (BatchNorm statistics not counted).
- Input: {c} x {h} x {w}; {batch}; data from `{m['train']}` and `{m['test']}`,
  made by `examples/{m['dataset']}/create_{m['dataset']}.sh`.
- Train: `examples/{m['dataset']}/train_{m['dataset']}.sh` (set `net={name}` in its parameter block
  or `NET={name}`).
- Published accuracy, for reference: {m['accuracy']}.
{("- " + m["note"] + chr(10)) if m.get("note") else ""}
Blob shapes of `deploy.prototxt` (per image; checked by `tests/models`):

| blob | C x H x W |
|---|---|
{rows}
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--out", default=HERE, help="folder to write the model folders into")
    ap.add_argument("names", nargs="*", default=list(MODELS))
    args = ap.parse_args(argv)
    stale = []
    for name in args.names:
        files = build(name)
        files["README.md"] = readme(name, files)
        folder = os.path.join(args.out, name)
        for fname, text in files.items():
            path = os.path.join(folder, fname)
            if args.check:
                old = open(path).read() if os.path.exists(path) else None
                if old != text:
                    stale.append(path)
                continue
            os.makedirs(folder, exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if stale:
        print("out of date (run python models/generate.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
