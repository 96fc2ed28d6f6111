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


def naive_prelu(x, a):
    y = np.empty_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            s = a if np.ndim(a) == 0 else a[c]
            for idx, v in np.ndenumerate(x[n, c]):
                y[(n, c) + idx] = v if v > 0 else s * v
    return y


@pytest.mark.parametrize("xp", XPS)
def test_setup_default_slopes(xp):
    layer = make_layer('type: "PReLU"', xp=xp)
    top = run_forward(layer, make_blobs([(2, 3, 4, 5)], xp=xp))
    assert top[0].shape == (2, 3, 4, 5)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(to_host(layer.blobs[0].data), [0.25] * 3)


def test_setup_channel_shared_and_constant_filler():
    layer = make_layer('type: "PReLU" prelu_param { channel_shared: true filler { value: 0.5 } }')
    run_forward(layer, make_blobs([(2, 3, 4)]))
    assert layer.blobs[0].shape == () and float(layer.blobs[0].data) == 0.5


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("shared", [False, True])
def test_forward_against_naive_loop(xp, shared):
    layer = make_layer(f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} }}',
                       xp=xp)
    bottom = make_blobs([(2, 3, 2, 4)], xp=xp)
    top = [Blob((), xp=xp, dtype=np.float64)]
    layer.setup(bottom, top)
    slopes = np.array(-0.3) if shared else np.array([0.1, -0.7, 1.5])
    layer.blobs[0].data[...] = xp.asarray(slopes)
    layer.forward(bottom, top)
    np.testing.assert_allclose(to_host(top[0].data), naive_prelu(to_host(bottom[0].data), slopes),
                               rtol=1e-15)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("shared", [False, True])
def test_gradient_including_slopes(xp, shared):
    layer = make_layer(f'type: "PReLU" prelu_param {{ channel_shared: {str(shared).lower()} }}',
                       xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 3, 2)], xp=xp), kink=0, kink_range=0.01)


def test_slope_gradient_closed_form_and_accumulation():
    layer = make_layer('type: "PReLU"')
    bottom = make_blobs([(2, 3, 5)])
    top = run_forward(layer, bottom)
    dy = np.random.default_rng(5).uniform(-1, 1, (2, 3, 5))
    top[0].diff[...] = dy
    x = bottom[0].data
    want = (dy * np.where(x > 0, 0, x)).sum(axis=(0, 2))
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, want, rtol=1e-12)
    layer.backward(top, [True], bottom)  # weight diffs accumulate until the solver zeroes them
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * want, rtol=1e-12)


def test_matches_torch_prelu():
    torch = pytest.importorskip("torch")
    layer = make_layer('type: "PReLU"')
    bottom = make_blobs([(2, 4, 3, 3)])
    top = [Blob((), dtype=np.float64)]
    layer.setup(bottom, top)
    a = np.array([0.1, 0.2, -0.3, 0.9])
    layer.blobs[0].data[...] = a
    layer.forward(bottom, top)
    want = torch.nn.functional.prelu(torch.from_numpy(bottom[0].data), torch.from_numpy(a))
    np.testing.assert_allclose(top[0].data, want.numpy(), rtol=1e-15)


def test_bottom_without_channels_is_a_net_error():
    with pytest.raises(NetError, match="channel"):
        run_forward(make_layer('type: "PReLU"'), make_blobs([(5,)]))


def test_channel_count_change_is_a_net_error():
    layer = make_layer('type: "PReLU"')
    top = run_forward(layer, make_blobs([(2, 3, 4)]))
    with pytest.raises(NetError, match="slope"):
        layer.reshape(make_blobs([(2, 4, 4)]), top)


def test_non_constant_filler_uses_the_fillers_module():
    layer = make_layer('type: "PReLU" prelu_param { filler { type: "uniform" min: 2 max: 3 } }')
    run_forward(layer, make_blobs([(2, 64, 3)]))
    a = layer.blobs[0].data
    assert a.shape == (64,) and (a >= 2).all() and (a <= 3).all() and a.std() > 0.1
