"""Python layers for the pycaffe example, written against pycaffe's Layer API only.

DigitsData: a data layer reading Caffe Datum records from an LMDB in key order (wrapping
around), scaled like transform_param { scale }. param_str is JSON:
{"source": "...lmdb", "batch_size": 50, "scale": 0.00390625}. Tops: data (N, C, H, W), label (N,).

SoftmaxLoss: multinomial logistic loss of softmax(bottom[0]) against integer labels bottom[1],
averaged over the batch (what SoftmaxWithLoss computes). Give it loss_weight: 1.
"""
import json

import lmdb
import numpy as np

import poseidon_cli as caffe
from poseidon_cli.proto import caffe_pb2


class DigitsData(caffe.Layer):
    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        self.batch_size = int(params["batch_size"])
        self.scale = float(params.get("scale", 1.0))
        env = lmdb.open(params["source"], readonly=True, lock=False)
        images, labels = [], []
        with env.begin() as txn:
            for _, value in txn.cursor():
                datum = caffe_pb2.Datum()
                datum.ParseFromString(value)
                images.append(caffe.io.datum_to_array(datum))
                labels.append(datum.label)
        env.close()
        self.images = np.asarray(images, dtype=np.float32) * self.scale
        self.labels = np.asarray(labels, dtype=np.float32)
        self.pos = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch_size, *self.images.shape[1:])
        top[1].reshape(self.batch_size)

    def forward(self, bottom, top):
        idx = (self.pos + np.arange(self.batch_size)) % len(self.images)
        top[0].data[...] = self.images[idx]
        top[1].data[...] = self.labels[idx]
        self.pos = int((self.pos + self.batch_size) % len(self.images))

    def backward(self, top, propagate_down, bottom):
        pass


class SoftmaxLoss(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("SoftmaxLoss needs scores and labels")

    def reshape(self, bottom, top):
        top[0].reshape()          # a scalar loss, as Caffe's loss layers give

    def forward(self, bottom, top):
        scores = bottom[0].data.reshape(bottom[0].num, -1)
        shifted = scores - scores.max(axis=1, keepdims=True)
        self.prob = np.exp(shifted)
        self.prob /= self.prob.sum(axis=1, keepdims=True)
        self.label = bottom[1].data.astype(int).ravel()
        picked = self.prob[np.arange(len(self.label)), self.label]
        top[0].data[...] = -np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean()

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            grad = self.prob.copy()
            grad[np.arange(len(self.label)), self.label] -= 1
            grad *= top[0].diff / len(self.label)
            bottom[0].diff[...] = grad.reshape(bottom[0].diff.shape)
