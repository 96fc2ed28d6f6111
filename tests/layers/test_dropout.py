import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.errors import NetError
from poseidon_cli.layers import TEST, TRAIN
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
@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.8])
def test_train_keeps_scaled_and_drops_a_binomial_fraction(xp, ratio):
    shape = (10, 20, 10, 10)
    bottom = make_blobs([shape], xp=xp, low=0.5, high=1.5)  # nonzero so drops are visible
    layer = make_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}', xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == shape
    x, y = to_host(bottom[0].data), to_host(top[0].data)
    kept = y != 0
    scale = 1 / (1 - float(np.float32(ratio)))
    np.testing.assert_allclose(y[kept], x[kept] * scale, rtol=1e-15)
    n = x.size
    dropped = n - kept.sum()
    p = float(np.float32(ratio))
    sigma = np.sqrt(n * p * (1 - p))
    assert abs(dropped - n * p) <= 1.96 * sigma


@pytest.mark.parametrize("xp", XPS)
def test_test_phase_is_identity(xp):
    bottom = make_blobs([(4, 5, 6)], xp=xp)
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.7 }', phase=TEST, xp=xp)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(to_host(top[0].data), to_host(bottom[0].data))
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(to_host(bottom[0].diff), np.full((4, 5, 6), 3.0))


def test_backward_uses_the_forward_mask():
    bottom = make_blobs([(1000,)], low=0.5, high=1.5)
    layer = make_layer('type: "Dropout"', phase=TRAIN)
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    # dx = mask * scale, i.e. y / x
    np.testing.assert_allclose(bottom[0].diff, top[0].data / bottom[0].data, rtol=1e-14)
    assert set(np.unique(bottom[0].diff)) == {0.0, 2.0}


@pytest.mark.parametrize("xp", XPS)
def test_gradient(xp):
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.4 }', xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 3, 4)], xp=xp))


def test_mask_follows_rng_seed_and_changes_each_iteration():
    bottom = make_blobs([(200,)], low=0.5, high=1.5)
    a = run_forward(make_layer('type: "Dropout"', seed=11), bottom)[0].data.copy()
    layer = make_layer('type: "Dropout"', seed=11)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, a)
    layer.forward(bottom, top)
    assert not np.array_equal(top[0].data, a)


def test_zero_ratio_keeps_everything():
    bottom = make_blobs([(50,)])
    top = run_forward(make_layer('type: "Dropout" dropout_param { dropout_ratio: 0 }'), bottom)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_invalid_ratio_is_a_net_error(ratio):
    with pytest.raises(NetError, match="dropout_ratio"):
        run_forward(make_layer(f'type: "Dropout" dropout_param {{ dropout_ratio: {ratio} }}'),
                    make_blobs([(3,)]))
