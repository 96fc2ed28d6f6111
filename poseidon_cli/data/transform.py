"""Caffe's DataTransformer: crop, mirror, mean subtraction and scaling of a batch of images.

Reads ``TransformationParameter`` (caffe.proto): ``scale`` (1), ``mirror`` (false), ``crop_size``
(0 = no crop), ``mean_file`` (a BlobProto path, 1 x C x H x W, 0-255 scale), ``mean_value`` (one
value for every channel or one per channel). Per output pixel, exactly as BVLC Caffe:

    out[n, c, h, w] = (x[n, c, h + h_off, w' + w_off] - mean[c, h + h_off, w' + w_off]) * scale

with ``w' = crop - 1 - w`` when the sample is mirrored, else ``w``. So the mean is subtracted
*before* scaling, and a mean file is cropped at the same offset as the image. Offsets:
TRAIN draws ``h_off`` uniformly from ``[0, H - crop]`` inclusive (BVLC's range; Poseidon's C++
never picked the last offset), TEST uses the centre ``((H - crop) // 2, (W - crop) // 2)``.
A sample is mirrored with probability 1/2 whenever ``mirror`` is true (in either phase, like BVLC).
Random draws come from the numpy ``Generator`` passed in (the layer's seeded rng).

Errors (``DataError``): mean_file and mean_value together; mean_value count not 1 or C; a mean file
that cannot be read or whose (C, H, W) differs from the data's; crop larger than the image.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError

TRAIN, TEST = 0, 1


def load_mean_file(path: str) -> np.ndarray:
    """A mean.binaryproto as a float32 (C, H, W) array (DataError if unreadable)."""
    from .. import config  # noqa: PLC0415
    try:
        blob = config.load_blobproto(path)
    except ConfigError as exc:
        raise DataError(f"mean_file {exc.one_line()}") from None
    shape = config.blob_shape(blob)
    values = np.asarray(blob.data if blob.data else blob.double_data, dtype=np.float32)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or int(np.prod(shape)) != values.size:
        raise DataError(f"mean_file '{path}': expected a 1 x C x H x W BlobProto, got shape "
                        f"{shape} with {values.size} values")
    return values.reshape(shape)


class DataTransformer:
    """Applies one layer's ``transform_param`` to batches of (N, C, H, W) images.

    ``setup(in_shape)`` validates against the images' (C, H, W) and returns the output (C, H', W');
    ``transform_batch(batch)`` returns a new float32 (N, C, H', W') array. ``where`` prefixes error
    messages (e.g. "layer 'mnist' (type Data)").
    """

    def __init__(self, param, phase: int = TRAIN, rng=None, where: str = "transform_param"):
        self.scale = float(param.scale) if param.HasField("scale") else 1.0
        self.mirror = bool(param.mirror)
        self.crop = int(param.crop_size)
        self.phase = phase
        self.rng = rng if rng is not None else np.random.default_rng()
        self.where = where
        self.mean_file = param.mean_file or None
        self.mean_values = [float(v) for v in param.mean_value]
        if self.mean_file and self.mean_values:
            raise DataError(f"{where}: transform_param sets both mean_file and mean_value; "
                            "use one of them")
        self.mean = None          # float32 (C, H, W) or (C, 1, 1), set by setup
        self.in_shape = None

    def setup(self, in_shape) -> tuple:
        c, h, w = (int(s) for s in in_shape)
        self.in_shape = (c, h, w)
        if self.mean_file:
            mean = load_mean_file(self.mean_file)
            if mean.shape != (c, h, w):
                raise DataError(f"{self.where}: mean_file '{self.mean_file}' has shape "
                                f"{'x'.join(map(str, mean.shape))} but the data is {c}x{h}x{w}",
                                "recompute it with `poseidon data compute-mean` on this DB")
            self.mean = mean
        elif self.mean_values:
            if len(self.mean_values) not in (1, c):
                raise DataError(f"{self.where}: {len(self.mean_values)} mean_value entries for "
                                f"{c}-channel data; give 1 or {c}")
            vals = self.mean_values * c if len(self.mean_values) == 1 else self.mean_values
            self.mean = np.asarray(vals, dtype=np.float32).reshape(c, 1, 1)
        if self.crop:
            if self.crop > h or self.crop > w:
                raise DataError(f"{self.where}: crop_size {self.crop} is larger than the "
                                f"{h}x{w} images", f"use crop_size <= {min(h, w)}")
            return (c, self.crop, self.crop)
        return (c, h, w)

    # -- random choices (separated so tests can reproduce them) ------------------------------------
    def draw(self, n: int):
        """Per-sample (mirror flags, h offsets, w offsets) for a batch of ``n``."""
        _, h, w = self.in_shape
        mirror = (self.rng.integers(0, 2, size=n).astype(bool) if self.mirror
                  else np.zeros(n, dtype=bool))
        if self.crop:
            if self.phase == TRAIN:
                h_off = self.rng.integers(0, h - self.crop + 1, size=n)
                w_off = self.rng.integers(0, w - self.crop + 1, size=n)
            else:
                h_off = np.full(n, (h - self.crop) // 2)
                w_off = np.full(n, (w - self.crop) // 2)
        else:
            h_off = w_off = np.zeros(n, dtype=np.int64)
        return mirror, h_off, w_off

    def transform_batch(self, batch, out=None, choices=None) -> np.ndarray:
        """(N, C, H, W) uint8/float -> float32 (N, C, H', W'); ``choices`` overrides ``draw``."""
        batch = np.asarray(batch)
        n = batch.shape[0]
        if batch.shape[1:] != self.in_shape:
            raise DataError(f"{self.where}: image shape {batch.shape[1:]} differs from the first "
                            f"record's {self.in_shape}")
        mirror, h_off, w_off = choices if choices is not None else self.draw(n)
        c, h, w = self.in_shape
        oh, ow = (self.crop, self.crop) if self.crop else (h, w)
        if out is None:
            out = np.empty((n, c, oh, ow), dtype=np.float32)
        mean = self.mean
        scale = np.float32(self.scale) if self.scale != 1.0 else None
        uniform = not self.crop or (np.all(h_off == h_off[0]) and np.all(w_off == w_off[0]))
        if uniform and not mirror.any():
            # One vectorised pass: same window for every sample (no crop, or TEST centre crop).
            y0, x0 = (int(h_off[0]), int(w_off[0])) if n else (0, 0)
            src = batch[:, :, y0:y0 + oh, x0:x0 + ow]
            if mean is not None:
                m = mean if mean.shape[1] == 1 else mean[:, y0:y0 + oh, x0:x0 + ow]
                np.subtract(src, m, out=out, dtype=np.float32, casting="unsafe")
            else:
                out[...] = src
            if scale is not None:
                out *= scale
            return out
        # Per sample, while its window is hot in cache: the mirror is folded into the source
        # view (reversed columns of image and mean alike: the mean is subtracted at the input
        # position, as in Caffe), then scaled in place.
        for i in range(n):
            y0, x0 = int(h_off[i]), int(w_off[i])
            cols = slice(x0 + ow - 1, x0 - 1 if x0 else None, -1) if mirror[i] else slice(x0, x0 + ow)
            src = batch[i, :, y0:y0 + oh, cols]
            dst = out[i]
            if mean is not None:
                m = mean if mean.shape[1] == 1 else mean[:, y0:y0 + oh, cols]
                np.subtract(src, m, out=dst, dtype=np.float32, casting="unsafe")
            else:
                dst[...] = src
            if scale is not None:
                dst *= scale
        return out

    def transform(self, image, choices=None) -> np.ndarray:
        """One (C, H, W) image -> float32 (C, H', W')."""
        if choices is not None:
            choices = tuple(np.asarray([v]) for v in choices)
        return self.transform_batch(np.asarray(image)[None], choices=choices)[0]
