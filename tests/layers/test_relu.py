import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("slope", [0.0, 0.1, 2.0])
def test_forward_closed_form(xp, slope):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp)
    layer = make_layer(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    # the prototxt field is a float32, like Caffe's
    want = np.where(x > 0, x, float(np.float32(slope)) * x)
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=0, atol=0)


def test_matches_torch_leaky_relu():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(3, 4, 5)])
    top = run_forward(make_layer('type: "ReLU" relu_param { negative_slope: 0.01 }'), bottom)
    slope = float(np.float32(0.01))
    want = torch.nn.functional.leaky_relu(torch.from_numpy(bottom[0].data), slope).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-15)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("slope", [0.0, 0.3])
def test_gradient(xp, slope):
    layer = make_layer(f'type: "ReLU" relu_param {{ negative_slope: {slope} }}', xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 3, 4)], xp=xp), kink=0, kink_range=0.01)


def test_gradient_at_zero_is_negative_slope():
    layer = make_layer('type: "ReLU" relu_param { negative_slope: 0.25 }')
    bottom = Blob((4,), dtype=np.float64)
    bottom.data[...] = [0.0, 1.0, -1.0, 0.0]
    top = run_forward(layer, [bottom])
    top[0].diff[...] = [2.0, 3.0, 4.0, 5.0]
    layer.backward(top, [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, [0.5, 3.0, 1.0, 1.25])


def test_backward_skipped_without_propagate_down():
    layer = make_layer('type: "ReLU"')
    bottom = make_blobs([(5,)])
    top = run_forward(layer, bottom)
    bottom[0].diff[...] = 7
    top[0].diff[...] = 1
    layer.backward(top, [False], bottom)
    assert (bottom[0].diff == 7).all()
