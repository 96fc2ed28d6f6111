"""caffe.io: conversions round-trip for both BlobProto shape styles, images, oversample and the
Transformer. Legacy BlobProtos are built from field numbers (tests/wire.py); crops and resizes
against naive loops."""
import numpy as np
import pytest

import poseidon_cli as caffe
from poseidon_cli._proto import caffe_pb2

from wire import f_varint, packed_floats

io = caffe.io


def legacy_blob(values, n, c, h, w, diff=None):
    """A BlobProto as old Caffe wrote it: num=1 channels=2 height=3 width=4, data=5, diff=6."""
    buf = f_varint(1, n) + f_varint(2, c) + f_varint(3, h) + f_varint(4, w)
    buf += packed_floats(5, values)
    if diff is not None:
        buf += packed_floats(6, diff)
    bp = caffe_pb2.BlobProto()
    bp.ParseFromString(buf)
    return bp


def test_blobproto_both_shape_styles_round_trip():
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(2, 3, 4)).astype(np.float32)
    diff = rng.normal(size=(2, 3, 4)).astype(np.float32)
    bp = io.array_to_blobproto(arr, diff)
    assert list(bp.shape.dim) == [2, 3, 4] and not bp.HasField("num")
    assert np.array_equal(io.blobproto_to_array(bp), arr)
    assert np.array_equal(io.blobproto_to_array(bp, return_diff=True), diff)
    legacy = legacy_blob(arr.ravel(), 1, 2, 3, 4, diff=diff.ravel())
    back = io.blobproto_to_array(legacy)
    assert back.shape == (1, 2, 3, 4) and np.array_equal(back.ravel(), arr.ravel())
    assert np.array_equal(io.blobproto_to_array(legacy, return_diff=True).ravel(), diff.ravel())
    again = io.array_to_blobproto(back)
    assert list(again.shape.dim) == [1, 2, 3, 4]
    assert np.array_equal(io.blobproto_to_array(again), back)
    # a 0-d array (a channel-shared PReLU slope): no dims at all
    scalar = io.array_to_blobproto(np.float32(0.5))
    assert not scalar.HasField("shape") and io.blobproto_to_array(scalar).shape == ()


def test_blobprotovector_round_trip_both_styles():
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((1, 1, 2, 2), np.float32)]
    s = io.arraylist_to_blobprotovector_str(arrays)
    back = io.blobprotovector_str_to_arraylist(s)
    assert [a.shape for a in back] == [(2, 3), (1, 1, 2, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back))
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.append(legacy_blob(range(8), 2, 1, 2, 2))
    (only,) = io.blobprotovector_str_to_arraylist(vec.SerializeToString())
    assert only.shape == (2, 1, 2, 2) and list(only.ravel()) == list(range(8))


def test_datum_round_trip_label_only_when_given():
    img = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = io.array_to_datum(img)
    assert d.data == img.tobytes() and not d.HasField("label") and len(d.float_data) == 0
    assert (d.channels, d.height, d.width) == (2, 3, 4)
    assert np.array_equal(io.datum_to_array(d), img) and io.datum_to_array(d).dtype == np.uint8
    f = io.array_to_datum(img.astype(np.float32) / 7, label=3)
    assert f.label == 3 and not f.data and len(f.float_data) == 24
    assert np.allclose(io.datum_to_array(f), img / 7)
    assert io.datum_to_array(caffe_pb2.Datum.FromString(f.SerializeToString())).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="Incorrect array shape"):
        io.array_to_datum(np.zeros((2, 2)))


def test_oversample_is_corners_centre_then_mirrors():
    rng = np.random.default_rng(1)
    ims = rng.random((2, 7, 9, 3)).astype(np.float32)
    crops = io.oversample(ims, (4, 5))
    assert crops.shape == (20, 4, 5, 3)
    for i, im in enumerate(ims):
        boxes = [(0, 0), (0, 4), (3, 0), (3, 4), (int(3.5 - 2), int(4.5 - 2.5))]
        want = [im[y:y + 4, x:x + 5] for y, x in boxes]
        want += [c[:, ::-1] for c in want]
        for k in range(10):
            assert np.array_equal(crops[10 * i + k], want[k]), k


def test_resize_image_identity_constant_nearest_and_bilinear():
    rng = np.random.default_rng(2)
    im = rng.random((5, 6, 3)).astype(np.float32)
    assert np.allclose(io.resize_image(im, (5, 6)), im)
    const = np.full((4, 4, 1), 0.25, np.float32)
    out = io.resize_image(const, (7, 3))
    assert out.shape == (7, 3, 1) and np.all(out == 0.25)
    # nearest with an integer factor repeats pixels
    up = io.resize_image(im, (10, 12), interp_order=0)
    assert np.array_equal(up, im.repeat(2, axis=0).repeat(2, axis=1))
    # bilinear halving of a 4x4 averages 2x2 blocks (pixel centres aligned)
    g = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    half = io.resize_image(g, (2, 2))
    assert np.allclose(half[..., 0], [[2.5, 4.5], [10.5, 12.5]])


def test_load_image_color_grey_alpha(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    im = io.load_image(str(tmp_path / "a.png"))
    assert im.shape == (3, 4, 3) and im.dtype == np.float32
    assert np.allclose(im[..., 0], 1.0) and np.allclose(im[..., 1:], 0.0)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    g3 = io.load_image(str(tmp_path / "g.png"))
    assert g3.shape == (3, 4, 3) and np.allclose(g3[..., 2], grey / 255.0)
    g1 = io.load_image(str(tmp_path / "g.png"), color=False)
    assert g1.shape == (3, 4, 1) and np.allclose(g1[..., 0], grey / 255.0)


def test_transformer_preprocess_matches_hand_steps_and_deprocess_inverts():
    rng = np.random.default_rng(3)
    t = io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    mean = np.array([104.0, 117.0, 123.0])
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    im = rng.random((4, 5, 3)).astype(np.float32)
    x = t.preprocess("data", im)
    bgr_chw = im.transpose(2, 0, 1)[::-1]
    want = (bgr_chw * 255 - mean[:, None, None]) * 0.5
    assert x.shape == (3, 4, 5) and np.allclose(x, want, rtol=1e-5)
    assert np.allclose(t.deprocess("data", x), im, atol=1e-5)
    # elementwise mean (C, H, W), resize on the way in
    t2 = io.Transformer({"data": (1, 3, 4, 5)})
    t2.set_transpose("data", (2, 0, 1))
    m = rng.random((3, 4, 5))
    t2.set_mean("data", m)
    big = rng.random((8, 10, 3)).astype(np.float32)
    y = t2.preprocess("data", big)
    assert np.allclose(y, io.resize_image(big, (4, 5)).transpose(2, 0, 1) - m, atol=1e-6)
    assert np.allclose(t2.deprocess("data", y), io.resize_image(big, (4, 5)), atol=1e-5)
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("nope", 1)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
