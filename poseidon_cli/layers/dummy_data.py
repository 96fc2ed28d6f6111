"""DummyData: tops filled by fillers, for tests and for timing nets without a database.

Fields (``dummy_data_param``): ``shape`` (one BlobShape for all tops or one per top) or the legacy
``num``/``channels``/``height``/``width`` lists (each of length 1 or one per top); ``data_filler``
(none => constant 0; one => used for every top; else one per top). As in Caffe, a top with a
``constant`` filler is filled once at setup; any other filler refills it on every forward.
"""
from __future__ import annotations

from .. import fillers
from .._proto import caffe_pb2
from . import register
from .base import Layer


@register("DummyData")
class DummyDataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        legacy = [p.num, p.channels, p.height, p.width]
        if p.shape and any(len(f) for f in legacy):
            raise self.error("give either shape or num/channels/height/width, not both")
        if p.shape:
            if len(p.shape) not in (1, n):
                raise self.error(f"{len(p.shape)} shape(s) for {n} top(s); give 1 or {n}")
            shapes = [tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim)
                      for i in range(n)]
        else:
            for name, f in zip(("num", "channels", "height", "width"), legacy):
                if len(f) not in (1, n):
                    raise self.error(f"{len(f)} value(s) of {name} for {n} top(s); give 1 or {n}")
            shapes = [tuple(int(f[0 if len(f) == 1 else i]) for f in legacy) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise self.error(f"{len(p.data_filler)} data_filler(s) for {n} top(s); give 0, 1 or {n}")
        fps = list(p.data_filler) or [caffe_pb2.FillerParameter()]
        self.fillers = [fps[0 if len(fps) == 1 else i] for i in range(n)]
        self.refill = [f.type != "constant" for f in self.fillers]
        self.shapes = shapes
        for blob, shape, fp in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            fillers.fill(blob, fp, self.rng, self.describe())

    def reshape(self, bottom, top):
        for blob, shape, fp in zip(top, self.shapes, self.fillers):
            if blob.shape != shape:
                blob.reshape(shape)
                fillers.fill(blob, fp, self.rng, self.describe())

    def forward(self, bottom, top):
        for blob, fp, again in zip(top, self.fillers, self.refill):
            if again:
                fillers.fill(blob, fp, self.rng, self.describe())
