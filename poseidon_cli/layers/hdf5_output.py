"""HDF5Output: write bottoms to an HDF5 file (needs the ``[hdf5]`` extra).

Fields (``hdf5_output_param.file_name``). Bottoms: exactly two, written as datasets ``data`` and
``label`` (Caffe's names) holding every row seen so far: each forward appends its batch and
rewrites the file, so the file is complete after any iteration. No tops, no gradient.

Errors: ``ConfigError`` when the file cannot be written.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from . import register
from .base import Layer


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    exact_num_bottom = 2
    exact_num_top = 0

    def layer_setup(self, bottom, top):
        from ..hdf5 import require_h5py
        self._h5py = require_h5py()
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is empty")
        self._rows = {"data": [], "label": []}

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        self._rows["data"].append(np.array(backend.to_host(bottom[0].data), copy=True))
        self._rows["label"].append(np.array(backend.to_host(bottom[1].data), copy=True))
        from ..hdf5 import _open
        with _open(self.file_name, "w") as f:
            for name, parts in self._rows.items():
                f.create_dataset(name, data=np.concatenate(parts))
