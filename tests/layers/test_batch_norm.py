"""BatchNorm: BVLC's known answers (per-channel mean 0 / var 1), running averages by hand,
global statistics, torch as an oracle, gradients for both paths, in-place use, lr_mult rules."""
import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.layers import TEST, TRAIN
from poseidon_cli.testing import (GradientChecker, make_blobs, make_layer, run_both_ways,
                                  run_forward)


def _xps():
    out = [pytest.param(np, id="numpy")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        out.append(pytest.param(cp, id="cupy", marks=pytest.mark.gpu))
    return out


XPS = _xps()
H = backend.to_host


def reference_train(x, eps=1e-5):
    """Naive per-channel loops over (N, C, H, W)."""
    y = np.empty_like(x)
    for c in range(x.shape[1]):
        vals = x[:, c].ravel()
        mu = sum(vals) / len(vals)
        var = sum((v - mu) ** 2 for v in vals) / len(vals)
        y[:, c] = (x[:, c] - mu) / np.sqrt(var + eps)
    return y


@pytest.mark.parametrize("xp", XPS)
def test_train_forward_known_answer_and_reference(xp):
    bottom = make_blobs([(2, 3, 4, 5)], np.random.default_rng(0), xp=xp, low=-3, high=5)
    layer = make_layer('type: "BatchNorm"', xp=xp)
    top = run_forward(layer, bottom)
    y = H(top[0].data)
    assert y.shape == (2, 3, 4, 5)
    for c in range(3):  # BVLC TestForward: per-channel mean ~0, variance ~1
        assert abs(y[:, c].mean()) < 1e-6
        assert abs(y[:, c].var() - 1) < 1e-3
    np.testing.assert_allclose(y, reference_train(H(bottom[0].data)), rtol=1e-10, atol=1e-10)
    assert [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]


def test_matches_torch_batch_norm_train_and_eval():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    rng = np.random.default_rng(5)
    layer = make_layer('type: "BatchNorm" batch_norm_param { eps: 1e-3 }')
    x = rng.normal(size=(4, 3, 2, 2))
    b = make_blobs([x.shape])
    b[0].data[...] = x
    top = run_forward(layer, b)
    eps = float(np.float32(1e-3))  # the prototxt field is a float32
    expected = F.batch_norm(torch.tensor(x), None, None, training=True, eps=eps).numpy()
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-9, atol=1e-9)
    # global statistics from stored accumulators == torch eval mode with the same running stats
    s = float(layer.blobs[2].data[0])
    rm, rv = layer.blobs[0].data / s, layer.blobs[1].data / s
    test_layer = make_layer('type: "BatchNorm" batch_norm_param { eps: 1e-3 }', phase=TEST)
    t2 = [Blob(dtype=np.float64)]
    test_layer.setup(b, t2)
    for dst, src in zip(test_layer.blobs, layer.blobs):
        dst.data[...] = src.data
    test_layer.forward(b, t2)
    expected = F.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv), training=False,
                            eps=eps).numpy()
    np.testing.assert_allclose(t2[0].data, expected, rtol=1e-9, atol=1e-9)


def test_running_stats_are_hand_computed_moving_averages():
    rng = np.random.default_rng(2)
    f = 0.9
    layer = make_layer(f'type: "BatchNorm" batch_norm_param {{ moving_average_fraction: {f} }}')
    b = make_blobs([(3, 2, 2, 2)])
    top = [Blob(dtype=np.float64)]
    layer.setup(b, top)
    s, mean_acc, var_acc = 0.0, np.zeros(2), np.zeros(2)
    f = float(np.float32(f))  # the prototxt field is a float32
    m = 3 * 2 * 2
    for _ in range(4):
        x = rng.normal(loc=[[[[1.0]], [[-2.0]]]], size=(3, 2, 2, 2))
        b[0].data[...] = x
        layer.forward(b, top)
        mu = x.mean(axis=(0, 2, 3))
        var = ((x - mu[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
        s = s * f + 1
        mean_acc = mean_acc * f + mu
        var_acc = var_acc * f + var * m / (m - 1)
    np.testing.assert_allclose(layer.blobs[2].data, [s], rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[0].data, mean_acc, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[1].data, var_acc, rtol=1e-12)


def test_single_value_per_channel_has_no_bias_correction():
    layer = make_layer('type: "BatchNorm"')
    b = make_blobs([(1, 2)])
    run_forward(layer, b)
    assert np.allclose(layer.blobs[1].data, 0)  # var of one value, m/(m-1) skipped (no inf/nan)
    np.testing.assert_allclose(layer.blobs[0].data, b[0].data[0])


@pytest.mark.parametrize("xp", XPS)
def test_global_stats_forward(xp):
    layer = make_layer('type: "BatchNorm"', phase=TEST, xp=xp)
    b = make_blobs([(2, 3, 2)], np.random.default_rng(4), xp=xp)
    top = [Blob(xp=xp, dtype=np.float64)]
    layer.setup(b, top)
    assert layer.use_global_stats
    layer.forward(b, top)  # s == 0: mean 0, var 0
    np.testing.assert_allclose(H(top[0].data), H(b[0].data) / np.sqrt(1e-5))
    mean, var, s = np.array([1.0, -1.0, 0.5]), np.array([4.0, 1.0, 0.25]), 2.0
    layer.blobs[0].data[...] = xp.asarray(mean * s)
    layer.blobs[1].data[...] = xp.asarray(var * s)
    layer.blobs[2].data[...] = s
    layer.forward(b, top)
    x = H(b[0].data)
    expected = (x - mean[None, :, None]) / np.sqrt(var[None, :, None] + 1e-5)
    np.testing.assert_allclose(H(top[0].data), expected, rtol=1e-12)
    before = [H(bl.data).copy() for bl in layer.blobs]
    layer.forward(b, top)
    assert all(np.array_equal(H(bl.data), d) for bl, d in zip(layer.blobs, before))


@pytest.mark.parametrize("xp", XPS)
def test_gradient_batch_statistics(xp):
    layer = make_layer('type: "BatchNorm"', xp=xp)
    b = make_blobs([(2, 3, 2, 2)], np.random.default_rng(7), xp=xp)
    GradientChecker(step=1e-2, threshold=1e-4).check(layer, b, [Blob(xp=xp, dtype=np.float64)])


@pytest.mark.parametrize("xp", XPS)
def test_gradient_global_statistics(xp):
    layer = make_layer('type: "BatchNorm" batch_norm_param { use_global_stats: true }', xp=xp)
    b = make_blobs([(2, 3, 2)], np.random.default_rng(8), xp=xp)
    top = [Blob(xp=xp, dtype=np.float64)]
    layer.setup(b, top)
    layer._poseidon_setup_done = True
    layer.blobs[0].data[...] = xp.asarray([0.3, -0.2, 0.1])
    layer.blobs[1].data[...] = xp.asarray([2.0, 0.5, 1.0])
    layer.blobs[2].data[...] = 1.0
    GradientChecker(step=1e-2, threshold=1e-4).check(layer, b, top)


@pytest.mark.parametrize("use_global", [False, True])
def test_in_place_matches_out_of_place(use_global):
    spec = f'type: "BatchNorm" batch_norm_param {{ use_global_stats: {str(use_global).lower()} }}'
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 2, 4))
    dy = rng.normal(size=x.shape)

    def init(layer):
        for bl, v in zip(layer.blobs, ([0.5, -1.0], [3.0, 2.0], [1.0])):
            bl.data[...] = v
    out, inp = run_both_ways(spec, x, dy, init)
    np.testing.assert_allclose(inp["top"], out["top"], rtol=1e-12)
    np.testing.assert_allclose(inp["bottom_diff"], out["bottom_diff"], rtol=1e-12, atol=1e-14)
    for a, c in zip(out["params"], inp["params"]):
        np.testing.assert_allclose(a, c)


def test_in_place_survives_a_following_in_place_layer():
    """ResNet runs BN then Scale in place: backward must not read the overwritten top."""
    rng = np.random.default_rng(10)
    x = rng.normal(size=(4, 2, 3))
    dy = rng.normal(size=x.shape)
    layer = make_layer('type: "BatchNorm"')
    b = make_blobs([x.shape])
    b[0].data[...] = x
    layer.setup(b, b)
    layer.forward(b, b)
    b[0].data[...] = 123.0  # e.g. Scale writing in place
    b[0].diff[...] = dy
    layer.backward(b, [True], b)
    y = reference_train(x)
    std = np.sqrt(x.var(axis=(0, 2)) + 1e-5)[None, :, None]
    expected = (dy - dy.mean(axis=(0, 2), keepdims=True)
                - y * (dy * y).mean(axis=(0, 2), keepdims=True)) / std
    np.testing.assert_allclose(b[0].diff, expected, rtol=1e-10, atol=1e-12)


def test_float32_is_kept():
    layer = make_layer('type: "BatchNorm"', dtype=np.float32)
    b = make_blobs([(2, 3, 2)], dtype=np.float32)
    top = run_forward(layer, b)
    assert top[0].data.dtype == np.float32
    assert all(bl.data.dtype == np.float32 for bl in layer.blobs)


def test_statistics_are_not_learnable():
    layer = make_layer('type: "BatchNorm"')
    run_forward(layer, make_blobs([(2, 3)]))
    assert layer.param_propagate_down == [False, False, False]
    assert [(p.lr_mult, p.decay_mult) for p in layer.param.param] == [(0, 0)] * 3
    explicit = make_layer('type: "BatchNorm" param { lr_mult: 0 } param { lr_mult: 0 }')
    run_forward(explicit, make_blobs([(2, 3)]))
    assert [p.lr_mult for p in explicit.param.param] == [0, 0, 0]
    bad = make_layer('name: "bn1" type: "BatchNorm" param { lr_mult: 1 }')
    with pytest.raises(NetError, match="bn1.*lr_mult"):
        bad.setup(make_blobs([(2, 3)]), [Blob(dtype=np.float64)])


def test_channel_change_is_an_error():
    layer = make_layer('name: "bn" type: "BatchNorm"')
    top = run_forward(layer, make_blobs([(2, 3)]))
    with pytest.raises(NetError, match="bn.*4 channels"):
        layer.reshape(make_blobs([(2, 4)]), top)


def test_conformance_resnet_and_cifar_bn(conformance_dir):
    from poseidon_cli.config import load_net_param
    net = load_net_param(conformance_dir / "resnet/ResNet-50-deploy.prototxt")
    p = next(l for l in net.layer if l.name == "bn_conv1")
    layer = make_layer(p, phase=TEST)
    b = make_blobs([(1, 64, 2, 2)])
    layer.setup(b, b)
    assert layer.use_global_stats and [bl.shape for bl in layer.blobs] == [(64,), (64,), (1,)]
    net = load_net_param(conformance_dir /
                         "bvlc/examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt")
    p = next(l for l in net.layer if l.type == "BatchNorm")
    layer = make_layer(p, phase=TRAIN)
    top = run_forward(layer, make_blobs([(2, 32, 3, 3)]))
    assert not layer.use_global_stats
    assert abs(top[0].data[:, 0].mean()) < 1e-8
