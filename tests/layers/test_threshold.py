import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_blobs, make_layer, run_forward


def _backends():
    params = [pytest.param(np, id="cpu")]
    if backend.gpu_available():
        cp = backend.use_gpu(0)
        backend.use_cpu()
        params.append(pytest.param(cp, id="gpu", marks=pytest.mark.gpu))
    return params


XPS = _backends()


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.5])
def test_forward(xp, threshold):
    bottom = make_blobs([(2, 3, 4, 5)], xp=xp)
    layer = make_layer(f'type: "Threshold" threshold_param {{ threshold: {threshold} }}', xp=xp)
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3, 4, 5)
    x = to_host(bottom[0].data)
    want = (x > float(np.float32(threshold))).astype(np.float64)
    np.testing.assert_array_equal(to_host(top[0].data), want)


def test_value_equal_to_threshold_maps_to_zero():
    bottom = Blob((3,), dtype=np.float64)
    bottom.data[...] = [0.5, 0.5000001, 0.4999999]
    top = run_forward(make_layer('type: "Threshold" threshold_param { threshold: 0.5 }'),
                      [bottom])
    np.testing.assert_array_equal(top[0].data, [0.0, 1.0, 0.0])


def test_backward_is_an_error_only_when_asked():
    layer = make_layer('type: "Threshold"')
    bottom = make_blobs([(3,)])
    top = run_forward(layer, bottom)
    layer.backward(top, [False], bottom)
    with pytest.raises(NetError, match="no gradient"):
        layer.backward(top, [True], bottom)
