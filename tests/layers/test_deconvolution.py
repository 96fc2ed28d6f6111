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


def naive_deconv(x, w, b, stride, pad, group):
    """Scatter every input pixel times the kernel into the (cropped) output."""
    N, C, H, W = x.shape
    _, Og, kh, kw = w.shape
    O = Og * group
    Cg = C // group
    Hf = stride * (H - 1) + kh
    Wf = stride * (W - 1) + kw
    full = np.zeros((N, O, Hf, Wf))
    for n in range(N):
        for c in range(C):
            g = c // Cg
            for i in range(H):
                for j in range(W):
                    for oo in range(Og):
                        full[n, g * Og + oo, i * stride:i * stride + kh, j * stride:j * stride + kw] \
                            += x[n, c, i, j] * w[c, oo]
    y = full[:, :, pad:Hf - pad, pad:Wf - pad]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def _layer(text, xp=np):
    return make_layer(f'type: "Deconvolution" convolution_param {{ {text} '
                      f'weight_filler {{ type: "gaussian" std: 0.5 }} '
                      f'bias_filler {{ type: "uniform" min: -1 max: 1 }} }}', xp=xp)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,shape,stride,pad,group", [
    ('num_output: 3 kernel_size: 3 stride: 2', (2, 2, 3, 4), 2, 0, 1),
    ('num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2', (1, 2, 3, 3), 2, 1, 2),
    ('num_output: 2 kernel_size: 3 bias_term: false', (1, 3, 2, 2), 1, 0, 1),
])
def test_forward_matches_scatter_reference(xp, text, shape, stride, pad, group):
    bottom = make_blobs([shape], xp=xp)
    layer = _layer(text, xp)
    top = run_forward(layer, bottom)
    C = shape[1]
    O = layer.blobs[0].shape[1] * group
    assert layer.blobs[0].shape[0] == C
    b = to_host(layer.blobs[1].data) if len(layer.blobs) > 1 else None
    want = naive_deconv(to_host(bottom[0].data), to_host(layer.blobs[0].data), b, stride, pad,
                        group)
    assert top[0].shape == want.shape and want.shape[1] == O
    np.testing.assert_allclose(to_host(top[0].data), want, atol=1e-10)


def test_matches_torch_conv_transpose():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(2, 4, 3, 3)])
    layer = _layer('num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2')
    top = run_forward(layer, bottom)
    want = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(bottom[0].data), torch.from_numpy(layer.blobs[0].data),
        torch.from_numpy(layer.blobs[1].data), stride=2, padding=1, groups=2).numpy()
    np.testing.assert_allclose(top[0].data, want, atol=1e-10)


def test_bilinear_upsampling_of_constant_is_constant_inside():
    layer = make_layer('type: "Deconvolution" convolution_param { num_output: 2 kernel_size: 4 '
                       'stride: 2 pad: 1 group: 2 bias_term: false '
                       'weight_filler { type: "bilinear" } }')
    bottom = make_blobs([(1, 2, 4, 4)])
    bottom[0].data[...] = 3.0
    top = run_forward(layer, bottom)
    assert top[0].shape == (1, 2, 8, 8)
    np.testing.assert_allclose(top[0].data[:, :, 1:-1, 1:-1], 3.0, atol=1e-12)


@pytest.mark.parametrize("xp", XPS)
def test_gradients(xp):
    layer = _layer('num_output: 2 kernel_size: 3 stride: 2 pad: 1', xp)
    check_layer_gradients(layer, make_blobs([(2, 2, 3, 3)], xp=xp))


def test_empty_output_is_an_error():
    layer = make_layer('name: "up" type: "Deconvolution" convolution_param { num_output: 1 '
                       'kernel_size: 1 pad: 2 }')
    with pytest.raises(NetError, match="up"):
        run_forward(layer, make_blobs([(1, 1, 2, 2)]))
