import io
import re

import numpy as np
import pytest

from poseidon_cli import config
from poseidon_cli.errors import NetError, PoseidonError
from poseidon_cli.context import TRAIN
from poseidon_cli.net import Net
from poseidon_cli.commands import time as time_cmd
from poseidon_cli.timing import guess_data_shape, substitute_data_layers, time_net

NET = '''
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "%s/nowhere_mnist_lmdb" batch_size: 4 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "%s/nowhere_mnist_lmdb" batch_size: 8 } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def test_time_net_report(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET % (tmp_path, tmp_path))
    out = io.StringIO()
    assert time_net(str(model), iterations=2, phase="TRAIN", xp=np, out=out) == 0
    text = out.getvalue()
    # one substitution line: only the TRAIN data layer survives filtering
    assert len(re.findall(r"unavailable; using random input of shape \(4, 1, 28, 28\)", text)) == 1
    for name in ("data", "conv", "pool", "ip", "loss"):
        assert re.search(rf"^\s*{name}\tforward: [\d.e+-]+ ms\.$", text, re.M), name
        assert re.search(rf"^\s*{name}\tbackward: [\d.e+-]+ ms\.$", text, re.M), name
    nums = {k: float(v) for k, v in re.findall(
        r"^(Average Forward pass|Average Backward pass|Average Forward-Backward|Total Time): "
        r"([\d.e+-]+) ms\.$", text, re.M)}
    assert len(nums) == 4
    assert nums["Average Forward-Backward"] >= nums["Average Forward pass"]
    assert nums["Total Time"] == pytest.approx(2 * nums["Average Forward-Backward"], rel=1e-3)


def test_time_net_bad_gpu_is_one_line(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(NET % (tmp_path, tmp_path))
    from poseidon_cli import backend
    if backend.gpu_available():
        pytest.skip("a GPU exists here")
    with pytest.raises(PoseidonError) as exc:
        time_cmd.run(str(model), iterations=1, gpu="0")
    assert "\n" not in exc.value.one_line()


def test_substitute_keeps_rules_and_guesses_shapes(tmp_path):
    from google.protobuf import text_format
    from poseidon_cli._proto import caffe_pb2
    p = text_format.Parse(NET % (tmp_path, tmp_path), caffe_pb2.NetParameter())
    sub = substitute_data_layers(p)
    assert [l.type for l in sub.layer[:2]] == ["Input", "Input"]
    assert sub.layer[1].include[0].phase == caffe_pb2.TEST
    assert list(sub.layer[1].input_param.shape[0].dim) == [8, 1, 28, 28]
    assert list(sub.layer[1].input_param.shape[1].dim) == [8]
    lp = caffe_pb2.LayerParameter(name="d", type="Data")
    lp.data_param.batch_size = 5
    lp.transform_param.crop_size = 227
    assert guess_data_shape(lp) == (5, 3, 227, 227)
    lp.transform_param.crop_size = 0
    lp.data_param.source = "/x/unknown_db"
    with pytest.raises(NetError, match="'d'.*unknown_db"):
        guess_data_shape(lp)
