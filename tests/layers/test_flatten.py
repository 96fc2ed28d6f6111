"""Flatten: output shapes for axis/end_axis, values preserved, gradient passes through."""
import numpy as np
import pytest

from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


@pytest.mark.parametrize("spec,shape", [
    ("", (2, 60)),
    ("flatten_param { axis: 2 }", (2, 3, 20)),
    ("flatten_param { axis: 0 end_axis: 1 }", (6, 4, 5)),
    ("flatten_param { axis: -3 end_axis: -2 }", (2, 12, 5)),
])
def test_shapes_and_values(spec, shape):
    bottom = make_blobs([(2, 3, 4, 5)])
    top = run_forward(make_layer(f'type: "Flatten" {spec}'), bottom)
    assert top[0].shape == shape
    assert np.array_equal(top[0].data.ravel(), bottom[0].data.ravel())


def test_backward_passes_diff_and_gradient_check():
    bottom = make_blobs([(2, 3, 2)])
    layer = make_layer('type: "Flatten"')
    top = run_forward(layer, bottom)
    dy = np.arange(12.0).reshape(2, 6)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    assert np.array_equal(bottom[0].diff, dy.reshape(2, 3, 2))
    check_layer_gradients(make_layer('type: "Flatten"'), make_blobs([(2, 3, 2)]))


def test_errors():
    with pytest.raises(NetError, match="fl.*end_axis"):
        make_layer('name: "fl" type: "Flatten" flatten_param { axis: 2 end_axis: 1 }').setup(
            make_blobs([(2, 3, 4)]), [Blob()])
    b = make_blobs([(2, 3)])
    with pytest.raises(NetError, match="in place"):
        make_layer('type: "Flatten"').setup(b, b)
