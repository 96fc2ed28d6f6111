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


@pytest.mark.parametrize("xp", XPS)
def test_forward_closed_form(xp):
    a, b = make_blobs([(5, 3, 2, 2), (5, 3, 2, 2)], xp=xp)
    top = run_forward(make_layer('type: "EuclideanLoss"', xp=xp), [a, b])
    assert top[0].shape == ()
    d = to_host(a.data) - to_host(b.data)
    want = sum(v * v for v in d.ravel()) / (2 * 5)
    np.testing.assert_allclose(float(to_host(top[0].data)), want, rtol=1e-13)


def test_matches_torch_mse():
    torch = pytest.importorskip("torch")
    a, b = make_blobs([(4, 6), (4, 6)])
    top = run_forward(make_layer('type: "EuclideanLoss"'), [a, b])
    mse = torch.nn.functional.mse_loss(torch.from_numpy(a.data), torch.from_numpy(b.data),
                                       reduction="sum")
    np.testing.assert_allclose(float(top[0].data), float(mse) / 8, rtol=1e-13)


@pytest.mark.parametrize("xp", XPS)
def test_gradient_both_bottoms(xp):
    a, b = make_blobs([(4, 3, 2), (4, 3, 2)], xp=xp)
    layer = make_layer('type: "EuclideanLoss"', xp=xp)
    assert layer.allow_force_backward(1)
    check_layer_gradients(layer, [a, b], threshold=1e-2)


def test_backward_closed_form_with_loss_weight():
    a, b = make_blobs([(4, 3), (4, 3)])
    layer = make_layer('type: "EuclideanLoss" loss_weight: 3')
    top = run_forward(layer, [a, b])
    layer.backward(top, [True, True], [a, b])
    np.testing.assert_allclose(a.diff, 3 * (a.data - b.data) / 4, rtol=1e-13)
    np.testing.assert_allclose(b.diff, -3 * (a.data - b.data) / 4, rtol=1e-13)


def test_second_bottom_may_have_another_shape_with_same_count():
    a, b = make_blobs([(4, 6), (4, 2, 3)])
    top = run_forward(make_layer('type: "EuclideanLoss"'), [a, b])
    d = a.data - b.data.reshape(4, 6)
    np.testing.assert_allclose(float(top[0].data), (d ** 2).sum() / 8, rtol=1e-13)


def test_size_mismatch_is_a_net_error():
    with pytest.raises(NetError, match="same size"):
        run_forward(make_layer('type: "EuclideanLoss"'), make_blobs([(4, 6), (4, 5)]))
