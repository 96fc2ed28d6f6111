import math

import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli import fillers
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError


def _fill(shape, text, seed=0):
    fp = text_format.Parse(text, caffe_pb2.FillerParameter()) if text is not None else None
    blob = Blob(shape, dtype=np.float64)
    fillers.fill(blob, fp, np.random.default_rng(seed))
    return blob.data


def test_constant_and_missing():
    assert np.all(_fill((3, 4), 'type: "constant" value: 1.5') == 1.5)
    assert np.all(_fill((3, 4), None) == 0)
    assert np.all(_fill((3, 4), '') == 0)      # FillerParameter defaults: constant 0


def test_uniform_range_and_mean():
    x = _fill((200, 100), 'type: "uniform" min: -2 max: 3')
    assert x.min() >= -2 and x.max() <= 3
    assert abs(x.mean() - 0.5) < 0.05


def test_gaussian_moments_and_default_std():
    x = _fill((200, 100), 'type: "gaussian" mean: 1 std: 0.5')
    assert abs(x.mean() - 1) < 0.02 and abs(x.std() - 0.5) < 0.02
    y = _fill((200, 100), 'type: "gaussian"')
    assert abs(y.std() - 1) < 0.03


def test_gaussian_sparse_keeps_fraction_sparse_over_num():
    x = _fill((100, 400), 'type: "gaussian" std: 1 sparse: 20')
    frac = np.count_nonzero(x) / x.size
    p = 20 / 100
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / x.size)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 40 * 5 * 5),
                                    ("AVERAGE", (3 * 25 + 40 * 25) / 2)])
def test_xavier_bound_and_variance(norm, n):
    shape = (40, 3, 5, 5)
    x = _fill(shape, f'type: "xavier" variance_norm: {norm} std: 123')   # std is ignored
    a = math.sqrt(3.0 / n)
    assert np.abs(x).max() <= a
    assert abs(x.var() - a * a / 3) < 0.1 * a * a / 3


def test_xavier_inner_product_uses_k_as_fan_in():
    x = _fill((500, 800), 'type: "xavier"')
    assert np.abs(x).max() <= math.sqrt(3 / 800) and np.abs(x).max() > 0.9 * math.sqrt(3 / 800)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 64 * 9), ("FAN_OUT", 32 * 9)])
def test_msra_variance(norm, n):
    x = _fill((32, 64, 3, 3), f'type: "msra" variance_norm: {norm}')
    assert abs(x.var() - 2.0 / n) < 0.06 * 2.0 / n
    assert abs(x.mean()) < 0.01


def test_positive_unitball_rows_sum_to_one():
    x = _fill((6, 2, 3, 3), 'type: "positive_unitball"')
    assert np.all(x >= 0)
    np.testing.assert_allclose(x.reshape(6, -1).sum(axis=1), 1.0, rtol=1e-12)


def test_bilinear_kernel_values():
    x = _fill((1, 1, 4, 4), 'type: "bilinear"')
    # k=4: f=2, c=0.75, 1-|i/f-c| for i=0..3 -> .25 .75 .75 .25
    t = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(x[0, 0], np.outer(t, t))
    x5 = _fill((2, 1, 5, 5), 'type: "bilinear"')
    t5 = np.array([1, 2, 3, 2, 1]) / 3.0      # k=5 (upsample x3): f=3, c=2/3
    np.testing.assert_allclose(x5[1, 0], np.outer(t5, t5))


def test_seeded_fill_is_reproducible():
    assert np.array_equal(_fill((5, 5), 'type: "gaussian"', 3), _fill((5, 5), 'type: "gaussian"', 3))


def test_errors():
    with pytest.raises(NetError, match="unknown filler type 'banana'"):
        _fill((2, 2), 'type: "banana"')
    with pytest.raises(NetError, match="bilinear"):
        _fill((2, 3), 'type: "bilinear"')
