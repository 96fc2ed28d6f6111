import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


def labels_blob(shape, num_classes, seed=2, xp=np):
    b = Blob(shape, xp=xp, dtype=np.float64)
    b.data[...] = xp.asarray(np.random.default_rng(seed).integers(0, num_classes, shape)
                             .astype(np.float64))
    return b


def naive_hinge(x, labels, p):
    n = x.shape[0]
    x = x.reshape(n, -1)
    total = 0.0
    for i in range(n):
        for k in range(x.shape[1]):
            sign = 1 if k == int(labels[i]) else -1
            total += max(0.0, 1 - sign * x[i, k]) ** p
    return total / n


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("norm,p", [("L1", 1), ("L2", 2)])
def test_forward_against_naive(xp, norm, p):
    x = make_blobs([(6, 5)], xp=xp, low=-2, high=2)[0]
    labels = labels_blob((6,), 5, xp=xp)
    layer = make_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', xp=xp)
    top = run_forward(layer, [x, labels])
    assert top[0].shape == ()
    np.testing.assert_allclose(float(to_host(top[0].data)),
                               naive_hinge(to_host(x.data), to_host(labels.data), p), rtol=1e-13)


def test_default_norm_is_l1_and_spatial_scores_flatten():
    x = make_blobs([(4, 3, 2)], low=-2, high=2)[0]
    labels = labels_blob((4,), 6)
    top = run_forward(make_layer('type: "HingeLoss"'), [x, labels])
    np.testing.assert_allclose(float(top[0].data), naive_hinge(x.data, labels.data, 1), rtol=1e-13)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_gradient(xp, norm):
    x = make_blobs([(4, 5)], xp=xp, low=-2, high=2)[0]
    labels = labels_blob((4,), 5, xp=xp)
    layer = make_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', xp=xp)
    # kinks where 1 -/+ x = 0, i.e. |x| = 1
    check_layer_gradients(layer, [x, labels], check_bottom=0, threshold=1e-2, kink=1,
                          kink_range=0.02)


def test_label_out_of_range_and_label_backward_are_net_errors():
    x = make_blobs([(2, 3)])[0]
    labels = Blob((2,), dtype=np.float64)
    labels.data[...] = [0, 3]
    with pytest.raises(NetError, match="out of range"):
        run_forward(make_layer('type: "HingeLoss"'), [x, labels])
    labels.data[...] = [0, 2]
    layer = make_layer('type: "HingeLoss"')
    top = run_forward(layer, [x, labels])
    with pytest.raises(NetError, match="label"):
        layer.backward(top, [True, True], [x, labels])
