"""Memory sharing inside a Net must not change any result: Split tops that alias their bottom,
and in-place layers that borrow the copy of their input kept by the layer before them
(BatchNorm -> Scale / leaky ReLU). Every optimised net is compared with the same net run the
plain way: Splits copying (``alias_tops`` off), or every layer out of place."""
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.layers.split import SplitLayer
from poseidon_cli.net import Net
from poseidon_cli.layers.base import TRAIN


def P(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def run(net, x, t):
    """One training step from fixed inputs; every blob's data and diff and every param diff."""
    net.clear_param_diffs()
    net.forward(data=x, target=t)
    net.backward()
    blobs = {n: (b.data.copy(), b.diff.copy()) for n, b in net.blobs.items()}
    params = {n: [b.diff.copy() for b in bs] for n, bs in net.params.items()}
    return blobs, params


def inputs(shape_x, shape_t, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape_x), rng.normal(size=shape_t)


def copying_splits(net):
    for li, layer in enumerate(net.layers):
        if isinstance(layer, SplitLayer):
            layer.alias_tops = ()
    net.reshape()


def assert_same(a, b, names=None):
    blobs_a, params_a = a
    blobs_b, params_b = b
    for n in names or blobs_a:
        np.testing.assert_array_equal(blobs_a[n][0], blobs_b[n][0], err_msg=f"data of {n}")
        np.testing.assert_array_equal(blobs_a[n][1], blobs_b[n][1], err_msg=f"diff of {n}")
    for n in params_a:
        for da, db in zip(params_a[n], params_b[n]):
            np.testing.assert_array_equal(da, db, err_msg=f"param diff of {n}")


# ------------------------------------------------------------------------------------------------
# Split tops aliasing the bottom
# ------------------------------------------------------------------------------------------------

BRANCHES = '''
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } shape { dim: 2 dim: 4 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "a" type: "Convolution" bottom: "conv" top: "a"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "b" type: "Pooling" bottom: "conv" top: "b"
        pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "conv" top: "sum" }
layer { name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "target" top: "loss" }
'''


def test_read_only_branches_alias_the_split_bottom_and_match_copies():
    net = Net(P(BRANCHES), TRAIN, seed=2, dtype=np.float64)
    split = net.layers[net.layer_names.index("conv_relu_0_split")]
    assert split.alias_tops == (True, True, True)
    x, t = inputs((2, 3, 5, 5), (2, 4, 5, 5))
    fast = run(net, x, t)
    li = net.layer_names.index("conv_relu_0_split")
    for top in net.top_vecs[li]:
        assert np.shares_memory(top.data, net.blobs["conv"].data)
        assert not np.shares_memory(top.diff, net.blobs["conv"].diff)
    ref = Net(P(BRANCHES), TRAIN, seed=2, dtype=np.float64)
    copying_splits(ref)
    assert_same(fast, run(ref, x, t))
    # a second step (the conv gives its top a fresh array each forward) still agrees
    x2, t2 = inputs((2, 3, 5, 5), (2, 4, 5, 5), seed=1)
    assert_same(run(net, x2, t2), run(ref, x2, t2))


HAND_SPLIT = '''
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 3 dim: 6 } shape { dim: 3 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "split" type: "Split" bottom: "ip" top: "p" top: "q" top: "r" }
layer { name: "relu_p" type: "ReLU" bottom: "p" top: "p" }
layer { name: "view" type: "Reshape" bottom: "q" top: "qv" reshape_param { shape { dim: 3 dim: 2 dim: 3 } } }
layer { name: "relu_qv" type: "ReLU" bottom: "qv" top: "qv" }
layer { name: "flat" type: "Reshape" bottom: "qv" top: "qf" reshape_param { shape { dim: 3 dim: 6 } } }
layer { name: "sum" type: "Eltwise" bottom: "p" bottom: "qf" bottom: "r" top: "sum"
        eltwise_param { coeff: 1 coeff: 2 coeff: -1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "sum" bottom: "target" top: "loss" }
'''


def test_tops_written_in_place_directly_or_through_a_view_stay_copies():
    net = Net(P(HAND_SPLIT), TRAIN, seed=4, dtype=np.float64)
    split = net.layers[net.layer_names.index("split")]
    # p: an in-place ReLU; q: a ReLU in place on a Reshape view of it; r: only read
    assert split.alias_tops == (False, False, True)
    x, t = inputs((3, 6), (3, 6))
    fast = run(net, x, t)
    ip = fast[0]["ip"][0]
    assert (ip < 0).any()
    # the read-only branch still sees the negative values the ReLUs removed from theirs
    np.testing.assert_array_equal(fast[0]["r"][0], ip)
    np.testing.assert_array_equal(fast[0]["p"][0], np.maximum(ip, 0))
    ref = Net(P(HAND_SPLIT), TRAIN, seed=4, dtype=np.float64)
    copying_splits(ref)
    assert_same(fast, run(ref, x, t))


def test_reshaping_the_net_keeps_split_aliases():
    net = Net(P(BRANCHES), TRAIN, seed=2, dtype=np.float64)
    ref = Net(P(BRANCHES), TRAIN, seed=2, dtype=np.float64)
    copying_splits(ref)
    x, t = inputs((3, 3, 5, 5), (3, 4, 5, 5))   # batch 3 instead of 2: every blob reshaped
    assert_same(run(net, x, t), run(ref, x, t))


# ------------------------------------------------------------------------------------------------
# In-place BatchNorm -> Scale -> ReLU: Scale reads BatchNorm's kept output instead of a copy
# ------------------------------------------------------------------------------------------------

def bn_chain(in_place, slope=0.0):
    names = ["conv"] * 4 if in_place else ["conv", "bn", "sc", "act"]
    return P(f'''
force_backward: true
layer {{ name: "data" type: "Input" top: "data" top: "target"
        input_param {{ shape {{ dim: 4 dim: 2 dim: 5 dim: 5 }} shape {{ dim: 4 dim: 3 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "{names[0]}"
        convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "{names[0]}" top: "{names[1]}" }}
layer {{ name: "sc" type: "Scale" bottom: "{names[1]}" top: "{names[2]}"
        scale_param {{ bias_term: true filler {{ type: "gaussian" std: 1 }}
                       bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "act" type: "ReLU" bottom: "{names[2]}" top: "{names[3]}"
        relu_param {{ negative_slope: {slope} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "{names[3]}" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
''')


def bn_then_leaky(in_place):
    """BatchNorm -> leaky ReLU with a negative slope (its backward needs its input)."""
    names = ["conv"] * 3 if in_place else ["conv", "bn", "act"]
    return P(f'''
force_backward: true
layer {{ name: "data" type: "Input" top: "data" top: "target"
        input_param {{ shape {{ dim: 4 dim: 2 dim: 5 dim: 5 }} shape {{ dim: 4 dim: 3 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "{names[0]}"
        convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "{names[0]}" top: "{names[1]}" }}
layer {{ name: "act" type: "ReLU" bottom: "{names[1]}" top: "{names[2]}"
        relu_param {{ negative_slope: -0.5 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "{names[2]}" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
''')


def grads(net):
    return {n: [b.diff.copy() for b in bs] for n, bs in net.params.items()}, \
        net.blobs["data"].diff.copy()


def assert_grads_close(a, b):
    pa, da = a
    pb, db = b
    for n in pa:
        for x, y in zip(pa[n], pb[n]):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14, err_msg=n)
    np.testing.assert_allclose(da, db, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make", [bn_chain, bn_then_leaky], ids=["scale", "leaky_relu"])
def test_in_place_chain_borrowing_matches_the_out_of_place_net(make):
    x, t = inputs((4, 2, 5, 5), (4, 3))
    fast = Net(make(True), TRAIN, seed=7, dtype=np.float64)
    ref = Net(make(False), TRAIN, seed=7, dtype=np.float64)
    for _ in range(2):   # the second step reuses BatchNorm's buffer
        run(fast, x, t)
        run(ref, x, t)
        assert_grads_close(grads(fast), grads(ref))
        np.testing.assert_allclose(fast.blobs["loss"].data, ref.blobs["loss"].data, rtol=1e-12)
    bn = fast.layers[fast.layer_names.index("bn")]
    consumer = fast.layers[fast.layer_names.index("sc" if make is bn_chain else "act")]
    kept = consumer._x_copy if make is bn_chain else consumer._saved
    assert np.shares_memory(kept, bn._x_norm)   # borrowed, not a copy of its own


def test_scale_run_without_its_batchnorm_before_it_copies_its_input():
    x, t = inputs((4, 2, 5, 5), (4, 3))
    net = Net(bn_chain(True), TRAIN, seed=7, dtype=np.float64)
    run(net, x, t)
    bn_i, sc_i = net.layer_names.index("bn"), net.layer_names.index("sc")
    # the blob no longer holds BatchNorm's output: Scale must not take BatchNorm's kept array
    net.forward_from_to(0, bn_i)
    net.blobs["conv"].data[...] *= 3
    expected_x = net.blobs["conv"].data.copy()
    net.forward_from_to(sc_i, len(net.layers) - 1)
    sc = net.layers[sc_i]
    bn = net.layers[bn_i]
    assert not np.shares_memory(sc._x_copy, bn._x_norm)
    np.testing.assert_array_equal(sc._x_copy.reshape(expected_x.shape), expected_x)
    net.clear_param_diffs()
    net.backward_from_to(len(net.layers) - 1, sc_i)
    dy = net.blobs["conv"].diff   # Scale's dx overwrote dy in place; recompute dy from ReLU
    gamma = net.params["sc"][0].data
    dy_top = dy / gamma.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(net.params["sc"][0].diff,
                               (dy_top * expected_x).sum(axis=(0, 2, 3)), rtol=1e-10)


def test_layer_called_directly_after_a_net_run_copies():
    # a borrowed array is used for one forward only: a direct call (profilers do this) copies
    x, t = inputs((4, 2, 5, 5), (4, 3))
    net = Net(bn_chain(True), TRAIN, seed=7, dtype=np.float64)
    run(net, x, t)
    sc_i = net.layer_names.index("sc")
    sc = net.layers[sc_i]
    assert sc.bottom_snapshot is None
    sc.forward(net.bottom_vecs[sc_i], net.top_vecs[sc_i])
    assert not np.shares_memory(sc._x_copy, net.layers[sc_i - 1]._x_norm)


# ------------------------------------------------------------------------------------------------
# Both together, on a ResNet bottleneck block
# ------------------------------------------------------------------------------------------------

def _conv_bn(name, bottom, n, k=1, pad=0, relu=True):
    text = f'''
layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"
        convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} bias_term: false
                             weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "bn_{name}" type: "BatchNorm" bottom: "{name}" top: "{name}" }}
layer {{ name: "scale_{name}" type: "Scale" bottom: "{name}" top: "{name}"
        scale_param {{ bias_term: true filler {{ type: "gaussian" std: 1 }} }} }}
'''
    if relu:
        text += f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


RESNET_BLOCKS = ('''
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 3 dim: 4 dim: 6 dim: 6 } shape { dim: 3 dim: 8 dim: 6 dim: 6 } } }
''' + _conv_bn("c1", "data", 8, 3, 1)
    + _conv_bn("b2a", "c1", 4) + _conv_bn("b2b", "b2a", 4, 3, 1) + _conv_bn("b2c", "b2b", 8, relu=False)
    + '''layer { name: "res2" type: "Eltwise" bottom: "c1" bottom: "b2c" top: "res2" }
layer { name: "res2_relu" type: "ReLU" bottom: "res2" top: "res2" }
''' + _conv_bn("b3a", "res2", 4) + _conv_bn("b3b", "b3a", 8, relu=False)
    + '''layer { name: "res3" type: "Eltwise" bottom: "res2" bottom: "b3b" top: "res3" }
layer { name: "loss" type: "EuclideanLoss" bottom: "res3" bottom: "target" top: "loss" }
''')


def test_resnet_blocks_match_the_net_without_any_memory_sharing():
    x, t = inputs((3, 4, 6, 6), (3, 8, 6, 6))
    fast = Net(P(RESNET_BLOCKS), TRAIN, seed=9, dtype=np.float64)
    assert fast._lenders   # every Scale borrows from its BatchNorm
    assert all(all(layer.alias_tops) for layer in fast.layers if isinstance(layer, SplitLayer))
    plain = Net(P(RESNET_BLOCKS), TRAIN, seed=9, dtype=np.float64)
    plain._lenders = {}
    copying_splits(plain)
    for seed in range(2):
        x, t = inputs((3, 4, 6, 6), (3, 8, 6, 6), seed)
        assert_same(run(fast, x, t), run(plain, x, t))
    # and the running statistics BatchNorm keeps moved the same way
    for name, blobs in fast.params.items():
        for a, b in zip(blobs, plain.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
