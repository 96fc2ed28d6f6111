import numpy as np
import pytest

from poseidon_cli.ops.softmax import log_softmax, softmax_backward, softmax_forward


def test_forward_sums_to_one_and_matches_closed_form():
    x = np.random.default_rng(0).uniform(-50, 50, (3, 4, 5))
    y = softmax_forward(x, axis=1)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-14)


def test_forward_in_place():
    x = np.random.default_rng(1).normal(size=(4, 6))
    want = softmax_forward(x, axis=1)
    softmax_forward(x, axis=1, out=x)
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_backward_is_the_jacobian_transpose_product(axis):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4))
    dy = rng.normal(size=x.shape)
    y = softmax_forward(x, axis)
    dx = softmax_backward(y, dy, axis)
    # explicit Jacobian per slice: J = diag(y) - y y^T
    ym, dym = np.moveaxis(y, axis, -1), np.moveaxis(dy, axis, -1)
    want = np.empty_like(ym)
    for idx in np.ndindex(ym.shape[:-1]):
        s = ym[idx]
        want[idx] = (np.diag(s) - np.outer(s, s)).T @ dym[idx]
    np.testing.assert_allclose(dx, np.moveaxis(want, -1, axis), rtol=1e-12, atol=1e-15)


def test_log_softmax_is_finite_where_softmax_underflows():
    x = np.array([[0.0, -1000.0, 5.0]])
    lp = log_softmax(x, axis=1)
    np.testing.assert_allclose(lp, x - (5 + np.log1p(np.exp(-5.0) + np.exp(-1005.0))), rtol=1e-12)
