import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.backend import to_host
from poseidon_cli.blob import Blob
from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_blobs, make_layer, run_forward


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


def naive_accuracy(x, labels, top_k, ignore=None):
    """BVLC's reference: correct iff fewer than top_k classes score strictly higher (random
    data has no ties). Returns (accuracy, per-class accuracy)."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    correct = count = 0
    hits, seen = np.zeros(c), np.zeros(c)
    for i in range(n):
        for pos in np.ndindex(spatial):
            lab = int(labels[(i,) + pos])
            if ignore is not None and lab == ignore:
                continue
            s = [x[(i, k) + pos] for k in range(c)]
            ok = sum(v > s[lab] for v in s) < top_k
            correct += ok
            count += 1
            hits[lab] += ok
            seen[lab] += 1
    per_class = np.where(seen > 0, hits / np.maximum(seen, 1), 0)
    return (correct / count if count else 0.0), per_class


@pytest.mark.parametrize("xp", XPS)
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_forward_against_naive(xp, top_k):
    scores = make_blobs([(20, 6)], xp=xp)[0]
    labels = labels_blob((20,), 6, xp=xp)
    layer = make_layer(f'type: "Accuracy" accuracy_param {{ top_k: {top_k} }}', xp=xp)
    top = run_forward(layer, [scores, labels], n_top=2)
    assert top[0].shape == () and top[1].shape == (6,)
    acc, per_class = naive_accuracy(to_host(scores.data), to_host(labels.data), top_k)
    np.testing.assert_allclose(float(to_host(top[0].data)), acc, rtol=1e-15)
    np.testing.assert_allclose(to_host(top[1].data), per_class, rtol=1e-15)


@pytest.mark.parametrize("xp", XPS)
def test_spatial_positions_and_ignore_label(xp):
    scores = make_blobs([(3, 4, 2, 5)], xp=xp)[0]
    labels = labels_blob((3, 1, 2, 5), 4, xp=xp)
    layer = make_layer('type: "Accuracy" accuracy_param { top_k: 2 ignore_label: 3 }', xp=xp)
    top = run_forward(layer, [scores, labels], n_top=2)
    lab = to_host(labels.data).reshape(3, 2, 5)
    acc, per_class = naive_accuracy(to_host(scores.data), lab, 2, ignore=3)
    np.testing.assert_allclose(float(to_host(top[0].data)), acc, rtol=1e-15)
    np.testing.assert_allclose(to_host(top[1].data), per_class, rtol=1e-15)
    assert float(to_host(top[1].data)[3]) == 0.0  # the ignored class is never counted


def test_axis_parameter():
    scores = make_blobs([(3, 2, 5)])[0]  # classes along axis 2
    labels = labels_blob((3, 2), 5)
    top = run_forward(make_layer('type: "Accuracy" accuracy_param { axis: -1 }'),
                      [scores, labels])
    moved = np.moveaxis(scores.data, 2, 1)
    acc, _ = naive_accuracy(moved, labels.data, 1)
    assert float(top[0].data) == acc


def test_ties_count_against():
    scores = Blob((4, 3), dtype=np.float64)
    scores.data[...] = [[1, 1, 1],      # all equal: never correct for top_k 1
                        [2, 2, 0],      # tie with another class at the top: wrong
                        [0, 5, 1],      # clear win
                        [3, 3, 3]]
    labels = Blob((4,), dtype=np.float64)
    labels.data[...] = [0, 1, 1, 2]
    top = run_forward(make_layer('type: "Accuracy"'), [scores, labels])
    assert float(top[0].data) == 0.25
    # with top_k 2 the 2-way tie is fine, the 3-way ties still fail
    top = run_forward(make_layer('type: "Accuracy" accuracy_param { top_k: 2 }'),
                      [scores, labels])
    assert float(top[0].data) == 0.5


def test_everything_ignored_gives_zero():
    scores = make_blobs([(3, 4)])[0]
    labels = Blob((3,), dtype=np.float64)
    labels.data[...] = 9
    top = run_forward(make_layer('type: "Accuracy" accuracy_param { ignore_label: 9 }'),
                      [scores, labels])
    assert float(top[0].data) == 0.0


def test_top_k_larger_than_classes_is_a_net_error():
    with pytest.raises(NetError, match="top_k 5"):
        run_forward(make_layer('type: "Accuracy" accuracy_param { top_k: 5 }'),
                    [make_blobs([(2, 4)])[0], labels_blob((2,), 4)])


def test_label_count_mismatch_is_a_net_error():
    with pytest.raises(NetError, match="label count"):
        run_forward(make_layer('type: "Accuracy"'), [make_blobs([(2, 4)])[0], labels_blob((3,), 4)])


def test_no_gradient():
    layer = make_layer('type: "Accuracy"')
    scores, labels = make_blobs([(2, 4)])[0], labels_blob((2,), 4)
    top = run_forward(layer, [scores, labels])
    assert not layer.allow_force_backward(0)
    scores.diff[...] = 5
    layer.backward(top, [True, False], [scores, labels])
    assert (scores.diff == 0).all()
