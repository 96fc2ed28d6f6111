"""LRN ops against a naive loop (Caffe's reference formulas), torch (ACROSS), finite differences."""
import numpy as np
import pytest

from poseidon_cli.ops import lrn

from .conftest import host, numeric_grad


def naive_lrn(x, n, alpha, beta, k, region):
    N, C, H, W = x.shape
    h = (n - 1) // 2
    y = np.zeros_like(x)
    for a in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    if region == "ACROSS_CHANNELS":
                        s = sum(x[a, cc, i, j] ** 2 for cc in range(max(0, c - h), min(C, c + h + 1)))
                        scale = k + alpha / n * s
                    else:
                        s = sum(x[a, c, ii, jj] ** 2
                                for ii in range(max(0, i - h), min(H, i + h + 1))
                                for jj in range(max(0, j - h), min(W, j + h + 1)))
                        scale = 1 + alpha / n ** 2 * s
                    y[a, c, i, j] = x[a, c, i, j] * scale ** -beta
    return y


PARAMS = [(5, 1e-4 * 50, 0.75, 1.0, "ACROSS_CHANNELS"), (15, 0.3, 0.6, 2.0, "ACROSS_CHANNELS"),
          (3, 5e-5 * 1e4, 0.75, 1.0, "WITHIN_CHANNEL"), (5, 0.5, 0.9, 3.0, "WITHIN_CHANNEL"),
          (1, 0.7, 0.75, 1.0, "ACROSS_CHANNELS")]


@pytest.mark.parametrize("n,alpha,beta,k,region", PARAMS)
def test_forward_matches_naive(n, alpha, beta, k, region, xp):
    x = np.random.default_rng(0).standard_normal((2, 7, 3, 3))
    y, scale = lrn.lrn_forward(xp.asarray(x), n, alpha, beta, k, region)
    np.testing.assert_allclose(host(y), naive_lrn(x, n, alpha, beta, k, region), rtol=1e-12)
    assert scale.shape == x.shape


@pytest.mark.parametrize("n,alpha,beta,k,region", PARAMS)
def test_backward_matches_finite_differences(n, alpha, beta, k, region, xp):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 7, 3, 4))
    y, scale = lrn.lrn_forward(xp.asarray(x), n, alpha, beta, k, region)
    proj = rng.standard_normal(x.shape)
    dx = lrn.lrn_backward(xp.asarray(x), y, scale, xp.asarray(proj), n, alpha, beta, region)
    num = numeric_grad(lambda v: lrn.lrn_forward(v, n, alpha, beta, k, region)[0], x.copy(), proj)
    np.testing.assert_allclose(host(dx), num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n,alpha,beta,k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0)])
def test_across_matches_torch(n, alpha, beta, k, xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 8, 5, 5)) * 3
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.local_response_norm(tx, n, alpha, beta, k)
    dy = rng.standard_normal(x.shape)
    ty.backward(torch.tensor(dy))
    y, scale = lrn.lrn_forward(xp.asarray(x), n, alpha, beta, k)
    dx = lrn.lrn_backward(xp.asarray(x), y, scale, xp.asarray(dy), n, alpha, beta)
    np.testing.assert_allclose(host(y), ty.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(host(dx), tx.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_float32_dtype_kept():
    x = np.random.default_rng(3).standard_normal((1, 6, 4, 4)).astype(np.float32)
    y, s = lrn.lrn_forward(x, 5, 1e-4, 0.75)
    assert y.dtype == np.float32
    assert lrn.lrn_backward(x, y, s, np.ones_like(x), 5, 1e-4, 0.75).dtype == np.float32


def test_errors():
    x = np.zeros((1, 3, 2, 2))
    with pytest.raises(ValueError):
        lrn.lrn_forward(x, 4)
    with pytest.raises(ValueError):
        lrn.lrn_forward(x, 3, region="BOGUS")
    with pytest.raises(ValueError):
        lrn.lrn_forward(np.zeros((3, 2, 2)), 3)
