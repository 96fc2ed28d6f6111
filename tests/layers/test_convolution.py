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


def naive_conv(x, w, b, stride, pad, dil, group):
    """Direct loops: Caffe's cross-correlation with zero padding, dilation and groups."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    Ho = (H + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    Wo = (W + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((N, O, Ho, Wo))
    og = O // group
    for n in range(N):
        for o in range(O):
            g = o // og
            for i in range(Ho):
                for j in range(Wo):
                    s = 0.0
                    for c in range(Cg):
                        for p in range(kh):
                            for q in range(kw):
                                hi = i * sh - ph + p * dh
                                wi = j * sw - pw + q * dw
                                if 0 <= hi < H and 0 <= wi < W:
                                    s += x[n, g * Cg + c, hi, wi] * w[o, c, p, q]
                    y[n, o, i, j] = s + (b[o] if b is not None else 0.0)
    return y


CASES = [
    # text, input shape, (stride, pad, dilation), group
    ('num_output: 4 kernel_size: 3', (2, 3, 6, 5), ((1, 1), (0, 0), (1, 1)), 1),
    ('num_output: 4 kernel_size: 3 stride: 2 pad: 1', (2, 3, 7, 6), ((2, 2), (1, 1), (1, 1)), 1),
    ('num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0',
     (1, 2, 6, 5), ((2, 1), (1, 0), (1, 1)), 1),
    ('num_output: 6 kernel_size: 3 group: 3 pad: 1', (2, 6, 5, 5), ((1, 1), (1, 1), (1, 1)), 3),
    ('num_output: 2 kernel_size: 3 dilation: 2 pad: 2', (1, 2, 7, 7), ((1, 1), (2, 2), (2, 2)), 1),
    ('num_output: 3 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2', (1, 2, 6, 7),
     ((1, 2), (0, 0), (1, 1)), 1),
    ('num_output: 3 kernel_size: 1 bias_term: false', (2, 4, 3, 3), ((1, 1), (0, 0), (1, 1)), 1),
]


def _layer(text, xp=np):
    return make_layer(f'type: "Convolution" convolution_param {{ {text} '
                      f'weight_filler {{ type: "gaussian" std: 0.5 }} '
                      f'bias_filler {{ type: "uniform" min: -1 max: 1 }} }}', xp=xp)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,shape,geom,group", CASES)
def test_forward_matches_naive_loops(xp, text, shape, geom, group):
    bottom = make_blobs([shape], xp=xp)
    layer = _layer(text, xp)
    top = run_forward(layer, bottom)
    w = to_host(layer.blobs[0].data)
    b = to_host(layer.blobs[1].data) if len(layer.blobs) > 1 else None
    want = naive_conv(to_host(bottom[0].data), w, b, *geom, group)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(to_host(top[0].data), want, rtol=1e-10, atol=1e-10)


def test_weight_and_output_shapes_alexnet_conv2():
    bottom = make_blobs([(1, 96, 27, 27)])
    layer = make_layer('type: "Convolution" convolution_param { num_output: 256 kernel_size: 5 '
                       'pad: 2 group: 2 }')
    top = run_forward(layer, bottom)
    assert layer.blobs[0].shape == (256, 48, 5, 5)
    assert layer.blobs[1].shape == (256,)
    assert top[0].shape == (1, 256, 27, 27)
    # missing weight_filler => all-zero weights (Caffe's constant 0 default)
    assert not np.any(layer.blobs[0].data)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    bottom = make_blobs([(2, 4, 9, 8)])
    layer = _layer('num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2 dilation: 1')
    top = run_forward(layer, bottom)
    want = torch.nn.functional.conv2d(torch.from_numpy(bottom[0].data),
                                      torch.from_numpy(layer.blobs[0].data),
                                      torch.from_numpy(layer.blobs[1].data),
                                      stride=2, padding=1, groups=2).numpy()
    np.testing.assert_allclose(top[0].data, want, rtol=1e-10, atol=1e-10)


def test_sobel_separable():
    # Caffe's TestSobelConvolution: 3x3 Sobel == (3x1 smoothing) then (1x3 difference)
    x = make_blobs([(1, 1, 6, 7)])
    full = make_layer('type: "Convolution" convolution_param { num_output: 1 kernel_size: 3 '
                      'bias_term: false }')
    top = run_forward(full, x)
    full.blobs[0].data[...] = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
    full.forward(x, top)
    a = make_layer('type: "Convolution" convolution_param { num_output: 1 kernel_h: 3 kernel_w: 1 '
                   'bias_term: false }')
    mid = run_forward(a, x)
    a.blobs[0].data[...] = np.array([1, 2, 1]).reshape(1, 1, 3, 1)
    a.forward(x, mid)
    bl = make_layer('type: "Convolution" convolution_param { num_output: 1 kernel_h: 1 '
                    'kernel_w: 3 bias_term: false }')
    out = run_forward(bl, mid)
    bl.blobs[0].data[...] = np.array([-1, 0, 1]).reshape(1, 1, 1, 3)
    bl.forward(mid, out)
    np.testing.assert_allclose(out[0].data, top[0].data, atol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("text,shape", [
    ('num_output: 3 kernel_size: 3 stride: 2 pad: 1', (2, 2, 5, 5)),
    ('num_output: 4 kernel_size: 2 group: 2 dilation: 2', (1, 4, 5, 4)),
])
def test_gradients(xp, text, shape):
    layer = _layer(text, xp)
    check_layer_gradients(layer, make_blobs([shape], xp=xp), step=1e-2, threshold=1e-3)


def test_two_bottoms_share_weights():
    bottoms = make_blobs([(1, 2, 5, 5), (2, 2, 4, 4)])
    layer = _layer('num_output: 3 kernel_size: 3')
    from poseidon_cli.blob import Blob
    tops = [Blob((), dtype=np.float64), Blob((), dtype=np.float64)]
    layer.setup(bottoms, tops)
    layer.forward(bottoms, tops)
    assert tops[0].shape == (1, 3, 3, 3) and tops[1].shape == (2, 3, 2, 2)
    want = naive_conv(bottoms[1].data, layer.blobs[0].data, layer.blobs[1].data,
                      (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(tops[1].data, want, atol=1e-10)
    check_layer_gradients(_layer('num_output: 2 kernel_size: 2'),
                          make_blobs([(1, 2, 3, 3), (1, 2, 4, 3)]), n_top=2)


@pytest.mark.parametrize("text,shape,msg", [
    ('num_output: 2 kernel_size: 5', (1, 1, 3, 3), "larger than the padded input"),
    ('num_output: 3 kernel_size: 1 group: 2', (1, 4, 3, 3), "divisible by group"),
    ('kernel_size: 3', (1, 1, 3, 3), "num_output"),
    ('num_output: 2', (1, 1, 3, 3), "kernel_size"),
    ('num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3', (1, 1, 3, 3), "not both"),
])
def test_errors_name_the_layer(text, shape, msg):
    layer = make_layer(f'name: "convX" type: "Convolution" convolution_param {{ {text} }}')
    with pytest.raises(NetError, match=msg) as exc:
        run_forward(layer, make_blobs([shape]))
    assert "convX" in str(exc.value)


@pytest.mark.parametrize("text,shape", [
    ("num_output: 4 kernel_size: 3 pad: 1", (2, 3, 6, 5)),               # flip backward-data
    ("num_output: 4 kernel_size: 3 stride: 2", (2, 5, 7, 7)),            # col2im backward-data
    ("num_output: 6 kernel_size: 1", (3, 6, 4, 4)),                      # pointwise
    ("num_output: 4 kernel_size: 3 pad: 1 group: 2", (2, 4, 5, 5)),
])
def test_results_are_written_into_the_blobs_own_arrays(text, shape):
    """Forward writes y into the top's array and backward dx into the bottom's diff (no fresh
    array and copy); the numbers are those of the op run on its own."""
    from poseidon_cli.ops import conv as conv_ops
    rng = np.random.default_rng(5)
    layer = make_layer(f'type: "Convolution" convolution_param {{ {text} '
                       f'weight_filler {{ type: "gaussian" std: 1 }} '
                       f'bias_filler {{ type: "gaussian" std: 1 }} }}', dtype=np.float64)
    bottom = make_blobs([shape], dtype=np.float64)
    bottom[0].data[...] = rng.normal(size=shape)
    top = run_forward(layer, bottom)
    y_array, dx_array = top[0].data, bottom[0].diff
    w, b = layer.blobs[0].data, layer.blobs[1].data
    kw = layer._kw()
    for _ in range(2):
        bottom[0].data[...] = rng.normal(size=shape)
        layer.forward(bottom, top)
        assert top[0].data is y_array
        np.testing.assert_array_equal(top[0].data, conv_ops.conv2d_forward(bottom[0].data, w, b, **kw))
        top[0].diff[...] = rng.normal(size=top[0].shape)
        layer.blobs[0].diff[...] = 0
        layer.blobs[1].diff[...] = 0
        layer.backward(top, [True], bottom)
        assert bottom[0].diff is dx_array
        dx, dw, db = conv_ops.conv2d_backward(bottom[0].data, w, top[0].diff, **kw)
        np.testing.assert_array_equal(bottom[0].diff, dx)
        np.testing.assert_array_equal(layer.blobs[0].diff, dw)
        np.testing.assert_array_equal(layer.blobs[1].diff, db)


def test_in_place_convolution_does_not_write_over_its_input():
    """A 1x1 convolution with top == bottom (same blob): the result may not be formed in the
    array it reads, forward or backward."""
    from poseidon_cli.blob import Blob
    rng = np.random.default_rng(6)
    text = ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 1 '
            'weight_filler { type: "gaussian" std: 1 } }')
    x = rng.normal(size=(2, 3, 4, 4))
    dy = rng.normal(size=x.shape)
    ref = make_layer(text, dtype=np.float64)
    rb = make_blobs([x.shape], dtype=np.float64)
    rb[0].data[...] = x
    rt = run_forward(ref, rb)
    rt[0].diff[...] = dy
    ref.backward(rt, [True], rb)
    layer = make_layer(text, dtype=np.float64)
    blob = Blob(x.shape, dtype=np.float64)
    blob.data[...] = x
    layer.setup([blob], [blob])
    layer.blobs[0].data[...] = ref.blobs[0].data
    layer.blobs[1].data[...] = ref.blobs[1].data
    layer.forward([blob], [blob])
    np.testing.assert_array_equal(blob.data, rt[0].data)
    blob.diff[...] = dy
    layer.backward([blob], [True], [blob])
    np.testing.assert_array_equal(blob.diff, rb[0].diff)
