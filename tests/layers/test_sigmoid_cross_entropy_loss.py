import warnings

import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
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


def labels_blob(shape, num_classes, seed=2, xp=np):
    b = Blob(shape, xp=xp, dtype=np.float64)
    b.data[...] = xp.asarray(np.random.default_rng(seed).integers(0, num_classes, shape)
                             .astype(np.float64))
    return b



def targets_blob(shape, seed=4, xp=np):
    b = Blob(shape, xp=xp, dtype=np.float64)
    b.data[...] = xp.asarray(np.random.default_rng(seed).uniform(0, 1, shape))
    return b


def naive_terms(x, t):
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p) + (1 - t) * np.log(1 - p))


@pytest.mark.parametrize("xp", XPS)
def test_forward_default_divides_by_batch(xp):
    x = make_blobs([(5, 3, 2)], xp=xp, low=-4, high=4)[0]
    t = targets_blob((5, 3, 2), xp=xp)
    top = run_forward(make_layer('type: "SigmoidCrossEntropyLoss"', xp=xp), [x, t])
    assert top[0].shape == ()
    want = naive_terms(to_host(x.data), to_host(t.data)).sum() / 5
    np.testing.assert_allclose(float(to_host(top[0].data)), want, rtol=1e-12)


def test_matches_torch_bce_with_logits():
    torch = pytest.importorskip("torch")
    x = make_blobs([(6, 4)], low=-5, high=5)[0]
    t = targets_blob((6, 4))
    top = run_forward(make_layer('type: "SigmoidCrossEntropyLoss"'), [x, t])
    want = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(x.data), torch.from_numpy(t.data), reduction="sum") / 6
    np.testing.assert_allclose(float(top[0].data), float(want), rtol=1e-12)


def test_huge_scores_are_stable():
    x = Blob((1, 4), dtype=np.float64)
    x.data[...] = [[-1000, 1000, -1000, 1000]]
    t = Blob((1, 4), dtype=np.float64)
    t.data[...] = [[0, 1, 1, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top = run_forward(make_layer('type: "SigmoidCrossEntropyLoss"'), [x, t])
    np.testing.assert_allclose(float(top[0].data), 2000.0, rtol=1e-12)


@pytest.mark.parametrize("extra,divisor", [("", 5), ("loss_param { normalization: FULL }", 30),
                                           ("loss_param { normalization: NONE }", 1),
                                           ("loss_param { normalize: true }", 30),
                                           ("loss_param { normalize: false }", 5)])
def test_normalization(extra, divisor):
    x = make_blobs([(5, 6)], low=-3, high=3)[0]
    t = targets_blob((5, 6))
    top = run_forward(make_layer(f'type: "SigmoidCrossEntropyLoss" {extra}'), [x, t])
    np.testing.assert_allclose(float(top[0].data), naive_terms(x.data, t.data).sum() / divisor,
                               rtol=1e-12)


def test_ignore_label_with_valid_normalization():
    x = make_blobs([(4, 5)], low=-3, high=3)[0]
    t = Blob((4, 5), dtype=np.float64)
    t.data[...] = np.random.default_rng(1).integers(-1, 2, (4, 5))  # -1 marks "ignore"
    layer = make_layer('type: "SigmoidCrossEntropyLoss" '
                       'loss_param { ignore_label: -1 normalization: VALID }')
    top = run_forward(layer, [x, t])
    keep = t.data != -1
    want = naive_terms(x.data[keep], t.data[keep]).sum() / keep.sum()
    np.testing.assert_allclose(float(top[0].data), want, rtol=1e-12)
    layer.backward(top, [True, False], [x, t])
    assert (x.diff[~keep] == 0).all()
    p = 1 / (1 + np.exp(-x.data))
    np.testing.assert_allclose(x.diff[keep], (p - t.data)[keep] / keep.sum(), rtol=1e-12)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("extra", ["", "loss_param { normalization: VALID ignore_label: 0 }"])
def test_gradient(xp, extra):
    x = make_blobs([(3, 4, 2)], xp=xp, low=-3, high=3)[0]
    t = targets_blob((3, 4, 2), xp=xp)
    if extra:
        t.data[...] = xp.asarray(np.random.default_rng(3).integers(0, 2, (3, 4, 2)))
    layer = make_layer(f'type: "SigmoidCrossEntropyLoss" {extra}', xp=xp)
    check_layer_gradients(layer, [x, t], check_bottom=0, threshold=1e-2)


def test_count_mismatch_and_target_backward_are_net_errors():
    with pytest.raises(NetError, match="same count"):
        run_forward(make_layer('type: "SigmoidCrossEntropyLoss"'), make_blobs([(3, 4), (3, 5)]))
    layer = make_layer('type: "SigmoidCrossEntropyLoss"')
    x, t = make_blobs([(2, 2)])[0], targets_blob((2, 2))
    top = run_forward(layer, [x, t])
    with pytest.raises(NetError, match="target"):
        layer.backward(top, [True, True], [x, t])
