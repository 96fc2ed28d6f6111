import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


def f32(v):
    """Prototxt floats are float32, as in Caffe."""
    return float(np.float32(v))


CASES = [(1.0, 1.0, 0.0), (2.0, 0.5, 0.3), (3.0, -1.5, 0.2), (0.5, 1.0, 2.0), (-1.5, 0.5, 2.0),
         (2.0, 1.0, 0.0)]


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("power,scale,shift", CASES)
def test_forward_closed_form(xp, power, scale, shift):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp)
    layer = make_layer(f'type: "Power" power_param {{ power: {power} scale: {scale} '
                       f'shift: {shift} }}', xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    want = (f32(shift) + f32(scale) * x) ** f32(power)
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("power,scale,shift", CASES)
def test_gradient(xp, power, scale, shift):
    layer = make_layer(f'type: "Power" power_param {{ power: {power} scale: {scale} '
                       f'shift: {shift} }}', xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 2, 3)], xp=xp))


def test_zero_power_gives_ones_and_zero_gradient():
    layer = make_layer('type: "Power" power_param { power: 0 scale: 3 shift: -1 }')
    bottom = make_blobs([(6,)])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.ones(6))
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros(6))


def test_zero_scale_gives_shift_to_the_power():
    layer = make_layer('type: "Power" power_param { power: 3 scale: 0 shift: 2 }')
    bottom = make_blobs([(5,)])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.full(5, 8.0))
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.zeros(5))


def test_backward_closed_form_general_power():
    layer = make_layer('type: "Power" power_param { power: 2.5 scale: 2 shift: 3 }')
    bottom = make_blobs([(8,)])
    top = run_forward(layer, bottom)
    top[0].diff[...] = 0.5
    layer.backward(top, [True], bottom)
    x = bottom[0].data
    np.testing.assert_allclose(bottom[0].diff, 0.5 * 2.5 * 2 * (3 + 2 * x) ** 1.5, rtol=1e-12)
