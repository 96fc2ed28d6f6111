"""``poseidon test``: score a trained model on its TEST-phase data, like ``caffe test``.

``run(model, weights, iterations=50, gpu=None, cpu=False, log=None) -> exit code`` logs
``Batch i, <output> = v`` per batch, then ``Loss: X`` and ``<output> = mean``; the per-output means
are also left in ``run.last`` for scripts.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from .. import backend, config
from ..context import TEST
from ..errors import ConfigError, SolverError
from ..net_checks import weights_named
from ..solver.log import TrainLog, fmt
from .common import close_nets, package_logging, select_device


def run(model=None, weights=None, iterations=50, gpu=None, cpu=False, log=None) -> int:
    """Score ``model`` (TEST phase) with ``weights`` over ``iterations`` batches; returns 0."""
    from ..net import Net  # noqa: PLC0415 - the engine loads only when testing

    if not model or not os.path.isfile(model):
        raise ConfigError(f"{model}: model prototxt does not exist")
    if not weights:
        raise ConfigError("--weights is required to test a model")
    if iterations is None or iterations < 1:
        raise ConfigError(f"--iterations must be >= 1 (got {iterations})")
    log = log or TrainLog([sys.stderr])
    with package_logging(log.streams):
        xp = select_device(gpu, cpu, None, log)
        net = Net(model, TEST, xp=xp)
        try:
            paths = [p for p in str(weights).split(",") if p]
            names = set(net.layer_names)
            for path in paths:
                if not os.path.isfile(path):
                    raise ConfigError(f"{path}: weights file does not exist")
                m = config.load_caffemodel(path)
                if not any(lp.name in names and len(lp.blobs) for lp in m.layer):
                    raise SolverError(f"{path}: no layer of this model matches a layer of net "
                                      f"'{net.name}' by name", "is it the model's .caffemodel?")
                with weights_named(path):
                    net.copy_from(m)
            log.info(f"Running for {iterations} iterations.")
            scores, loss, meta = None, 0.0, []
            for i in range(iterations):
                loss += float(net.forward_prefilled())
                values, meta = [], []
                for out, w in zip(net.output_blob_names, net.output_loss_weights):
                    vals = np.asarray(backend.to_host(net.blobs[out].data), np.float64).ravel()
                    for v in vals:
                        log.info(f"Batch {i}, {out} = {fmt(v)}")
                        values.append(v)
                        meta.append((out, w))
                values = np.array(values)
                scores = values if scores is None else scores + values
            log.info(f"Loss: {fmt(loss / iterations)}")
            result = {}
            for (out, w), total in zip(meta, scores if scores is not None else []):
                mean = total / iterations
                suffix = f" (* {fmt(w)} = {fmt(w * mean)} loss)" if w else ""
                log.info(f"{out} = {fmt(mean)}{suffix}")
                result.setdefault(out, mean)
            run.last = {"loss": loss / iterations, **result}
        finally:
            close_nets([net])
    return 0

