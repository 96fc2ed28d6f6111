"""``poseidon time``: per-layer forward/backward timing of a net, like ``caffe time``.

``time_net(model, iterations=50, phase="TRAIN", xp=None, out=None, json_path=None) -> int``
builds the net on array module ``xp`` (``commands/time.py`` picks it from ``--gpu``/``--cpu``), runs one warm-up
forward/backward, then ``iterations`` timed passes; it prints the average per-layer forward and
backward milliseconds, then Caffe's summary lines::

    Average Forward pass: X ms.
    Average Backward pass: Y ms.
    Average Forward-Backward: Z ms.
    Total Time: T ms.

Unlike Caffe, a net whose Data layer source is missing can still be timed: the Data layer is
replaced by an Input layer of the same batch shape filled with random values (one line says so).
The image shape comes from ``crop_size`` (3 channels, 1 with ``force_gray``), else from
``mean_file``, else from the source name (``mnist`` 1x28x28, ``cifar`` 3x32x32); otherwise a
``NetError`` says to create the database. Returns the exit code (0).

``substitute_data_layers(param, shapes=None, only_missing=False)`` is the reusable part (tests and
``bench/engine.py`` build the reference nets from it).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from . import backend, config
from ._proto import caffe_pb2
from .errors import NetError, PoseidonError

DATA_TYPES = ("Data", "ImageData")


def guess_data_shape(lp):
    """(N, C, H, W) a Data layer would produce, without opening its database."""
    if lp.type == "ImageData":
        n = lp.image_data_param.batch_size
    else:
        n = lp.data_param.batch_size
    tp = lp.transform_param
    if tp.crop_size:
        c = 1 if tp.force_gray else 3
        return (int(n), c, int(tp.crop_size), int(tp.crop_size))
    if tp.mean_file and os.path.exists(tp.mean_file):
        shape = config.blob_shape(config.load_blobproto(tp.mean_file))
        return (int(n),) + tuple(int(s) for s in shape[-3:])
    source = (lp.image_data_param.source if lp.type == "ImageData" else lp.data_param.source)
    low = source.lower()
    if "mnist" in low:
        return (int(n), 1, 28, 28)
    if "cifar" in low:
        return (int(n), 3, 32, 32)
    raise NetError(f"layer '{lp.name}': cannot tell the image shape of '{source}' without the "
                   f"database; create it first (see `poseidon data --help`)")


def _source(lp):
    return lp.image_data_param.source if lp.type == "ImageData" else lp.data_param.source


def substitute_data_layers(param, shapes=None, only_missing=False, batch=None, log=None):
    """A copy of NetParameter ``param`` whose Data/ImageData layers are Input layers.

    ``shapes``: {layer name: (N, C, H, W)} overrides the guessed shape; ``batch`` overrides N.
    ``only_missing``: replace only layers whose source does not exist. Tops keep their names
    (data, then label of shape (N,)); include/exclude rules are kept. ``log(line)`` is told about
    each replacement."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(param)
    for lp in out.layer:
        if lp.type not in DATA_TYPES:
            continue
        if only_missing and os.path.exists(_source(lp)):
            continue
        shape = tuple((shapes or {}).get(lp.name) or guess_data_shape(lp))
        if batch:
            shape = (int(batch),) + shape[1:]
        src = _source(lp)
        new = caffe_pb2.LayerParameter(name=lp.name, type="Input")
        new.top.extend(lp.top)
        new.include.extend(lp.include)
        new.exclude.extend(lp.exclude)
        for i in range(len(lp.top)):
            new.input_param.shape.add().dim.extend(shape if i == 0 else shape[:1])
        lp.CopyFrom(new)
        if log:
            log(f"layer '{lp.name}': data source '{src}' unavailable; using random input of "
                f"shape {shape}")
    return out


def fill_inputs(net, rng=None):
    """Random data in the net's Input blobs: U[0, 1) images, zero labels (1-D inputs)."""
    rng = rng or np.random.default_rng(0)
    for name in net.inputs:
        blob = net.blobs[name]
        if blob.ndim <= 1:
            blob.data[...] = 0
        else:
            blob.data[...] = net.xp.asarray(rng.random(blob.shape).astype(blob.dtype))


def time_layers(net, iterations):
    """(forward_ms[layer], backward_ms[layer], forward_total_ms, backward_total_ms, total_ms)
    averaged over ``iterations`` timed passes."""
    n = len(net.layers)
    fwd, bwd = np.zeros(n), np.zeros(n)
    ftot = btot = 0.0
    sync = backend.synchronize
    start_all = time.perf_counter()
    for _ in range(iterations):
        t0 = time.perf_counter()
        for i, layer in enumerate(net.layers):
            a = time.perf_counter()
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            sync()
            fwd[i] += time.perf_counter() - a
        t1 = time.perf_counter()
        for i in range(n - 1, -1, -1):
            if not net.layer_need_backward[i]:
                continue
            a = time.perf_counter()
            net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i],
                                   net.bottom_vecs[i])
            sync()
            bwd[i] += time.perf_counter() - a
        t2 = time.perf_counter()
        ftot += t1 - t0
        btot += t2 - t1
    total = time.perf_counter() - start_all
    k = 1000.0 / max(iterations, 1)
    return fwd * k, bwd * k, ftot * k, btot * k, total * 1000.0


def time_net(model, iterations=50, phase="TRAIN", xp=None, out=None, json_path=None):
    """Print ``caffe time``'s report for prototxt ``model`` on array module ``xp`` (the current
    backend's when None); return 0. ``json_path``: also write the per-layer profile there
    (``profile.write_profile``)."""
    from .net import Net   # the engine loads only when timing is asked for
    out = out or sys.stdout

    def say(line):
        print(line, file=out, flush=True)

    if iterations < 1:
        raise PoseidonError(f"--iterations {iterations}: give a positive number")
    ph = {"TRAIN": 0, "TEST": 1}[str(phase).upper()]
    from .net import filter_net
    param = config.load_net_param(model)
    # filter first, so only the data layers of this phase are reported and replaced
    param = filter_net(param, caffe_pb2.NetState(phase=ph))
    param = substitute_data_layers(param, only_missing=True, log=say)
    net = Net(param, ph, seed=1701, xp=xp)
    fill_inputs(net)
    say(f"Testing for {iterations} iterations.")
    net.clear_param_diffs()
    loss = net.forward_backward()   # warm-up, like Caffe's initial Forward
    say(f"Initial loss: {loss:.6g}")
    fwd, bwd, ftot, btot, total = time_layers(net, iterations)
    say("Average time per layer: ")
    width = max([10] + [len(n) for n in net.layer_names])
    for name, f, b in zip(net.layer_names, fwd, bwd):
        say(f"{name:>{width}}\tforward: {f:.5g} ms.")
        say(f"{name:>{width}}\tbackward: {b:.5g} ms.")
    say(f"Average Forward pass: {ftot:.5g} ms.")
    say(f"Average Backward pass: {btot:.5g} ms.")
    say(f"Average Forward-Backward: {total / iterations:.5g} ms.")
    say(f"Total Time: {total:.5g} ms.")
    say("*** Benchmark ends ***")
    if json_path:   # the per-layer profile the emulated cluster reads back
        from . import profile
        profile.write_profile(json_path, profile.net_profile(
            net, fwd, bwd, device=backend.device_description(), forward_total_ms=ftot,
            backward_total_ms=btot, total_ms=total / iterations, phase=phase,
            iterations=iterations, model=model))
        say(f"wrote profile {json_path}")
    return 0
