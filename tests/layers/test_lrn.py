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


def naive_lrn(x, n, alpha, beta, k, within):
    """Caffe's test reference: explicit window loops."""
    N, C, H, W = x.shape
    y = np.zeros_like(x)
    h = (n - 1) // 2
    for a in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    if within:
                        s = 0.0
                        for p in range(i - h, i + h + 1):
                            for q in range(j - h, j + h + 1):
                                if 0 <= p < H and 0 <= q < W:
                                    s += x[a, c, p, q] ** 2
                        scale = 1 + alpha / (n * n) * s
                    else:
                        s = sum(x[a, cc, i, j] ** 2 for cc in range(max(0, c - h), min(C, c + h + 1)))
                        scale = k + alpha / n * s
                    y[a, c, i, j] = x[a, c, i, j] * scale ** -beta
    return y


def _f32(v):
    return float(np.float32(v))


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,n,alpha,beta,k,within", [
    ("local_size: 5 alpha: 1 beta: 0.75", 5, 1.0, 0.75, 1.0, False),
    ("local_size: 15 alpha: 0.5 beta: 0.5 k: 2", 15, 0.5, 0.5, 2.0, False),
    ("local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL", 3, 5e-5, 0.75, 1.0,
     True),
    ("local_size: 3 alpha: 2 beta: 0.75 norm_region: WITHIN_CHANNEL", 3, 2.0, 0.75, 1.0, True),
])
def test_forward_matches_reference(xp, text, n, alpha, beta, k, within):
    bottom = make_blobs([(2, 7, 3, 3)], xp=xp)
    top = run_forward(make_layer(f'type: "LRN" lrn_param {{ {text} }}', xp=xp), bottom)
    want = naive_lrn(to_host(bottom[0].data), n, _f32(alpha), _f32(beta), _f32(k), within)
    assert top[0].shape == (2, 7, 3, 3)
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-10)


def test_matches_torch_local_response_norm():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(2, 7, 4, 3)])
    top = run_forward(make_layer('type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }'),
                      bottom)
    want = torch.nn.functional.local_response_norm(torch.from_numpy(bottom[0].data), 5,
                                                   alpha=_f32(1e-4), beta=0.75, k=1.0).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-6)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text", ["local_size: 5 alpha: 1 beta: 0.75",
                                  "local_size: 3 alpha: 1 beta: 0.75 norm_region: WITHIN_CHANNEL"])
def test_gradients(xp, text):
    check_layer_gradients(make_layer(f'type: "LRN" lrn_param {{ {text} }}', xp=xp),
                          make_blobs([(2, 7, 3, 3)], xp=xp), threshold=1e-2)


def test_even_size_is_an_error():
    with pytest.raises(NetError, match="norm1.*odd"):
        run_forward(make_layer('name: "norm1" type: "LRN" lrn_param { local_size: 4 }'),
                    make_blobs([(1, 4, 2, 2)]))
