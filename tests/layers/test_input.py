import numpy as np
import pytest

from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_layer, run_forward


def test_one_shape_per_top():
    layer = make_layer('type: "Input" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } '
                       'shape { dim: 2 } }')
    top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (2, 3, 4, 5) and top[1].shape == (2,)


def test_one_shape_for_all_tops_and_reshape_keeps_caller_shape():
    layer = make_layer('type: "Input" input_param { shape { dim: 1 dim: 3 } }')
    top = run_forward(layer, [], n_top=3)
    assert [t.shape for t in top] == [(1, 3)] * 3
    top[0].reshape((5, 3))
    layer.reshape([], top)
    assert top[0].shape == (5, 3)
    top[0].data[...] = 4
    layer.forward([], top)
    assert np.all(top[0].data == 4)


def test_mismatched_shape_count():
    layer = make_layer('name: "in" type: "Input" input_param { shape { dim: 1 } shape { dim: 2 } }')
    with pytest.raises(NetError, match="in.*2 shape"):
        run_forward(layer, [], n_top=3)
