import numpy as np
import pytest

from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_layer, run_forward


def test_legacy_dims_and_constant_filler_filled_once():
    layer = make_layer('type: "DummyData" dummy_data_param { num: 2 num: 3 channels: 4 '
                       'height: 1 width: 5 data_filler { type: "constant" value: 2.5 } }')
    top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (2, 4, 1, 5) and top[1].shape == (3, 4, 1, 5)
    assert np.all(top[0].data == 2.5) and np.all(top[1].data == 2.5)
    top[0].data[...] = 0       # Caffe fills constant tops only at setup
    layer.forward([], top)
    assert np.all(top[0].data == 0)


def test_shape_field_and_random_filler_refills_each_forward():
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 3 dim: 2 } '
                       'shape { dim: 3 } data_filler { type: "constant" value: 1 } '
                       'data_filler { type: "uniform" min: 5 max: 6 } }')
    top = run_forward(layer, [], n_top=2)
    assert top[0].shape == (3, 2) and top[1].shape == (3,)
    first = top[1].data.copy()
    assert np.all((first >= 5) & (first <= 6))
    layer.forward([], top)
    assert not np.array_equal(first, top[1].data)
    assert np.all(top[0].data == 1)


def test_no_filler_means_zeros():
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 2 dim: 2 } }')
    top = run_forward(layer, [], n_top=1)
    assert np.all(top[0].data == 0)


def test_bad_counts():
    with pytest.raises(NetError, match="dd.*2 shape"):
        run_forward(make_layer('name: "dd" type: "DummyData" dummy_data_param { '
                               'shape { dim: 1 } shape { dim: 1 } }'), [], n_top=3)
    with pytest.raises(NetError, match="not both"):
        run_forward(make_layer('type: "DummyData" dummy_data_param { shape { dim: 1 } num: 1 '
                               'channels: 1 height: 1 width: 1 }'), [], n_top=1)
