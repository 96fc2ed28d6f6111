"""HDF5Data: tops read from HDF5 files listed in a text file (needs the ``[hdf5]`` extra).

Fields (``hdf5_data_param``): ``source`` (a text file, one .h5 path per line, resolved like
other data paths; the paths it lists are opened as written, from the working directory, like
Caffe), ``batch_size``, ``shuffle``
(shuffle the file order and the rows within a file at every pass). Each top is the dataset of the
same name in every file, shape (N, ...); top shape is (batch_size, ...). Rows are read in order
across files and wrap around after the last file, as Caffe's HDF5DataLayer does. Datasets of
every top must have the same N within a file.

Errors: ``DataError`` for a missing/empty source list, a missing file or dataset, rows that
disagree, or a dataset whose item shape changes between files.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import DataError
from . import register
from .base import Layer


@register("HDF5Data")
class HDF5DataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1

    def layer_setup(self, bottom, top):
        from ..hdf5 import require_h5py
        self._h5py = require_h5py()
        p = self.param.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size < 1:
            raise self.error("hdf5_data_param.batch_size must be > 0")
        if not os.path.isfile(p.source):
            raise DataError(f"{self.describe()}: hdf5_data_param.source {p.source} does not exist",
                            "give a text file listing one .h5 file per line")
        try:
            with open(p.source, encoding="utf-8") as f:
                self.files = [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError:
            raise DataError(f"{self.describe()}: hdf5_data_param.source {p.source} is not a text "
                            f"list of files", "list the .h5 files in a text file, one per line, "
                            "and give that file as source") from None
        if not self.files:
            raise DataError(f"{self.describe()}: {p.source} lists no HDF5 files",
                            "write one .h5 path per line")
        self.shuffle = bool(p.shuffle)
        self.names = list(self.param.top)
        self._order = list(range(len(self.files)))
        if self.shuffle:
            self.rng.shuffle(self._order)
        self._file_pos = 0
        self._load(self._order[0])

    def _load(self, index):
        path = self.files[index]
        if not os.path.isfile(path):
            raise DataError(f"{self.describe()}: HDF5 file {path} (listed in "
                            f"{self.param.hdf5_data_param.source}) does not exist",
                            "fix the list (relative paths are read from the working directory)")
        arrays = {}
        try:
            f = self._h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"{self.describe()}: {path} (listed in "
                            f"{self.param.hdf5_data_param.source}) is not a readable HDF5 file "
                            f"({exc})", "list only .h5 files written by h5py or Caffe") from None
        with f:
            for name in self.names:
                if name not in f:
                    raise DataError(f"{self.describe()}: {path} has no dataset '{name}' "
                                    f"(datasets: {', '.join(f.keys())})",
                                    "name the layer's tops after the file's datasets")
                try:
                    arrays[name] = np.asarray(f[name], dtype=self.dtype)
                except (TypeError, ValueError, OSError) as exc:
                    raise DataError(f"{self.describe()}: dataset '{name}' in {path} does not "
                                    f"hold numbers ({exc})",
                                    "store numeric arrays (float or int) in the file") from None
        rows = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if len(rows) != 1 or 0 in rows:
            raise DataError(f"{self.describe()}: datasets in {path} have different or zero row "
                            f"counts: " + ", ".join(f"{n} {a.shape}" for n, a in arrays.items()),
                            "give every dataset the same number of rows (the first axis)")
        if hasattr(self, "item_shapes"):
            for name, a in arrays.items():
                if a.shape[1:] != self.item_shapes[name]:
                    raise DataError(f"{self.describe()}: dataset '{name}' in {path} has items "
                                    f"{a.shape[1:]}, earlier files {self.item_shapes[name]}",
                                    "give every listed file the same item shapes")
        else:
            self.item_shapes = {n: a.shape[1:] for n, a in arrays.items()}
        self.arrays = arrays
        self.rows = rows.pop()
        self._row_order = np.arange(self.rows)
        if self.shuffle:
            self.rng.shuffle(self._row_order)
        self._row = 0

    def reshape(self, bottom, top):
        for blob, name in zip(top, self.names):
            blob.reshape((self.batch_size,) + tuple(self.item_shapes[name]))

    def _next_row(self):
        if self._row >= self.rows:
            self._file_pos += 1
            if self._file_pos >= len(self.files):
                self._file_pos = 0
                if self.shuffle:
                    self.rng.shuffle(self._order)
            if len(self.files) > 1 or self.shuffle:
                self._load(self._order[self._file_pos])
            else:
                self._row = 0
        r = self._row_order[self._row]
        self._row += 1
        return r

    def forward(self, bottom, top):
        # a batch may span files: take each row from the file loaded when it is read
        batch = {n: np.empty((self.batch_size,) + tuple(self.item_shapes[n]), self.dtype)
                 for n in self.names}
        for j in range(self.batch_size):
            r = self._next_row()
            for name in self.names:
                batch[name][j] = self.arrays[name][r]
        for blob, name in zip(top, self.names):
            blob.data[...] = self.xp.asarray(batch[name])
