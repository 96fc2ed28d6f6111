"""Reshape: Caffe's dim rules (0 copies, -1 infers, axis/num_axes ranges) and errors."""
import numpy as np
import pytest

from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import check_layer_gradients, make_blobs, make_layer, run_forward


@pytest.mark.parametrize("spec,shape", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),
    ("shape { dim: 6 dim: 2 dim: 10 }", (6, 2, 10)),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", (2, 3, 4, 5)),
    ("shape { dim: -1 dim: 4 dim: 5 } axis: 1", (2, 3, 4, 5)),   # BVLC test: axis 1 keeps N
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 4, 5)),  # insert a leading axis
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1)),  # -1 = after the last axis
    ("shape { } axis: 1 num_axes: 0", (2, 3, 4, 5)),
])
def test_shapes(spec, shape):
    bottom = make_blobs([(2, 3, 4, 5)])
    top = run_forward(make_layer(f'type: "Reshape" reshape_param {{ {spec} }}'), bottom)
    assert top[0].shape == shape
    assert np.array_equal(top[0].data.ravel(), bottom[0].data.ravel())


def test_gradient():
    check_layer_gradients(make_layer('type: "Reshape" reshape_param { shape { dim: -1 } }'),
                          make_blobs([(2, 3, 2)]))


@pytest.mark.parametrize("spec,match", [
    ("shape { dim: -1 dim: -1 }", "more than one -1"),
    ("shape { dim: -2 }", "below -1"),
    ("shape { dim: 7 dim: -1 }", "cannot infer"),
    ("shape { dim: 5 dim: 5 }", "25 values"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 4"),
    ("shape { dim: 1 } axis: 6", "out of range"),
    ("shape { dim: 1 } axis: 3 num_axes: 2", "exceeds"),
])
def test_errors(spec, match):
    with pytest.raises(NetError, match=f"rs.*{match}"):
        make_layer(f'name: "rs" type: "Reshape" reshape_param {{ {spec} }}').setup(
            make_blobs([(2, 3, 4, 5)]), [Blob()])
