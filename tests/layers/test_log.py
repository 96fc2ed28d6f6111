import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
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


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 1, 0), (10, 2, 0.5), (-1, 0.5, 1.5),
                                              (0.5, 1, 1)])
def test_forward_closed_form(xp, base, scale, shift):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp, low=0.1, high=3)
    layer = make_layer(f'type: "Log" log_param {{ base: {base} scale: {scale} shift: {shift} }}',
                       xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    inner = float(np.float32(shift)) + float(np.float32(scale)) * x
    want = np.log(inner) if base == -1 else np.log(inner) / np.log(float(np.float32(base)))
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 0.7, 0.5), (10, 2, 1)])
def test_gradient(xp, base, scale, shift):
    layer = make_layer(f'type: "Log" log_param {{ base: {base} scale: {scale} shift: {shift} }}',
                       xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 2, 3)], xp=xp, low=0.5, high=2))


def test_log_inverts_exp():
    bottom = make_blobs([(10,)])
    exp_top = run_forward(make_layer('type: "Exp" exp_param { base: 2 scale: 3 shift: 1 }'),
                          bottom)
    log_top = run_forward(make_layer('type: "Log" log_param { base: 2 }'), exp_top)
    np.testing.assert_allclose(log_top[0].data, 1 + 3 * bottom[0].data, rtol=1e-12)


@pytest.mark.parametrize("base", [0, 1, -3])
def test_invalid_base_is_a_net_error(base):
    with pytest.raises(NetError, match="base"):
        run_forward(make_layer(f'type: "Log" log_param {{ base: {base} }}'), make_blobs([(3,)]))
