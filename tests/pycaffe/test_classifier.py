"""Classifier and Detector against a numpy reference of the same net: with oversampling the
prediction is the mean over the 10 crops; windows are cropped from the image file."""
import numpy as np
import pytest

import poseidon_cli as caffe

DEPLOY = '''
name: "tiny_cls"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
'''


@pytest.fixture
def model(tmp_path):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(DEPLOY)
    net = caffe.Net(str(proto), caffe.TEST)
    weights = tmp_path / "w.caffemodel"
    net.save(str(weights))
    W = net.params["ip"][0].data.astype(np.float64)
    b = net.params["ip"][1].data.astype(np.float64)
    return str(proto), str(weights), W, b


def reference(W, b, chw_batch):
    z = chw_batch.reshape(len(chw_batch), -1) @ W.T + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prep(x, mean):
    # transpose HWC->CHW, RGB->BGR, *255, - mean: the documented preprocess order
    return x.transpose(2, 0, 1)[::-1] * 255.0 - mean[:, None, None]


def test_classifier_oversample_is_the_mean_of_the_ten_crops(model):
    proto, weights, W, b = model
    mean = np.array([100.0, 110.0, 120.0])
    clf = caffe.Classifier(proto, weights, image_dims=(8, 9), mean=mean, raw_scale=255,
                           channel_swap=(2, 1, 0))
    rng = np.random.default_rng(0)
    images = [rng.random((10, 12, 3)).astype(np.float32) for _ in range(3)]
    got = clf.predict(images)            # oversample=True is the default
    assert got.shape == (3, 5)
    for i, im in enumerate(images):
        r = caffe.io.resize_image(im, (8, 9))
        boxes = [(0, 0), (0, 3), (2, 0), (2, 3), (1, 1)]
        crops = [r[y:y + 6, x:x + 6] for y, x in boxes]
        crops += [c[:, ::-1] for c in crops]
        probs = reference(W, b, np.stack([prep(c, mean) for c in crops]))
        assert np.allclose(got[i], probs.mean(axis=0), rtol=1e-4, atol=1e-6)
    centre = clf.predict(images, oversample=False)
    for i, im in enumerate(images):
        r = caffe.io.resize_image(im, (8, 9))
        want = reference(W, b, prep(r[1:7, 1:7], mean)[None])[0]
        assert np.allclose(centre[i], want, rtol=1e-4, atol=1e-6)


def test_detector_windows_in_order(model, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    proto, weights, W, b = model
    rng = np.random.default_rng(1)
    pixels = (rng.random((20, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "im.png")
    im = pixels.astype(np.float32) / 255.0
    det = caffe.Detector(proto, weights, mean=np.zeros(3), raw_scale=255, channel_swap=(2, 1, 0))
    windows = np.array([[0, 0, 6, 6], [2, 3, 14, 15], [5, 1, 17, 7]])
    out = det.detect_windows([(str(tmp_path / "im.png"), windows)])
    assert [d["filename"] for d in out] == [str(tmp_path / "im.png")] * 3
    for d, w in zip(out, windows):
        crop = caffe.io.resize_image(im[w[0]:w[2], w[1]:w[3]], (6, 6))
        want = reference(W, b, prep(crop, np.zeros(3))[None])[0]
        assert np.array_equal(d["window"], w)
        assert np.allclose(d["prediction"], want, rtol=1e-4, atol=1e-6)
    padded = caffe.Detector(proto, weights, raw_scale=255, context_pad=1)
    ctx = padded.crop(im, np.array([0, 0, 6, 6]))
    assert ctx.shape == (6, 6, 3)
    with pytest.raises(NotImplementedError, match="detect_windows"):
        det.detect_selective_search([])
