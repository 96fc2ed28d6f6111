"""Detector: pycaffe's ``caffe.Detector``, a TEST-phase Net that classifies image windows
(R-CNN style).

``Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
channel_swap=None, context_pad=None)``: transformer set up as in ``Classifier``;
``context_pad`` pixels of context (in net-input pixels) are kept around each window, the part
outside the image filled with the mean (in raw image space).

* ``detect_windows(images_windows)``: ``[(image filename, windows)]`` with windows an (n, 4) array
  of (ymin, xmin, ymax, xmax); returns one ``{"window", "prediction", "filename"}`` per window,
  in order, ``prediction`` being the net's first output for the window's crop.
* ``crop(im, window)``: the window of H x W x K image ``im`` (with context when configured).
* ``configure_crop(context_pad)``.
* ``detect_selective_search`` needs an external selective-search tool and raises
  ``NotImplementedError`` saying so.
"""
from __future__ import annotations

import numpy as np

from . import io as caffe_io
from .context import TEST
from .net import Net


class Detector(Net):
    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None, **net_kwargs):
        super().__init__(model_file, TEST, weights=pretrained_file, **net_kwargs)
        name = self.inputs[0]
        self.transformer = caffe_io.Transformer({name: self.blobs[name].shape})
        self.transformer.set_transpose(name, (2, 0, 1))
        if mean is not None:
            self.transformer.set_mean(name, mean)
        if input_scale is not None:
            self.transformer.set_input_scale(name, input_scale)
        if raw_scale is not None:
            self.transformer.set_raw_scale(name, raw_scale)
        if channel_swap is not None:
            self.transformer.set_channel_swap(name, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        crops = []
        for filename, windows in images_windows:
            image = caffe_io.load_image(filename).astype(np.float32)
            crops.extend(self.crop(image, w) for w in windows)
        name = self.inputs[0]
        net_in = np.stack([self.transformer.preprocess(name, c) for c in crops])
        predictions = self.forward_all(**{name: net_in})[self.outputs[0]]
        out, k = [], 0
        for filename, windows in images_windows:
            for window in windows:
                out.append({"window": window, "prediction": predictions[k], "filename": filename})
                k += 1
        return out

    def detect_selective_search(self, image_fnames):
        raise NotImplementedError("detect_selective_search needs the external selective_search_"
                                  "ijcv_with_python tool; compute windows and call "
                                  "detect_windows")

    def crop(self, im, window):
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        size = self.blobs[self.inputs[0]].shape[3]     # square input assumed, as pycaffe does
        scale = size / (1.0 * size - self.context_pad * 2)
        half_h = (window[2] - window[0] + 1) / 2.0
        half_w = (window[3] - window[1] + 1) / 2.0
        cy, cx = window[0] + half_h, window[1] + half_w
        box = np.round(np.array([cy - scale * half_h, cx - scale * half_w,
                                 cy + scale * half_h, cx + scale * half_w]))
        full_h, full_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        sh, sw = size / full_h, size / full_w
        pad_y = int(round(max(0, -box[0]) * sh))     # rows of context above the image
        pad_x = int(round(max(0, -box[1]) * sw))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        crop_h = min(int(round(clip_h * sh)), size - pad_y)
        crop_w = min(int(round(clip_w * sw)), size - pad_x)
        context = im[int(box[0]):int(box[2]), int(box[1]):int(box[3])]
        context = caffe_io.resize_image(context, (crop_h, crop_w))
        out = np.ones(tuple(int(d) for d in self.crop_dims), dtype=np.float32) * self.crop_mean
        out[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return out

    def configure_crop(self, context_pad):
        name = self.inputs[0]
        order = self.transformer.transpose[name]
        inverse = [order[t] for t in order]
        self.crop_dims = np.array(self.blobs[name].shape[1:])[inverse]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(name)
        if mean is None:
            self.crop_mean = np.zeros(tuple(int(d) for d in self.crop_dims), dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inverse)
        swap = self.transformer.channel_swap.get(name)
        if swap is not None:
            crop_mean = crop_mean[:, :, [list(swap).index(i) for i in range(crop_mean.shape[2])]]
        raw = self.transformer.raw_scale.get(name)
        if raw is not None:
            crop_mean = crop_mean / raw
        self.crop_mean = crop_mean
