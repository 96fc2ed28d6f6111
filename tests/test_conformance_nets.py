"""Build the real reference nets (BVLC, Poseidon V1, ResNet deploy) at batch 1-2 on random input,
run one forward/backward, and check blob shapes against Caffe's known values (the shapes
BVLC Caffe prints for these nets) and the initial loss against ln(classes) where the init makes
the scores near-uniform.

Data layers are replaced by Input layers of the shape the database would give. A net whose layer
types are not all registered yet is skipped, naming the missing types."""
import pathlib
import math

import numpy as np
import pytest

from poseidon_cli import config
from poseidon_cli.layers import layer_types
from poseidon_cli.layers.base import TEST, TRAIN
from poseidon_cli.net import Net
from poseidon_cli.timing import fill_inputs, substitute_data_layers

CONFORMANCE = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance").resolve()

LN1000 = math.log(1000)

# (id, relative path, phase, data shape, {blob: shape}, {layer: weight shape}, expected loss)
NETS = [
    ("lenet", "bvlc/examples/mnist/lenet_train_test.prototxt", TRAIN, (2, 1, 28, 28),
     {"conv1": (2, 20, 24, 24), "pool1": (2, 20, 12, 12), "conv2": (2, 50, 8, 8),
      "pool2": (2, 50, 4, 4), "ip1": (2, 500), "ip2": (2, 10)},
     {"ip1": (500, 800), "conv2": (50, 20, 5, 5)}, None),
    ("lenet-test", "bvlc/examples/mnist/lenet_train_test.prototxt", TEST, (2, 1, 28, 28),
     {"pool2": (2, 50, 4, 4), "accuracy": ()}, {}, None),
    ("poseidon-lenet", "poseidon/examples/mnist/lenet_train_test.prototxt", TRAIN, (2, 1, 28, 28),
     {"pool2": (2, 50, 4, 4), "ip2": (2, 10)}, {"ip1": (500, 800)}, None),
    ("cifar10-quick", "bvlc/examples/cifar10/cifar10_quick_train_test.prototxt", TRAIN,
     (2, 3, 32, 32),
     {"conv1": (2, 32, 32, 32), "pool1": (2, 32, 16, 16), "pool2": (2, 32, 8, 8),
      "conv3": (2, 64, 8, 8), "pool3": (2, 64, 4, 4), "ip1": (2, 64)},
     {"ip1": (64, 1024)}, None),
    ("poseidon-cifar10-quick", "poseidon/examples/cifar10/cifar10_quick_train_test.prototxt",
     TEST, (2, 3, 32, 32), {"pool3": (2, 64, 4, 4)}, {"ip1": (64, 1024)}, None),
    ("cifar10-full", "bvlc/examples/cifar10/cifar10_full_train_test.prototxt", TRAIN,
     (2, 3, 32, 32), {"norm1": (2, 32, 16, 16), "pool3": (2, 64, 4, 4), "ip1": (2, 10)},
     {"ip1": (10, 1024)}, None),
    ("cifar10-full-bn", "bvlc/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt",
     TRAIN, (2, 3, 32, 32), {"pool3": (2, 64, 4, 4)}, {}, None),
    ("alexnet", "bvlc/models/bvlc_alexnet/train_val.prototxt", TRAIN, (1, 3, 227, 227),
     {"conv1": (1, 96, 55, 55), "pool1": (1, 96, 27, 27), "conv2": (1, 256, 27, 27),
      "pool2": (1, 256, 13, 13), "conv5": (1, 256, 13, 13), "pool5": (1, 256, 6, 6),
      "fc6": (1, 4096), "fc8": (1, 1000)},
     {"fc6": (4096, 9216), "conv2": (256, 48, 5, 5)}, LN1000),
    ("poseidon-alexnet", "poseidon/models/bvlc_alexnet/train_val.prototxt", TEST,
     (1, 3, 227, 227), {"pool5": (1, 256, 6, 6)}, {"fc6": (4096, 9216)}, LN1000),
    ("caffenet", "bvlc/models/bvlc_reference_caffenet/train_val.prototxt", TRAIN,
     (1, 3, 227, 227), {"pool1": (1, 96, 27, 27), "norm2": (1, 256, 13, 13),
                        "pool5": (1, 256, 6, 6)}, {"fc6": (4096, 9216)}, None),  # biases 1
    ("googlenet", "bvlc/models/bvlc_googlenet/train_val.prototxt", TRAIN, (1, 3, 224, 224),
     {"conv1/7x7_s2": (1, 64, 112, 112), "pool1/3x3_s2": (1, 64, 56, 56),
      "pool2/3x3_s2": (1, 192, 28, 28), "inception_3b/output": (1, 480, 28, 28),
      "pool3/3x3_s2": (1, 480, 14, 14), "loss1/ave_pool": (1, 512, 4, 4),
      "inception_5b/output": (1, 1024, 7, 7), "pool5/7x7_s1": (1, 1024, 1, 1)},
     {"loss1/fc": (1024, 2048), "loss3/classifier": (1000, 1024)}, 1.6 * LN1000),
    ("poseidon-googlenet", "poseidon/models/bvlc_googlenet/train_test.prototxt", TRAIN,
     (1, 3, 224, 224), {"inception_5b/output": (1, 1024, 7, 7)}, {}, 1.6 * LN1000),
]

DEPLOY = [
    ("alexnet-deploy", "bvlc/models/bvlc_alexnet/deploy.prototxt",
     {"pool5": (1, 256, 6, 6), "prob": (1, 1000)}),
    ("googlenet-deploy", "bvlc/models/bvlc_googlenet/deploy.prototxt",
     {"inception_4e/output": (1, 832, 14, 14), "inception_5b/output": (1, 1024, 7, 7),
      "prob": (1, 1000)}),
    ("resnet50-deploy", "resnet/ResNet-50-deploy.prototxt",
     {"res2c": (1, 256, 56, 56), "res3d": (1, 512, 28, 28), "res4f": (1, 1024, 14, 14),
      "res5c": (1, 2048, 7, 7), "pool5": (1, 2048, 1, 1), "prob": (1, 1000)}),
]

SLOW = {"googlenet", "poseidon-googlenet", "googlenet-deploy", "resnet50-deploy"}


def _load(rel):
    path = CONFORMANCE / rel
    if not path.exists():
        pytest.skip(f"{rel} not present in ../shared/conformance")
    param = config.load_net_param(path)
    missing = sorted({l.type for l in param.layer} - set(layer_types()) - {"Data", "ImageData"})
    if missing:
        pytest.skip(f"layer type(s) not registered yet: {', '.join(missing)}")
    return param


def _check_finite_grads(net):
    for name, blob in zip(net.learnable_param_names, net.learnable_params):
        assert np.all(np.isfinite(blob.diff)), name


def _mark(cases, idx=0):
    return [pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in SLOW else [])
            for c in cases]


@pytest.mark.parametrize("name,rel,phase,data_shape,blobs,weights,loss", _mark(NETS))
def test_train_val_net(name, rel, phase, data_shape, blobs, weights, loss):
    param = _load(rel)
    data_layers = [l.name for l in param.layer if l.type in ("Data", "ImageData")]
    param = substitute_data_layers(param, shapes={n: data_shape for n in data_layers})
    net = Net(param, phase, seed=1701)
    fill_inputs(net)
    total = net.forward_prefilled()
    for blob, shape in blobs.items():
        assert net.blobs[blob].shape == shape, blob
    for layer, shape in weights.items():
        assert net.params[layer][0].shape == shape, layer
    assert np.isfinite(total)
    if loss is not None:
        # gaussian/xavier inits give near-uniform class scores: loss ~ sum of weights * ln(1000)
        assert total == pytest.approx(loss, rel=0.05)
    net.clear_param_diffs()
    net.backward_all()
    _check_finite_grads(net)
    if phase == TRAIN:
        assert any(np.any(b.diff != 0) for b in net.learnable_params)


@pytest.mark.parametrize("name,rel,blobs", _mark(DEPLOY))
def test_deploy_net(name, rel, blobs):
    param = _load(rel)
    assert param.layer[0].type == "Input"     # legacy input/input_dim upgraded
    param.layer[0].input_param.shape[0].dim[0] = 1
    param.force_backward = True
    net = Net(param, TEST, seed=1701)
    assert net.inputs == ["data"]
    fill_inputs(net)
    # deploy files carry no fillers (all-zero weights, as in Caffe): give conv/IP/scale weights
    # small random values so the gradient has something to carry
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if layer.type in ("Convolution", "InnerProduct", "Scale"):
            for blob in layer.blobs:
                fan = max(1, blob.count // blob.shape[0])
                blob.data[...] = rng.normal(0, 1 / math.sqrt(fan), size=blob.shape) + \
                    (1.0 if layer.type == "Scale" and blob is layer.blobs[0] else 0.0)
        elif layer.type == "BatchNorm":
            layer.blobs[1].data[...] = 1.0     # running variance 1, mean 0, scale factor 1
            layer.blobs[2].data[...] = 1.0
    out = net.forward()
    assert list(out) == ["prob"]
    for blob, shape in blobs.items():
        assert net.blobs[blob].shape == shape, blob
    np.testing.assert_allclose(out["prob"].sum(), 1.0, rtol=1e-4)
    net.blobs["prob"].diff[...] = np.random.default_rng(0).normal(size=(1, 1000))
    grads = net.backward()
    assert grads["data"].shape == (1, 3, 224 if "alexnet" not in name else 227,
                                   224 if "alexnet" not in name else 227)
    assert np.all(np.isfinite(grads["data"])) and np.any(grads["data"] != 0)
