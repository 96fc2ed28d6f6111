"""Net construction and running: filtering, splits, in-place, sharing, loss weights, backward need,
weights I/O, hooks, errors. References are hand-built (numpy) or Caffe's documented rules."""
import pathlib
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import NetError
from poseidon_cli.net import Net, filter_net, insert_splits
from poseidon_cli.layers.base import TEST, TRAIN

CONFORMANCE = (pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance").resolve()


def P(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def layer_names(param):
    return [l.name for l in param.layer]


def state(phase=TRAIN, level=0, stages=()):
    s = caffe_pb2.NetState(phase=phase, level=level)
    s.stage.extend(stages)
    return s


# ------------------------------------------------------------------------------------------------
# Filtering
# ------------------------------------------------------------------------------------------------

def test_lenet_train_test_filtering():
    path = CONFORMANCE / "bvlc" / "examples" / "mnist" / "lenet_train_test.prototxt"
    if not path.exists():
        pytest.skip("conformance prototxts not present")
    param = config.load_net_param(path)
    common = ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]
    assert layer_names(filter_net(param, state(TRAIN))) == ["mnist"] + common + ["loss"]
    assert layer_names(filter_net(param, state(TEST))) == ["mnist"] + common + ["accuracy", "loss"]
    test_net = filter_net(param, state(TEST))
    assert test_net.layer[0].data_param.batch_size == 100
    # in TEST ip2 and label feed both accuracy and loss => two splits
    split = insert_splits(test_net)
    names = layer_names(split)
    assert "label_mnist_1_split" in names and "ip2_ip2_0_split" in names
    assert layer_names(insert_splits(filter_net(param, state(TRAIN)))) == \
        ["mnist"] + common + ["loss"]


STAGED = '''
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 } } }
layer { name: "train_only" type: "Silence" bottom: "a" include { phase: TRAIN } }
layer { name: "level2" type: "Silence" bottom: "a" include { min_level: 2 } }
layer { name: "upto1" type: "Silence" bottom: "a" include { max_level: 1 } }
layer { name: "st_ab" type: "Silence" bottom: "a" include { stage: "A" stage: "B" } }
layer { name: "st_a_or_b" type: "Silence" bottom: "a" include { stage: "A" } include { stage: "B" } }
layer { name: "not_a" type: "Silence" bottom: "a" include { not_stage: "A" } }
layer { name: "excl_test" type: "Silence" bottom: "a" exclude { phase: TEST } }
layer { name: "excl_b" type: "Silence" bottom: "a" exclude { stage: "B" } }
'''


@pytest.mark.parametrize("st,kept", [
    (state(TRAIN), ["train_only", "upto1", "not_a", "excl_test", "excl_b"]),
    (state(TEST), ["upto1", "not_a", "excl_b"]),
    (state(TEST, level=2), ["level2", "not_a", "excl_b"]),
    (state(TEST, level=1, stages=["A"]), ["upto1", "st_a_or_b", "excl_b"]),
    (state(TEST, stages=["A", "B"]), ["upto1", "st_ab", "st_a_or_b"]),
    (state(TRAIN, stages=["B"]), ["train_only", "upto1", "st_a_or_b", "not_a", "excl_test"]),
])
def test_state_rules(st, kept):
    assert layer_names(filter_net(P(STAGED), st)) == ["a"] + kept


def test_net_constructor_applies_phase_level_and_stages():
    net = Net(P(STAGED), TEST, level=2, stages=["A"])
    assert [n for n in net.layer_names if not n.endswith("_split")] == \
        ["a", "level2", "st_a_or_b", "excl_b"]


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(NetError, match="'bad'.*include and exclude"):
        filter_net(P('layer { name: "bad" type: "ReLU" include { phase: TRAIN } '
                     'exclude { phase: TEST } }'), state())


# ------------------------------------------------------------------------------------------------
# Split insertion (Caffe's test_split_layer cases)
# ------------------------------------------------------------------------------------------------

def test_split_names_and_rewiring():
    src = P('''
    layer { name: "data" type: "Input" top: "data" top: "label" }
    layer { name: "innerprod1" type: "InnerProduct" bottom: "data" top: "innerprod1" }
    layer { name: "innerprod2" type: "InnerProduct" bottom: "data" top: "innerprod2" }
    layer { name: "innerprod3" type: "InnerProduct" bottom: "data" top: "innerprod3" }
    layer { name: "loss1" type: "EuclideanLoss" bottom: "innerprod1" bottom: "innerprod2" }
    layer { name: "loss2" type: "EuclideanLoss" bottom: "innerprod2" bottom: "innerprod3" }''')
    out = insert_splits(src)
    assert layer_names(out) == ["data", "data_data_0_split", "innerprod1", "innerprod2",
                                "innerprod2_innerprod2_0_split", "innerprod3", "loss1", "loss2"]
    sp = out.layer[1]
    assert sp.type == "Split" and list(sp.bottom) == ["data"]
    assert list(sp.top) == [f"data_data_0_split_{k}" for k in range(3)]
    assert [out.layer[i].bottom[0] for i in (2, 3, 5)] == list(sp.top)
    assert list(out.layer[6].bottom) == ["innerprod1", "innerprod2_innerprod2_0_split_0"]
    assert list(out.layer[7].bottom) == ["innerprod2_innerprod2_0_split_1", "innerprod3"]


def test_in_place_chains_do_not_split():
    src = P('''
    layer { name: "data" type: "Input" top: "data" }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
    layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
    layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
    layer { name: "out" type: "InnerProduct" bottom: "ip" top: "out" }''')
    assert layer_names(insert_splits(src)) == layer_names(src)


def test_loss_weight_moves_to_split_top0():
    src = P('''
    layer { name: "data" type: "Input" top: "data" }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 2 }
    layer { name: "sink" type: "Silence" bottom: "ip" }''')
    out = insert_splits(src)
    assert layer_names(out) == ["data", "ip", "ip_ip_0_split", "sink"]
    assert list(out.layer[2].loss_weight) == [2, 0]
    assert list(out.layer[1].loss_weight) == [0]
    assert out.layer[3].bottom[0] == "ip_ip_0_split_1"


def test_in_place_use_of_a_shared_blob_splits_the_original():
    src = P('''
    layer { name: "data" type: "Input" top: "data" }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
    layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
    layer { name: "a" type: "Silence" bottom: "ip" }
    layer { name: "b" type: "Silence" bottom: "ip" }''')
    out = insert_splits(src)
    # the relu's in-place output is the blob consumed twice: split after relu, named after it
    assert layer_names(out) == ["data", "ip", "relu", "ip_relu_0_split", "a", "b"]
    assert list(out.layer[2].bottom) == ["ip"] and list(out.layer[2].top) == ["ip"]
    assert out.layer[4].bottom[0] == "ip_relu_0_split_0"


def test_missing_bottom_error():
    with pytest.raises(NetError, match="layer 'ip' .* needs bottom 'nope' which no earlier"):
        insert_splits(P('layer { name: "ip" type: "InnerProduct" bottom: "nope" top: "ip" }'))


# ------------------------------------------------------------------------------------------------
# Running small nets
# ------------------------------------------------------------------------------------------------

MLP = '''
name: "mlp"
force_backward: %s
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 4 dim: 3 dim: 2 } shape { dim: 4 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "target" top: "loss" }
'''


def mlp_numpy(x, t, W1, b1, W2, b2):
    h = np.maximum(x.reshape(len(x), -1) @ W1.T + b1, 0)
    y = h @ W2.T + b2
    return ((y - t) ** 2).sum() / (2 * len(x))


def test_mlp_forward_backward_matches_numpy_and_finite_differences():
    net = Net(P(MLP % "true"), TRAIN, seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, t = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 2))
    out = net.forward(data=x, target=t)
    W1, b1 = (b.data for b in net.params["ip1"])
    W2, b2 = (b.data for b in net.params["ip2"])
    assert list(out) == ["loss"]
    np.testing.assert_allclose(out["loss"], mlp_numpy(x, t, W1, b1, W2, b2), rtol=1e-12)
    net.clear_param_diffs()
    grads = net.backward()
    assert set(grads) == {"data", "target"}
    h = 1e-6
    for blob, k in [(net.params["ip1"][0], 3), (net.params["ip1"][1], 1), (net.params["ip2"][0], 4)]:
        analytic = blob.diff.flat[k]
        v = blob.data.flat[k]
        blob.data.flat[k] = v + h
        fp = mlp_numpy(x, t, W1, b1, W2, b2)
        blob.data.flat[k] = v - h
        fm = mlp_numpy(x, t, W1, b1, W2, b2)
        blob.data.flat[k] = v
        assert abs(analytic - (fp - fm) / (2 * h)) < 1e-6
    # force_backward: the data gradient exists
    xd = x.copy()
    xd.flat[5] += h
    fp = mlp_numpy(xd, t, W1, b1, W2, b2)
    xd.flat[5] -= 2 * h
    fm = mlp_numpy(xd, t, W1, b1, W2, b2)
    assert abs(grads["data"].flat[5] - (fp - fm) / (2 * h)) < 1e-6


def test_backward_need_analysis():
    net = Net(P(MLP % "false"), TRAIN)
    assert net.layer_need_backward == [False, True, True, True, True]
    assert net.bottom_need_backward[1] == [False]          # no gradient into data
    assert net.bottom_need_backward[4] == [True, False]    # not into the target
    forced = Net(P(MLP % "true"), TRAIN)
    assert forced.bottom_need_backward[1] == [True]
    assert forced.bottom_need_backward[4] == [True, True]  # EuclideanLoss allows both
    frozen = P(MLP % "false")
    frozen.layer[1].param.add(lr_mult=0)
    frozen.layer[1].param.add(lr_mult=0)
    net = Net(frozen, TRAIN)
    assert net.layer_need_backward[1] is False
    assert net.layers[1].param_propagate_down == [False, False]
    assert net.params_lr[:2] == [0, 0]
    # a layer that does not reach a loss needs no backward
    dead = P(MLP % "false")
    dead.layer.add().CopyFrom(text_format.Parse(
        'name: "side" type: "InnerProduct" bottom: "data" top: "side" '
        'inner_product_param { num_output: 1 }', caffe_pb2.LayerParameter()))
    net = Net(dead, TRAIN)
    i = net.layer_names.index("side")
    assert net.layer_need_backward[i] is False
    assert net.outputs == ["loss", "side"]
    assert net.output_loss_weights == [1.0, 0.0]


def test_propagate_down_false_stops_gradient_below():
    p = P(MLP % "false")
    p.layer[3].propagate_down.append(False)     # ip2 does not send a gradient to ip1
    net = Net(p, TRAIN)
    assert net.bottom_need_backward[3] == [False]
    assert net.layer_need_backward[1] is False and net.layer_need_backward[2] is False
    assert net.layer_need_backward[3] is True


def test_loss_weight_scales_loss_and_gradient():
    base = Net(P(MLP % "false"), TRAIN, seed=5, dtype=np.float64)
    p = P(MLP % "false")
    p.layer[4].loss_weight.append(3.0)
    heavy = Net(p, TRAIN, seed=5, dtype=np.float64)
    x, t = np.ones((4, 3, 2)), np.zeros((4, 2))
    l1 = base.forward(data=x, target=t)["loss"]
    l3 = heavy.forward(data=x, target=t)["loss"]
    assert heavy.forward_prefilled() == pytest.approx(3 * float(l1))
    assert float(l3) == pytest.approx(float(l1))        # the blob holds the unweighted loss
    assert heavy.output_loss_weights == [3.0]
    for n in (base, heavy):
        n.clear_param_diffs()
        n.backward_all()
    np.testing.assert_allclose(heavy.params["ip2"][0].diff, 3 * base.params["ip2"][0].diff)


def test_non_loss_top_with_loss_weight_and_split():
    p = P('''
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" loss_weight: 0.5
            inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" loss_weight: 2
            inner_product_param { num_output: 1 weight_filler { type: "constant" value: 1 } } }''')
    net = Net(p, TRAIN, dtype=np.float64)
    assert "ip_ip_0_split" in net.layer_names
    x = np.arange(6.0).reshape(2, 3)
    net.forward(data=x)
    # ip = [3,3],[12,12]; loss = 0.5*sum(ip) + 2*sum(ip2) = 0.5*30 + 2*30
    assert net.forward_prefilled() == pytest.approx(75.0)
    net.clear_param_diffs()
    net.backward_all()
    # dL/dW_ip[o,k] = (0.5 + 2*1) * sum_n x[n,k]
    np.testing.assert_allclose(net.params["ip"][0].diff, 2.5 * np.tile(x.sum(0), (2, 1)))
    # as in Caffe, the loss-carrying split top is produced and never consumed: an output
    assert net.outputs == ["ip2", "ip_ip_0_split_0"]
    assert net.output_loss_weights == [2.0, 0.5]


def test_shared_weights_accumulate_into_owner():
    p = P('''
    force_backward: true
    layer { name: "data" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 3 dim: 4 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya"
            param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb"
            param { name: "w" lr_mult: 1 } param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "la" type: "EuclideanLoss" bottom: "ya" bottom: "yb" top: "l" }''')
    net = Net(p, TRAIN, seed=1, dtype=np.float64)
    assert len(net.learnable_params) == 2
    assert net.learnable_param_names == ["ipa/0", "ipa/1"]
    wa, wb = net.params["ipa"][0], net.params["ipb"][0]
    assert wa.data is wb.data or np.shares_memory(wa.data, wb.data)
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    net.forward(a=a, b=b)
    net.clear_param_diffs()
    net.backward_all()
    W = wa.data
    r = (a - b) @ W.T / 3                         # dL/dya; dL/dyb = -r
    want = r.T @ a - r.T @ b
    np.testing.assert_allclose(net.learnable_params[0].diff, want, rtol=1e-10)
    assert net.layer_learnable_params[1] == [0, 1] and net.layer_learnable_params[2] == [0, 1]
    assert net.param_ready_after[1] == [0, 1] and net.param_ready_after[2] == []


def test_one_learnable_record_per_param_and_caffe_lists_are_read_only_views():
    """Shared weights are one record read by both layers (ready after the lower one); the
    multipliers come from the specs (an explicit one on a sharer counts); Caffe's lists are the
    records' fields, and writing to them is refused instead of silently doing nothing."""
    p = P('''
    force_backward: true
    layer { name: "data" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 3 dim: 4 } } }
    layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya"
            param { name: "w" } param { lr_mult: 2 decay_mult: 0 }
            inner_product_param { num_output: 2 } }
    layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb"
            param { name: "w" lr_mult: 3 } param { lr_mult: 0 }
            inner_product_param { num_output: 2 } }
    layer { name: "la" type: "EuclideanLoss" bottom: "ya" bottom: "yb" top: "l" }''')
    net = Net(p, TRAIN, seed=1)
    got = [(r.name, r.lr_mult, r.decay_mult, r.readers, r.ready_after) for r in net.learnable]
    assert got == [("ipa/0", 3, 1, [1, 2], 1), ("ipa/1", 2, 0, [1], 1), ("ipb/1", 0, 1, [2], 2)]
    assert [r.blob for r in net.learnable] == [net.params["ipa"][0], net.params["ipa"][1],
                                               net.params["ipb"][1]]
    assert net.learnable_params == [r.blob for r in net.learnable]
    assert net.learnable_param_names == ["ipa/0", "ipa/1", "ipb/1"]
    assert net.params_lr == [3, 2, 0] and net.params_weight_decay == [1, 0, 1]
    assert net.layer_learnable_params[1] == [0, 1] and net.layer_learnable_params[2] == [0, 2]
    assert list(net.param_ready_after) == [[], [0, 1], [2], []]
    for view in (net.params_lr, net.learnable_params, net.layer_learnable_params[1]):
        with pytest.raises(TypeError, match="read-only view of Net.learnable"):
            view[0] = 5
        with pytest.raises(TypeError, match="read-only"):
            view.append(5)
    net.learnable[0].lr_mult = 0.5                       # the records are the one place to change
    assert net.params_lr[0] == 0.5


def test_shared_shape_mismatch_strict_vs_permissive():
    text = '''
    layer { name: "data" type: "Input" top: "a" input_param { shape { dim: 3 dim: 4 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "a" top: "y1" param { name: "w" }
            inner_product_param { num_output: 2 bias_term: false } }
    layer { name: "ip2" type: "InnerProduct" bottom: "a" top: "y2" param { name: "w" %s }
            inner_product_param { num_output: 4 bias_term: false transpose: true } }'''
    with pytest.raises(NetError, match=r"ip2.*\(4, 4\).*\(2, 4\)"):
        Net(P(text % ""), TRAIN)
    p2 = P(text.replace("num_output: 4", "num_output: 2") % "share_mode: PERMISSIVE")
    net = Net(p2, TRAIN)                     # (4, 2) shares the (2, 4) owner by count
    assert net.params["ip2"][0].shape == (4, 2)


def test_in_place_blob_is_shared_and_reshape_on_new_batch():
    net = Net(P(MLP % "false"), TRAIN, seed=1)
    assert net.blobs["ip1"] is net.top_vecs[2][0] is net.bottom_vecs[2][0]
    assert list(net.blobs) == ["data", "target", "ip1", "ip2", "loss"]
    out = net.forward(data=np.ones((7, 3, 2)), target=np.zeros((7, 2)))
    assert net.blobs["ip2"].shape == (7, 2) and np.isfinite(out["loss"])
    assert np.all(net.blobs["ip1"].data >= 0)     # ReLU ran in place
    net.blobs["data"].reshape((2, 3, 2))
    net.blobs["target"].reshape((2, 2))
    net.reshape()
    assert net.blobs["ip1"].shape == (2, 5)


def test_hooks_order():
    net = Net(P(MLP % "false"), TRAIN)
    calls = []
    net.add_before_forward(lambda i: calls.append(("f", i)))
    net.add_after_backward(lambda i: calls.append(("b", i)))
    net.forward_backward()
    n = len(net.layers)
    assert calls == [("f", i) for i in range(n)] + [("b", i) for i in reversed(range(n))]
    ready = [k for lst in net.param_ready_after for k in lst]
    assert sorted(ready) == list(range(len(net.learnable_params)))
    assert net.param_ready_after[1] == [0, 1] and net.param_ready_after[3] == [2, 3]


# ------------------------------------------------------------------------------------------------
# Weights I/O
# ------------------------------------------------------------------------------------------------

def test_save_writes_bvlc_caffemodel_and_copy_from_round_trips(tmp_path):
    net = Net(P(MLP % "false"), TRAIN, seed=7)
    path = tmp_path / "m.caffemodel"
    net.save(path)
    decoded = caffe_pb2.NetParameter()
    decoded.ParseFromString(path.read_bytes())
    by_name = {l.name: l for l in decoded.layer}
    assert by_name["ip1"].type == "InnerProduct" and len(by_name["ip1"].blobs) == 2
    w = by_name["ip1"].blobs[0]
    assert list(w.shape.dim) == [5, 6]
    np.testing.assert_array_equal(np.array(w.data, np.float32).reshape(5, 6),
                                  net.params["ip1"][0].data)
    assert len(by_name["ip2"].blobs[1].diff) == 0
    other = Net(P(MLP % "false"), TRAIN, seed=8)
    assert not np.array_equal(other.params["ip2"][0].data, net.params["ip2"][0].data)
    other.copy_from(str(path))
    for name in ("ip1", "ip2"):
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    # Net(weights=...) and the diff flag
    net.params["ip2"][0].diff[...] = 0.25
    with_diff = net.to_proto(write_diff=True)
    assert set(with_diff.layer[3].blobs[0].diff) == {0.25}
    third = Net(P(MLP % "false"), TEST, weights=str(path))
    np.testing.assert_array_equal(third.params["ip1"][1].data, net.params["ip1"][1].data)


def test_float64_blobs_save_double_data():
    net = Net(P(MLP % "false"), TRAIN, seed=7, dtype=np.float64)
    bp = net.to_proto().layer[1].blobs[0]
    assert len(bp.data) == 0 and len(bp.double_data) == 30


def _legacy_weights(n_out=5, k=6, with_shape=False):
    src = caffe_pb2.NetParameter()
    l = src.layers.add()          # V1 layer as Poseidon writes it
    l.name = "ip1"
    l.type = caffe_pb2.V1LayerParameter.INNER_PRODUCT
    w, b = l.blobs.add(), l.blobs.add()
    w.num, w.channels, w.height, w.width = 1, 1, n_out, k
    w.data.extend(np.arange(n_out * k, dtype=np.float32))
    b.num, b.channels, b.height, b.width = 1, 1, 1, n_out
    b.data.extend(-np.arange(n_out, dtype=np.float32))
    return src


def test_copy_from_legacy_4d_inner_product(tmp_path):
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(_legacy_weights().SerializeToString())
    net = Net(P(MLP % "false"), TRAIN, seed=1)
    net.copy_from(str(path))
    np.testing.assert_array_equal(net.params["ip1"][0].data, np.arange(30).reshape(5, 6))
    np.testing.assert_array_equal(net.params["ip1"][1].data, -np.arange(5))


def test_copy_from_shape_mismatch_names_layer_and_shapes():
    net = Net(P(MLP % "false"), TRAIN)
    with pytest.raises(NetError, match=r"param 0 of layer 'ip1'.*\(1, 1, 5, 7\).*\(5, 6\)"):
        net.copy_from(_legacy_weights(5, 7))
    bad = _legacy_weights()
    del bad.layers[0].blobs[1]
    with pytest.raises(NetError, match="'ip1' has 1 blob"):
        net.copy_from(bad)


def test_share_trained_layers_with():
    train = Net(P(MLP % "false"), TRAIN, seed=1)
    test = Net(P(MLP % "false"), TEST, seed=2)
    test.share_trained_layers_with(train)
    train.params["ip2"][0].data[...] = 0.5
    assert np.all(test.params["ip2"][0].data == 0.5)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,msg", [
    ('layer { name: "x" type: "NoSuchLayer" top: "x" }', "'x': unknown layer type 'NoSuchLayer'"),
    ('layer { name: "d" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }'
     'layer { name: "d2" type: "Input" top: "a" input_param { shape { dim: 1 } } }',
     "'d2'.*top 'a' is already produced"),
    ('layer { name: "d" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }'
     'layer { name: "r" type: "ReLU" bottom: "a" }', "'r'.*top"),
    ('layer { name: "d" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }'
     'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b" param { } param { } param { }'
     ' inner_product_param { num_output: 1 } }', "'ip'.*3 param"),
])
def test_construction_errors_are_one_line(text, msg):
    with pytest.raises(NetError, match=msg) as exc:
        Net(P(text), TRAIN)
    assert "\n" not in exc.value.one_line()


def test_prototxt_path(tmp_path):
    f = tmp_path / "n.prototxt"
    f.write_text(MLP % "false")
    net = Net(str(f), "TEST")
    assert net.name == "mlp" and net.phase == TEST and net.inputs == ["data", "target"]


def test_pycaffe_reshape_input_blob_then_forward():
    """pycaffe's pattern: reshape the input blob directly, then forward (Caffe reshapes every layer
    on each forward)."""
    p = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } } '
             'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
             'inner_product_param { num_output: 2 weight_filler { type: "constant" value: 1 } } }', p)
    net = Net(p, TEST)
    net.blobs["x"].reshape(6, 3)
    net.blobs["x"].data[...] = np.arange(18, dtype=np.float32).reshape(6, 3)
    out = net.forward()
    assert out["y"].shape == (6, 2)
    np.testing.assert_allclose(out["y"][:, 0], np.arange(18).reshape(6, 3).sum(1))
    out = net.forward(x=np.ones((1, 3), np.float32))
    assert out["y"].shape == (1, 2) and np.allclose(out["y"], 3)
