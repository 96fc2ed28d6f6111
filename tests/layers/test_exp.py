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
@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (-1, 0.5, 1.5), (2, 1, 0), (3, -0.5, 1),
                                              (0.5, 2, -1)])
def test_forward_closed_form(xp, base, scale, shift):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp)
    layer = make_layer(f'type: "Exp" exp_param {{ base: {base} scale: {scale} shift: {shift} }}',
                       xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    b = np.e if base == -1 else float(np.float32(base))
    want = b ** (float(np.float32(shift)) + float(np.float32(scale)) * x)
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("base,scale,shift", [(-1, 1, 0), (2, 0.7, 0.5), (0.5, -1, 0)])
def test_gradient(xp, base, scale, shift):
    layer = make_layer(f'type: "Exp" exp_param {{ base: {base} scale: {scale} shift: {shift} }}',
                       xp=xp)
    check_layer_gradients(layer, make_blobs([(2, 3, 2, 3)], xp=xp))


@pytest.mark.parametrize("base", [0, -2, -0.5])
def test_invalid_base_is_a_net_error(base):
    layer = make_layer(f'type: "Exp" exp_param {{ base: {base} }}')
    with pytest.raises(NetError, match="base"):
        run_forward(layer, make_blobs([(3,)]))
