"""DataTransformer against values computed by hand from Caffe's formula
out = (x[c, h+h_off, w'+w_off] - mean[...]) * scale."""
import numpy as np
import pytest

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.data.transform import TEST, TRAIN, DataTransformer
from poseidon_cli.errors import DataError


def tp(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


def write_mean(path, mean):
    b = caffe_pb2.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2])
    b.data.extend(mean.ravel().tolist())
    path.write_bytes(b.SerializeToString())
    return str(path)


IMG = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(1, 2, 5, 6)   # value = c*30 + h*6 + w


def test_test_phase_centre_crop_mean_before_scale(tmp_path):
    mean = np.arange(60, dtype=np.float32).reshape(2, 5, 6) * 0.5
    t = DataTransformer(tp(crop_size=3, scale=0.5, mean_file=write_mean(tmp_path / "m", mean)), TEST)
    assert t.setup((2, 5, 6)) == (2, 3, 3)
    out = t.transform_batch(IMG)
    # centre offsets: h_off = (5-3)//2 = 1, w_off = (6-3)//2 = 1
    for c in range(2):
        for h in range(3):
            for w in range(3):
                x = c * 30 + (h + 1) * 6 + (w + 1)
                m = 0.5 * x
                assert out[0, c, h, w] == pytest.approx((x - m) * 0.5)


def test_mirror_flips_after_mean_at_the_input_position():
    t = DataTransformer(tp(mirror=True, mean_value=[1, 2]), TRAIN, np.random.default_rng(0))
    t.setup((2, 5, 6))
    out = t.transform_batch(IMG, choices=(np.array([True]), np.array([0]), np.array([0])))
    for c, m in enumerate([1, 2]):
        for h in range(5):
            for w in range(6):
                assert out[0, c, h, w] == c * 30 + h * 6 + (5 - w) - m


def test_train_crop_at_given_offsets_with_mean_file_and_mirror(tmp_path):
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, size=(2, 1, 4, 4), dtype=np.uint8)
    mean = rng.uniform(0, 255, size=(1, 4, 4)).astype(np.float32)
    t = DataTransformer(tp(crop_size=2, mirror=True, scale=0.25,
                           mean_file=write_mean(tmp_path / "m", mean)), TRAIN)
    t.setup((1, 4, 4))
    out = t.transform_batch(batch, choices=(np.array([False, True]), np.array([2, 0]),
                                            np.array([1, 2])))
    want0 = (batch[0, 0, 2:4, 1:3].astype(np.float32) - mean[0, 2:4, 1:3]) * 0.25
    want1 = ((batch[1, 0, 0:2, 2:4].astype(np.float32) - mean[0, 0:2, 2:4]) * 0.25)[:, ::-1]
    np.testing.assert_allclose(out[0, 0], want0, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], want1, rtol=1e-6)


def test_train_offsets_cover_the_inclusive_range_and_mirror_half_the_time():
    t = DataTransformer(tp(crop_size=3, mirror=True), TRAIN, np.random.default_rng(5))
    t.setup((1, 5, 6))
    mirror, h_off, w_off = t.draw(4000)
    assert set(h_off.tolist()) == {0, 1, 2} and set(w_off.tolist()) == {0, 1, 2, 3}
    assert 0.45 < mirror.mean() < 0.55


def test_random_crop_output_is_a_window_of_the_input():
    batch = np.random.default_rng(1).integers(0, 256, size=(16, 1, 6, 6), dtype=np.uint8)
    t = DataTransformer(tp(crop_size=4), TRAIN, np.random.default_rng(2))
    t.setup((1, 6, 6))
    out = t.transform_batch(batch)
    for n in range(16):
        windows = [batch[n, 0, y:y + 4, x:x + 4] for y in range(3) for x in range(3)]
        assert any(np.array_equal(out[n, 0], w) for w in windows)


def test_single_mean_value_replicated_and_scale_only():
    t = DataTransformer(tp(mean_value=[10], scale=2.0), TEST)
    t.setup((2, 5, 6))
    np.testing.assert_array_equal(t.transform_batch(IMG), (IMG.astype(np.float32) - 10) * 2)


@pytest.mark.parametrize("kw,shape,match", [
    (dict(crop_size=7), (1, 5, 6), "crop_size 7 is larger"),
    (dict(mean_value=[1, 2]), (3, 4, 4), "2 mean_value entries for 3-channel"),
])
def test_bad_settings(kw, shape, match):
    with pytest.raises(DataError, match=match):
        DataTransformer(tp(**kw), TEST).setup(shape)


def test_mean_file_shape_mismatch_and_both_means(tmp_path):
    path = write_mean(tmp_path / "m", np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataError, match="has shape 1x4x4 but the data is 1x5x6"):
        DataTransformer(tp(mean_file=path), TEST).setup((1, 5, 6))
    with pytest.raises(DataError, match="both mean_file and mean_value"):
        DataTransformer(tp(mean_file=path, mean_value=[1]), TEST)
    with pytest.raises(DataError, match="mean_file"):
        DataTransformer(tp(mean_file=str(tmp_path / "nope")), TEST).setup((1, 4, 4))
