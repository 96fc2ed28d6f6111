"""``type: "ImageData"``: batches read from image files named in a list, decoded with Pillow.

Tops: ``data`` (N, C, H', W') and optionally ``label`` (N,) as floats.

Reads ``image_data_param``: ``source`` (a text file of ``<path> <label>`` lines, see
``poseidon_cli.data.image_list``), ``root_folder`` (prefix for every path), ``batch_size`` (per
worker), ``new_height``/``new_width`` (resize, both or neither), ``is_color`` (true: 3 BGR planes;
false: one gray plane), ``shuffle`` (shuffle with the layer's seeded rng at setup and again each time
the list wraps, like BVLC), ``rand_skip`` (skip a random 0..rand_skip-1 of this worker's lines once),
``shared_file_system``; and ``transform_param``. Every image must decode to the first one's shape
(give new_height/new_width for lists of mixed sizes).

Partitioning follows the Data layer's rules (``partition_source``): one client reads ``source``;
with several clients and ``shared_file_system: false`` client k reads the list ``<source>_<k>``;
with ``true`` every client reads ``source``. Within the list, worker r of a stride W takes lines
r, r+W, ... (Poseidon gave every local thread the whole client list; dealing lines out instead makes
T workers of batch B see what one worker of batch T*B would).

Errors: ``DataError`` naming the list line or the image file; Pillow missing says so.
"""
from __future__ import annotations

import functools
import logging
import os
import weakref

import numpy as np

from .. import backend
from ..data.datum import _pil
from ..data.image_list import load_image, read_image_list
from ..data.lmdb_source import partition_source
from ..data.prefetch import Prefetcher
from ..data.transform import DataTransformer
from ..errors import DataError
from . import register
from .base import Layer

log = logging.getLogger("poseidon.data")


class _ImageListReader:
    """This worker's lines of the list, endlessly, reshuffled per epoch when asked."""

    def __init__(self, entries, root, color, height, width, shuffle, rng, where):
        self.entries = entries
        self.root = root
        self.color, self.height, self.width = color, height, width
        self.shuffle, self.rng, self.where = shuffle, rng, where
        self.pos = 0
        self.epoch = 0
        if shuffle:
            self._reshuffle()

    def _reshuffle(self):
        self.entries = [self.entries[i] for i in self.rng.permutation(len(self.entries))]

    def skip(self, k: int):
        for _ in range(k):
            self._advance()

    def _advance(self):
        self.pos += 1
        if self.pos == len(self.entries):
            self.pos = 0
            self.epoch += 1
            if self.shuffle:
                self._reshuffle()

    def peek(self):
        return self.entries[self.pos]

    def load(self, entry):
        path, _ = entry
        return load_image(os.path.join(self.root, path), self.color, self.height, self.width,
                          f"{self.where}: ")

    def next_batch(self, n, image_shape, transformer):
        """(data float32 (n, C, H', W'), labels float32 (n,)) of the next n lines."""
        entries = self.next_entries(n)
        images = np.empty((n,) + tuple(image_shape), dtype=np.uint8)
        labels = np.empty(n, dtype=np.float32)
        for i, entry in enumerate(entries):
            img = self.load(entry)
            if img.shape != tuple(image_shape):
                raise DataError(f"{self.where}: image '{entry[0]}' is "
                                f"{'x'.join(map(str, img.shape))}, the first was "
                                f"{'x'.join(map(str, image_shape))}",
                                "set new_height/new_width to resize every image")
            images[i] = img
            labels[i] = entry[1]
        return transformer.transform_batch(images), labels

    def next_entries(self, n):
        out = []
        for _ in range(n):
            out.append(self.entries[self.pos])
            self._advance()
        return out


@register("ImageData")
class ImageDataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        p = self.param.image_data_param
        where = self.describe()
        if not p.source:
            raise self.error("image_data_param.source is not set")
        if p.batch_size <= 0:
            raise self.error("image_data_param.batch_size must be > 0")
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.error("set both new_height and new_width, or neither")
        _pil()  # a clear error up front when Pillow is missing
        spec = partition_source(p.source, self.context, bool(p.shared_file_system))
        if not os.path.isfile(spec.path):
            hint = ("split the list into one file per client" if spec.partitioned
                    else "write a '<image path> <label>' list")
            raise DataError(f"{where}: image list '{spec.path}' does not exist ({spec.rule})", hint)
        try:
            entries = read_image_list(spec.path)
        except DataError as exc:
            raise DataError(f"{where}: {exc.one_line()}") from None
        mine = entries[spec.start % len(entries)::spec.stride] or [entries[spec.start % len(entries)]]
        self.reader = _ImageListReader(mine, p.root_folder, bool(p.is_color), int(p.new_height),
                                       int(p.new_width), bool(p.shuffle), self.rng, where)
        if p.rand_skip:
            self.reader.skip(int(self.rng.integers(0, p.rand_skip)))
        first = self.reader.load(self.reader.peek())
        self.image_shape = first.shape
        self.transformer = DataTransformer(self.param.transform_param, self.phase, self.rng, where)
        self.out_shape = (int(p.batch_size),) + self.transformer.setup(first.shape)
        # The thread gets the reader, never the layer, so the layer can be garbage-collected.
        produce = functools.partial(self.reader.next_batch, self.out_shape[0], first.shape,
                                    self.transformer)
        self.prefetcher = Prefetcher(produce, depth=4, name=f"{where} reading {spec.path}")
        self._finalizer = weakref.finalize(self, self.prefetcher.close)
        log.info("%s: %s (%d of %d lines for this worker, %s); top %s", where, spec.path,
                 len(mine), len(entries), spec.rule, self.out_shape)

    def reshape(self, bottom, top):
        top[0].reshape(self.out_shape)
        if len(top) > 1:
            top[1].reshape((self.out_shape[0],))

    def forward(self, bottom, top):
        data, labels = self.prefetcher.get()
        xp = backend.get_array_module(top[0].data)
        top[0].data[...] = backend.asarray(data, xp)
        if len(top) > 1:
            top[1].data[...] = backend.asarray(labels, xp)

    def close(self):
        self._finalizer()
