import itertools

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


FLT_MIN = float(np.finfo(np.float32).tiny)


def labels_blob(shape, num_classes, seed=2, xp=np):
    b = Blob(shape, xp=xp, dtype=np.float64)
    b.data[...] = xp.asarray(np.random.default_rng(seed).integers(0, num_classes, shape)
                             .astype(np.float64))
    return b


def naive_loss_terms(x, labels):
    """-log(max(p_label, FLT_MIN)) per (n, h, w) by explicit loops; NaN nowhere."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    terms = np.zeros((n,) + spatial)
    for i in range(n):
        for pos in np.ndindex(spatial):
            s = np.array([x[(i, k) + pos] for k in range(c)])
            p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            terms[(i,) + pos] = -np.log(max(p[int(labels[(i,) + pos])], FLT_MIN))
    return terms


def make_loss(extra="", xp=np, **kw):
    return make_layer(f'type: "SoftmaxWithLoss" {extra}', xp=xp, **kw)


@pytest.mark.parametrize("xp", XPS)
def test_forward_against_naive_valid_normalization(xp):
    scores = make_blobs([(4, 5, 2, 3)], xp=xp, low=-3, high=3)[0]
    labels = labels_blob((4, 1, 2, 3), 5, xp=xp)
    layer = make_loss(xp=xp)
    top = run_forward(layer, [scores, labels])
    assert top[0].shape == ()
    terms = naive_loss_terms(to_host(scores.data), to_host(labels.data).reshape(4, 2, 3))
    # default VALID without ignore_label divides by N*H*W
    np.testing.assert_allclose(float(to_host(top[0].data)), terms.sum() / 24, rtol=1e-12)


def test_matches_torch_cross_entropy():
    torch = pytest.importorskip("torch")
    scores = make_blobs([(6, 4)], low=-3, high=3)[0]
    labels = labels_blob((6,), 4)
    top = run_forward(make_loss(), [scores, labels])
    want = torch.nn.functional.cross_entropy(torch.from_numpy(scores.data),
                                             torch.from_numpy(labels.data).long())
    np.testing.assert_allclose(float(top[0].data), float(want), rtol=1e-12)


@pytest.mark.parametrize("mode,divisor", [("FULL", 24), ("VALID", None), ("BATCH_SIZE", 4),
                                          ("NONE", 1)])
def test_normalization_modes(mode, divisor):
    scores = make_blobs([(4, 5, 2, 3)], low=-3, high=3)[0]
    labels = labels_blob((4, 2, 3), 5)
    lab = labels.data.reshape(4, 2, 3)
    terms = naive_loss_terms(scores.data, lab)
    keep = lab != 2
    if divisor is None:
        divisor = keep.sum()
    layer = make_loss(f"loss_param {{ ignore_label: 2 normalization: {mode} }}")
    top = run_forward(layer, [scores, labels])
    np.testing.assert_allclose(float(top[0].data), terms[keep].sum() / divisor, rtol=1e-12)


@pytest.mark.parametrize("normalize,divisor", [("true", 24), ("false", 4)])
def test_legacy_normalize_flag(normalize, divisor):
    scores = make_blobs([(4, 5, 2, 3)], low=-3, high=3)[0]
    labels = labels_blob((4, 2, 3), 5)
    terms = naive_loss_terms(scores.data, labels.data.reshape(4, 2, 3))
    top = run_forward(make_loss(f"loss_param {{ normalize: {normalize} }}"), [scores, labels])
    np.testing.assert_allclose(float(top[0].data), terms.sum() / divisor, rtol=1e-12)


def test_normalization_overrides_legacy_normalize():
    scores = make_blobs([(4, 5)], low=-3, high=3)[0]
    labels = labels_blob((4,), 5)
    a = run_forward(make_loss("loss_param { normalize: false normalization: NONE }"),
                    [scores, labels])[0].data
    b = run_forward(make_loss("loss_param { normalization: NONE }"), [scores, labels])[0].data
    assert float(a) == float(b)


def test_ignore_label_sum_over_runs_is_l_minus_1_times_full_loss():
    # BVLC's TestForwardIgnoreLabel: with normalize false (fixed divisor), leaving out each of
    # the 5 labels in turn and summing gives 4x the loss with nothing ignored.
    scores = make_blobs([(10, 5, 2, 3)], low=-3, high=3)[0]
    labels = labels_blob((10, 1, 2, 3), 5)
    full = float(run_forward(make_loss("loss_param { normalize: false }"),
                             [scores, labels])[0].data)
    total = 0.0
    for ignored in range(5):
        layer = make_loss(f"loss_param {{ normalize: false ignore_label: {ignored} }}")
        total += float(run_forward(layer, [scores, labels])[0].data)
    np.testing.assert_allclose(total, 4 * full, rtol=1e-12)


def test_flt_min_clamp_caps_a_term_at_87_3365():
    scores = Blob((2, 3), dtype=np.float64)
    scores.data[...] = [[0.0, 200.0, -200.0], [0.0, 0.0, 0.0]]  # p(label 2) = e^-400 ~ 0
    labels = Blob((2,), dtype=np.float64)
    labels.data[...] = [2, 1]
    top = run_forward(make_loss("loss_param { normalization: NONE }"), [scores, labels])
    np.testing.assert_allclose(float(top[0].data), -np.log(FLT_MIN) + np.log(3), rtol=1e-12)
    assert abs(-np.log(FLT_MIN) - 87.3365) < 1e-4


@pytest.mark.parametrize("xp", XPS)
def test_second_top_holds_probabilities(xp):
    scores = make_blobs([(3, 4, 2)], xp=xp)[0]
    labels = labels_blob((3, 2), 4, xp=xp)
    top = run_forward(make_loss(xp=xp), [scores, labels], n_top=2)
    assert top[1].shape == (3, 4, 2)
    x = to_host(scores.data)
    e = np.exp(x)
    np.testing.assert_allclose(to_host(top[1].data), e / e.sum(axis=1, keepdims=True), rtol=1e-13)


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("extra", ["", "loss_param { normalize: false }",
                                   "loss_param { ignore_label: 1 }",
                                   "loss_param { ignore_label: 0 normalization: FULL }",
                                   "softmax_param { axis: 2 }"])
def test_gradient(xp, extra):
    scores = make_blobs([(3, 4, 3, 2)], xp=xp, low=-2, high=2)[0]
    axis2 = "axis: 2" in extra
    labels = labels_blob((3, 4, 1, 2) if axis2 else (3, 1, 3, 2), 3 if axis2 else 4, xp=xp)
    check_layer_gradients(make_loss(extra, xp=xp), [scores, labels], check_bottom=0,
                          threshold=1e-2)


def test_gradient_closed_form_with_loss_weight():
    scores = make_blobs([(3, 4)], low=-2, high=2)[0]
    labels = labels_blob((3,), 4)
    layer = make_loss("loss_weight: 2.5 loss_param { ignore_label: 3 }")
    top = run_forward(layer, [scores, labels])
    assert float(top[0].diff) == 2.5  # setup stored the weight
    layer.backward(top, [True, False], [scores, labels])
    e = np.exp(scores.data)
    p = e / e.sum(axis=1, keepdims=True)
    lab = labels.data.astype(int)
    want = p.copy()
    want[np.arange(3), lab] -= 1
    want[lab == 3] = 0
    want *= 2.5 / max((lab != 3).sum(), 1)
    np.testing.assert_allclose(scores.diff, want, rtol=1e-12, atol=1e-15)


def test_ignored_positions_get_zero_gradient_and_loss():
    scores = make_blobs([(4, 3)], low=-2, high=2)[0]
    labels = Blob((4,), dtype=np.float64)
    labels.data[...] = [255, 1, 255, 2]
    layer = make_loss("loss_param { ignore_label: 255 }")
    top = run_forward(layer, [scores, labels])
    layer.backward(top, [True, False], [scores, labels])
    assert (scores.diff[[0, 2]] == 0).all() and (scores.diff[[1, 3]] != 0).all()
    # all ignored: normalizer clamps at 1, loss 0
    labels.data[...] = 255
    layer.forward([scores, labels], top)
    assert float(top[0].data) == 0.0


@pytest.mark.parametrize("bad", [5, -1])
def test_label_out_of_range_is_a_net_error(bad):
    scores = make_blobs([(2, 5)])[0]
    labels = Blob((2,), dtype=np.float64)
    labels.data[...] = [0, bad]
    with pytest.raises(NetError, match=f"label {bad} is out of range"):
        run_forward(make_loss(), [scores, labels])


def test_label_count_mismatch_is_a_net_error():
    with pytest.raises(NetError, match="label count 3"):
        run_forward(make_loss(), [make_blobs([(2, 5)])[0], Blob((3,), dtype=np.float64)])


def test_backward_to_labels_is_refused():
    scores = make_blobs([(2, 3)])[0]
    labels = labels_blob((2,), 3)
    layer = make_loss()
    top = run_forward(layer, [scores, labels])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    with pytest.raises(NetError, match="label"):
        layer.backward(top, [True, True], [scores, labels])


def test_every_combination_of_mode_and_ignore_is_finite():
    scores = make_blobs([(2, 3, 2)])[0]
    labels = labels_blob((2, 2), 3)
    for mode, ign in itertools.product(["FULL", "VALID", "BATCH_SIZE", "NONE"], [0, 1, 2, 7]):
        layer = make_loss(f"loss_param {{ normalization: {mode} ignore_label: {ign} }}")
        top = run_forward(layer, [scores, labels])
        layer.backward(top, [True, False], [scores, labels])
        assert np.isfinite(top[0].data) and np.isfinite(scores.diff).all()
