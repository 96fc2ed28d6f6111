"""Classifier: pycaffe's ``caffe.Classifier``, a TEST-phase Net that classifies images.

``Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
raw_scale=None, channel_swap=None)``: the net's first input blob (N, K, h, w) takes images;
``image_dims`` (default (h, w)) is the size images are resized to before cropping; ``mean``,
``input_scale``, ``raw_scale`` and ``channel_swap`` configure ``self.transformer`` (an
``io.Transformer`` that also transposes H x W x K -> K x H x W).

``predict(inputs, oversample=True)``: ``inputs`` is a list of H x W x K float images. Each is
resized to ``image_dims``; with ``oversample`` the 10 crops of ``io.oversample`` are classified
and their outputs averaged, else the centre crop. Returns (len(inputs), classes): the net's first
output.
"""
from __future__ import annotations

import numpy as np

from . import io as caffe_io
from .context import TEST
from .net import Net


class Classifier(Net):
    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, **net_kwargs):
        super().__init__(model_file, TEST, weights=pretrained_file, **net_kwargs)
        name = self.inputs[0]
        shape = self.blobs[name].shape
        self.transformer = caffe_io.Transformer({name: shape})
        self.transformer.set_transpose(name, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(name, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(name, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(name, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(name, channel_swap)
        self.crop_dims = np.array(shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample=True):
        h, w = (int(d) for d in self.image_dims)
        k = np.asarray(inputs[0]).shape[2]
        batch = np.zeros((len(inputs), h, w, k), dtype=np.float32)
        for i, im in enumerate(inputs):
            batch[i] = caffe_io.resize_image(im, (h, w))
        if oversample:
            crops = caffe_io.oversample(batch, self.crop_dims)
        else:
            ch, cw = (int(d) for d in self.crop_dims)
            y0, x0 = int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0)
            crops = batch[:, y0:y0 + ch, x0:x0 + cw, :]
        name = self.inputs[0]
        net_in = np.stack([self.transformer.preprocess(name, c) for c in crops])
        out = self.forward_all(**{name: net_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(axis=1)
        return predictions
