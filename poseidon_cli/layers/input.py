"""Input: the net's entry point for data fed from outside (``net.forward(data=...)``).

Reads ``input_param.shape`` (one BlobShape for all tops, or one per top). Tops are shaped once at
setup; ``reshape`` keeps whatever shape the caller gave the blob since (pycaffe's
``net.blobs['data'].reshape(...)`` then ``net.reshape()``). Forward does nothing. The Net lists
an Input layer's tops in ``net.inputs``.
"""
from __future__ import annotations

from . import register
from .base import Layer


@register("Input")
class InputLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(f"input_param has {len(shapes)} shape(s) for {len(top)} top(s); give "
                             f"one shape for all tops or one per top")
        for i, blob in enumerate(top):
            if shapes:
                dims = tuple(int(d) for d in shapes[0 if len(shapes) == 1 else i].dim)
                if any(d < 0 for d in dims):
                    raise self.error(f"negative dimension in input shape {dims}")
                blob.reshape(dims)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass
