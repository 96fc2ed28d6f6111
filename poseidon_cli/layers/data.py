"""``type: "Data"``: batches of Caffe ``Datum`` records from an LMDB, transformed and prefetched.

Tops: ``data`` (N, C, H', W') and optionally ``label`` (N,) as floats (BVLC's shape), where
N = ``data_param.batch_size`` per worker and (H', W') are the crop size or the record size.

Reads ``data_param``: ``source`` (LMDB directory), ``batch_size`` (required, > 0), ``backend``
(LMDB; see below for LEVELDB), ``rand_skip`` (skip a random 0..rand_skip-1 of this worker's records
once at setup, like Poseidon), ``prefetch`` (queue depth, default 4), ``shared_file_system``
(Poseidon's partitioning switch); and ``transform_param`` (see ``poseidon_cli.data.transform``).
``transform_param.force_color`` / ``force_gray`` pick the channel count of encoded records.

Which records a worker reads comes from ``self.context`` (``RunContext``), by Poseidon's rules
(``poseidon_cli.data.lmdb_source.partition_source``):
- one client (``num_clients == 1``, the single-process default): open ``source`` itself, never
  ``source_0``; worker t of T takes records t, t+T, ...;
- ``shared_file_system: false`` with several clients: client k opens ``<source>_<k>`` and its
  worker t takes records t, t+T, ... of that partition;
- ``shared_file_system: true``: every client opens ``source`` and global worker r of W takes
  records r, r+W, ....
Records come in key order and wrap at the end; training data is never shuffled (Caffe). A TEST-phase
layer keeps its cursor between test passes (Caffe does not reset it).

``backend: LEVELDB`` (proto2's default when ``backend`` is omitted): if the path holds an LMDB it is
read as one (with a warning); a real LevelDB raises a one-line ``DataError`` saying to convert it.

The reading, decoding and transforming run on a prefetch thread; ``forward`` only copies the ready
batch into the tops (onto the GPU when the layer runs on CuPy). ``close()`` stops the thread (also
done automatically when the layer is garbage-collected).
"""
from __future__ import annotations

import logging
import os
import weakref

from .. import backend
from .._proto import caffe_pb2
from ..data.lmdb_source import LMDBReader, is_lmdb_dir, leveldb_error, partition_source
from ..data.loader import DatumBatchLoader
from ..data.prefetch import Prefetcher
from ..data.transform import DataTransformer
from ..errors import DataError
from . import register
from .base import Layer

log = logging.getLogger("poseidon.data")


def color_choice(transform_param):
    """force_color -> True, force_gray -> False, neither -> None (keep the file's own)."""
    if transform_param.force_color:
        return True
    if transform_param.force_gray:
        return False
    return None


@register("Data")
class DataLayer(Layer):
    exact_num_bottom = 0
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        dp = self.param.data_param
        where = self.describe()
        if not dp.source:
            raise self.error("data_param.source is not set")
        if dp.batch_size <= 0:
            raise self.error("data_param.batch_size must be set and > 0")
        spec = partition_source(dp.source, self.context, bool(dp.shared_file_system))
        if dp.backend == caffe_pb2.DataParameter.LEVELDB:
            if not is_lmdb_dir(spec.path):
                if os.path.exists(spec.path):
                    raise DataError(f"{where}: {leveldb_error(spec.path).one_line()}")
                # missing: fall through so the reader reports the path and how to make it
            elif dp.HasField("backend"):
                log.warning("%s: backend LEVELDB but '%s' is an LMDB; reading it as LMDB",
                            where, spec.path)
        try:
            self.reader = LMDBReader(spec.path, spec.start, spec.stride, spec=spec,
                                     num_parts=self.context.num_clients, buffers=True)
        except DataError as exc:
            raise DataError(f"{where}: {exc.one_line()}") from None
        if dp.rand_skip:
            skip = int(self.rng.integers(0, dp.rand_skip))
            log.info("%s: skipping the first %d records", where, skip)
            self.reader.skip(skip)
        tp = self.param.transform_param
        self.transformer = DataTransformer(tp, self.phase, self.rng, where=where)
        try:
            self.loader = DatumBatchLoader(self.reader, dp.batch_size, self.transformer,
                                           color=color_choice(tp), source=spec.path)
            self.out_shape = (int(dp.batch_size),) + self.transformer.setup(self.loader.image_shape)
        except DataError as exc:
            self.reader.close()
            msg = exc.one_line()
            raise DataError(msg if msg.startswith(where) else f"{where}: {msg}") from None
        self.source_spec = spec
        self.prefetcher = Prefetcher(self.loader.next_batch, depth=max(1, int(dp.prefetch)),
                                     name=f"{where} reading {spec.path}")
        # Stop the thread and close the DB when the layer goes away.
        self._finalizer = weakref.finalize(self, _shutdown, self.prefetcher, self.reader)
        log.info("%s: %s (%d records, %s); this worker starts at record %d, stride %d; top %s",
                 where, spec.path, self.reader.count, spec.rule, spec.start, spec.stride,
                 self.out_shape)

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
        self.loader.recycle(data)  # copied into the top: the thread may refill it

    def close(self):
        """Stop the prefetch thread and close the LMDB."""
        self._finalizer()

    @property
    def data_wait_seconds(self) -> float:
        """Total time forward spent waiting for the prefetch thread."""
        return self.prefetcher.wait_seconds


def _shutdown(prefetcher, reader):
    prefetcher.close()
    if not prefetcher.alive:  # never close the env under a reader stuck in I/O
        reader.close()


__all__ = ["DataLayer", "color_choice"]
