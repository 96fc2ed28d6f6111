"""Every net under models/ builds and has Caffe's blob shapes; the committed files are what
models/generate.py writes; and they say what Caffe's own reference files say, layer for layer.

The expected shapes are the published ones (Caffe's deploy nets, the papers), written here by
hand, not read from generate.py.
"""
import importlib.util
import pathlib
import re

import pytest
from google.protobuf import text_format

from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.net import Net

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"

# per-image C x H x W of deploy blobs, as Caffe reports them
CAFFE_SHAPES = {
    "lenet": {"data": (1, 28, 28), "conv1": (20, 24, 24), "pool1": (20, 12, 12),
              "conv2": (50, 8, 8), "pool2": (50, 4, 4), "ip1": (500,), "ip2": (10,),
              "prob": (10,)},
    "cifar10_quick": {"data": (3, 32, 32), "conv1": (32, 32, 32), "pool1": (32, 16, 16),
                      "pool2": (32, 8, 8), "pool3": (64, 4, 4), "ip1": (64,), "ip2": (10,)},
    "cifar10_full": {"conv1": (32, 32, 32), "norm1": (32, 16, 16), "norm2": (32, 8, 8),
                     "pool3": (64, 4, 4), "ip1": (10,), "prob": (10,)},
    "bvlc_alexnet": {"data": (3, 227, 227), "conv1": (96, 55, 55), "norm1": (96, 55, 55),
                     "pool1": (96, 27, 27), "conv2": (256, 27, 27), "pool2": (256, 13, 13),
                     "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13),
                     "pool5": (256, 6, 6), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
                     "prob": (1000,)},
    "bvlc_reference_caffenet": {"conv1": (96, 55, 55), "pool1": (96, 27, 27),
                                "norm1": (96, 27, 27), "norm2": (256, 13, 13),
                                "pool5": (256, 6, 6), "fc7": (4096,), "prob": (1000,)},
    "bvlc_googlenet": {"data": (3, 224, 224), "conv1/7x7_s2": (64, 112, 112),
                       "pool2/3x3_s2": (192, 28, 28), "inception_3a/output": (256, 28, 28),
                       "inception_3b/output": (480, 28, 28), "inception_4a/output": (512, 14, 14),
                       "inception_4d/output": (528, 14, 14), "inception_4e/output": (832, 14, 14),
                       "inception_5a/output": (832, 7, 7), "inception_5b/output": (1024, 7, 7),
                       "pool5/7x7_s1": (1024, 1, 1), "loss3/classifier": (1000,),
                       "prob": (1000,)},
    "resnet_50": {"data": (3, 224, 224), "conv1": (64, 112, 112), "pool1": (64, 56, 56),
                  "res2a": (256, 56, 56), "res2c": (256, 56, 56), "res3a": (512, 28, 28),
                  "res3d": (512, 28, 28), "res4a": (1024, 14, 14), "res4f": (1024, 14, 14),
                  "res5a": (2048, 7, 7), "res5c": (2048, 7, 7), "pool5": (2048, 1, 1),
                  "fc1000": (1000,), "prob": (1000,)},
}
# learnable parameters (BatchNorm statistics excluded), as published for each architecture
PARAMS = {"lenet": 431_080, "bvlc_alexnet": 60_965_224, "bvlc_reference_caffenet": 60_965_224,
          "bvlc_googlenet": 6_998_552, "resnet_50": 25_557_096}  # the release's conv1 has biases
FILES = ("train_val.prototxt", "solver.prototxt", "deploy.prototxt", "README.md")


def load_generate():
    spec = importlib.util.spec_from_file_location("models_generate", MODELS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_net(path):
    return text_format.Parse(pathlib.Path(path).read_text(), caffe_pb2.NetParameter())


def test_every_model_has_its_files():
    assert set(CAFFE_SHAPES) <= {p.name for p in MODELS.iterdir() if p.is_dir()}
    for name in CAFFE_SHAPES:
        for f in FILES:
            assert (MODELS / name / f).is_file(), f"models/{name}/{f}"


@pytest.mark.parametrize("name", sorted(CAFFE_SHAPES))
def test_committed_prototxts_are_what_generate_writes(name):
    files = load_generate().build(name)
    for fname, text in files.items():
        assert (MODELS / name / fname).read_text() == text, f"python models/generate.py ({fname})"


@pytest.mark.parametrize("name", sorted(CAFFE_SHAPES))
def test_deploy_net_builds_with_caffes_blob_shapes(name):
    param = read_net(MODELS / name / "deploy.prototxt")
    net = Net(param, caffe_pb2.TEST)
    batch = net.blobs["data"].shape[0]
    for blob, shape in CAFFE_SHAPES[name].items():
        assert tuple(net.blobs[blob].shape) == (batch, *shape), blob
    stats = {lp.name for lp in param.layer if lp.type == "BatchNorm"}
    count = sum(b.data.size for lname, bs in net.params.items() if lname not in stats for b in bs)
    if name in PARAMS:
        assert count == PARAMS[name]
    # the model's README states the same shapes and count
    readme = (MODELS / name / "README.md").read_text()
    assert f"{count:,}" in readme
    for blob, shape in re.findall(r"^\| `([^`]+)` \| ([\d x]+) \|$", readme, re.M):
        assert tuple(net.blobs[blob].shape[1:]) == tuple(int(v) for v in shape.split(" x ")), blob


@pytest.mark.parametrize("name", sorted(CAFFE_SHAPES))
def test_solver_and_train_val_load(name):
    solver = config.load_solver_param(str(MODELS / name / "solver.prototxt"))
    assert solver.net.endswith(f"models/{name}/train_val.prototxt")
    assert solver.max_iter > 0 and solver.base_lr > 0
    tv = config.load_net_param(str(MODELS / name / "train_val.prototxt"), resolve=False)
    phases = [tuple(r.phase for r in lp.include) for lp in tv.layer if lp.type == "Data"]
    assert phases == [(caffe_pb2.TRAIN,), (caffe_pb2.TEST,)]
    assert any(lp.type == "SoftmaxWithLoss" for lp in tv.layer)


def _comparable(lp, deploy):
    """A layer without what a reference file is free to differ in: data paths/transforms,
    and in deploy nets fillers, multipliers and BatchNorm flags (training-only settings)."""
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(lp)
    out.ClearField("data_param")
    out.ClearField("transform_param")
    if deploy:
        out.ClearField("param")
        out.ClearField("batch_norm_param")
        for f in ("convolution_param", "inner_product_param"):
            if out.HasField(f):
                getattr(out, f).ClearField("weight_filler")
                getattr(out, f).ClearField("bias_filler")
    return out


REFERENCES = [  # (ours, Caffe's file under shared/conformance, is a deploy net)
    ("lenet/train_val", "bvlc/examples/mnist/lenet_train_test", False),
    ("cifar10_quick/train_val", "bvlc/examples/cifar10/cifar10_quick_train_test", False),
    ("cifar10_full/train_val", "bvlc/examples/cifar10/cifar10_full_train_test", False),
    ("bvlc_alexnet/train_val", "bvlc/models/bvlc_alexnet/train_val", False),
    ("bvlc_alexnet/deploy", "bvlc/models/bvlc_alexnet/deploy", True),
    ("bvlc_reference_caffenet/train_val", "bvlc/models/bvlc_reference_caffenet/train_val", False),
    ("bvlc_googlenet/train_val", "bvlc/models/bvlc_googlenet/train_val", False),
    ("bvlc_googlenet/deploy", "bvlc/models/bvlc_googlenet/deploy", True),
    ("resnet_50/deploy", "resnet/ResNet-50-deploy", True),
]


@pytest.mark.parametrize("ours,theirs,deploy", REFERENCES, ids=[r[0] for r in REFERENCES])
def test_same_layers_as_caffes_reference_file(conformance_dir, ours, theirs, deploy):
    mine = config.load_net_param(str(MODELS / f"{ours}.prototxt"), resolve=False)
    ref = config.load_net_param(str(conformance_dir / f"{theirs}.prototxt"), resolve=False)

    def key(lp):
        return (lp.type, tuple(lp.top), tuple(r.phase for r in lp.include))
    if deploy:  # the reference names its Input layer "input" or "data"; compare by type + top
        mine_layers = {key(lp): lp for lp in mine.layer}
        ref_layers = {key(lp): lp for lp in ref.layer}
    else:
        mine_layers = {(lp.name, key(lp)): lp for lp in mine.layer}
        ref_layers = {(lp.name, key(lp)): lp for lp in ref.layer}
    assert list(mine_layers) == list(ref_layers)
    for k, lp in ref_layers.items():
        a, b = _comparable(mine_layers[k], deploy), _comparable(lp, deploy)
        if deploy:
            a.ClearField("name")
            b.ClearField("name")
        assert a == b, k
