"""Benchmark: images/second through the Data layer's pipeline, and how much prefetch hides it.

Part 1 (throughput): for 1x28x28 (MNIST-like, scale 1/256), 3x32x32 (CIFAR-like, mean file) and
3x256x256 (ImageNet-like, mean file, random crop 227 + mirror) it writes an LMDB of random uint8
Datum records in a temp directory (as the converters do) and measures
  - "one core": LMDB read + Datum parse + batch assembly + transform, called synchronously on the
    calling thread (what one prefetch thread can deliver);
  - "layer": ``DataLayer.forward`` as a training loop sees it (prefetch thread working, queue
    depth 4, consumer doing nothing else).
Part 2 (prefetch): CIFAR-10 quick (BVLC's cifar10_quick_train_test.prototxt with our LMDB and mean
file substituted) runs forward+backward on ``poseidon_cli.net.Net`` when it builds; then a sleep of
``--compute-ms`` (10 ms, a GPU-class iteration, much shorter than the CPU one) stands in for compute.
Both report the time ``forward`` spent waiting for data as a share of the iteration (target < 5%).

    python bench/data.py                  # full run (~1 min)
    python bench/data.py --quick          # fewer records/iterations

Prints a table and writes JSON to --json (default bench/results/data.json).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseidon_cli._proto import caffe_pb2  # noqa: E402
from poseidon_cli.blob import Blob  # noqa: E402
from poseidon_cli.data.datum import array_to_datum  # noqa: E402
from poseidon_cli.data.lmdb_source import AtomicLMDBWriter, LMDBReader  # noqa: E402
from poseidon_cli.data.loader import DatumBatchLoader  # noqa: E402
from poseidon_cli.data.transform import DataTransformer  # noqa: E402
from poseidon_cli.testing import make_layer  # noqa: E402
from poseidon_cli.tools.compute_mean import write_mean  # noqa: E402

CONFORMANCE = ROOT / ".." / "shared" / "conformance"


def make_db(path, shape, n, seed=0):
    rng = np.random.default_rng(seed)
    # A pool of distinct images reused cyclically keeps DB creation fast for the big shapes.
    pool = rng.integers(0, 256, size=(min(n, 64),) + shape, dtype=np.uint8)
    with AtomicLMDBWriter(path) as db:
        for i in range(n):
            db.put(f"{i:08d}", array_to_datum(pool[i % len(pool)], i % 10).SerializeToString())
    return str(path)


def transform_text(cfg, mean_path):
    parts = []
    if cfg.get("scale"):
        parts.append(f"scale: {cfg['scale']}")
    if cfg.get("mean"):
        parts.append(f'mean_file: "{mean_path}"')
    if cfg.get("crop"):
        parts.append(f"crop_size: {cfg['crop']} mirror: true")
    return " ".join(parts)


def bench_throughput(tmp, cfg, seconds):
    name, shape, n, batch = cfg["name"], cfg["shape"], cfg["records"], cfg["batch"]
    db = make_db(os.path.join(tmp, name), shape, n)
    mean = os.path.join(tmp, name + ".mean")
    if cfg.get("mean"):
        write_mean(db, mean)
    tp = caffe_pb2.TransformationParameter()
    from google.protobuf import text_format
    text_format.Parse(transform_text(cfg, mean), tp)

    # one core: the prefetch thread's work, run synchronously
    reader = LMDBReader(db)
    tr = DataTransformer(tp, 0, np.random.default_rng(0))
    loader = DatumBatchLoader(reader, batch, tr)
    tr.setup(loader.image_shape)
    loader.next_batch()
    imgs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loader.next_batch()
        imgs += batch
    sync = imgs / (time.perf_counter() - t0)
    reader.close()

    # the layer as the training loop sees it
    layer = make_layer(f'name: "{name}" type: "Data" data_param {{ source: "{db}" '
                       f'batch_size: {batch} backend: LMDB }} transform_param {{ '
                       f'{transform_text(cfg, mean)} }}', dtype=np.float32)
    top = [Blob(()), Blob(())]
    layer.setup([], top)
    layer.forward([], top)
    # Drain what the thread prepared during setup so the rate is the steady state, not the queue.
    while layer.prefetcher.ready:
        layer.forward([], top)
    imgs, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        layer.forward([], top)
        imgs += batch
    layered = imgs / (time.perf_counter() - t0)
    layer.close()
    return {"name": name, "shape": list(shape), "batch": batch, "transform": transform_text(cfg, "M"),
            "one_core_images_per_s": sync, "layer_images_per_s": layered,
            "ms_per_batch_one_core": 1000 * batch / sync}


def _cifar_quick_net(db, mean):
    """BVLC's CIFAR-10 quick train net with our DB, or None if it or Net is unavailable."""
    proto = CONFORMANCE / "bvlc" / "examples" / "cifar10" / "cifar10_quick_train_test.prototxt"
    if not proto.is_file():
        return None, "conformance prototxt missing"
    try:
        from poseidon_cli import config
        from poseidon_cli.net import Net
        param = config.load_net_param(str(proto), resolve=False)
        for layer in param.layer:
            if layer.type == "Data":
                layer.data_param.source = db
                layer.transform_param.mean_file = mean
        return Net(param, 0, seed=1), None
    except Exception as exc:  # the engine may not be complete yet: fall back to a sleep
        return None, f"{exc.__class__.__name__}: {exc}"


def bench_prefetch(tmp, iters, compute_ms):
    """Data wait share of the iteration: real CIFAR-10 quick net if it builds, and a sleep."""
    db = make_db(os.path.join(tmp, "cifar_train"), (3, 32, 32), 5000, seed=1)
    mean = os.path.join(tmp, "cifar_mean")
    write_mean(db, mean)
    results = []
    net, why = _cifar_quick_net(db, mean)
    if net is not None:
        layer = next(layer for layer in net.layers if layer.type == "Data")
        net.forward_backward()  # warm-up
        wait0, t0 = layer.data_wait_seconds, time.perf_counter()
        for _ in range(iters):
            net.clear_param_diffs()
            net.forward_backward()
        total = time.perf_counter() - t0
        wait = layer.data_wait_seconds - wait0
        layer.close()
        results.append(("Net forward_backward (CIFAR-10 quick, CPU)", iters, total, wait))
    else:
        print(f"(poseidon_cli.net unavailable for CIFAR-10 quick: {why}; sleep only)")
    layer = make_layer(f'name: "cifar" type: "Data" data_param {{ source: "{db}" batch_size: 100 '
                       f'backend: LMDB }} transform_param {{ mean_file: "{mean}" }}',
                       dtype=np.float32)
    top = [Blob(()), Blob(())]
    layer.setup([], top)
    layer.forward([], top)
    n = max(20, iters * 5)
    wait0, t0 = layer.data_wait_seconds, time.perf_counter()
    for _ in range(n):
        layer.forward([], top)
        time.sleep(compute_ms / 1000)   # stands in for a fast (GPU-class) forward/backward
    total = time.perf_counter() - t0
    results.append((f"sleep {compute_ms:g} ms per iteration (batch 100)", n, total,
                    layer.data_wait_seconds - wait0))
    layer.close()
    return [{"mode": mode, "iterations": k, "iteration_ms": 1000 * total / k,
             "data_wait_ms": 1000 * wait / k, "data_wait_fraction": wait / total}
            for mode, k, total, wait in results]


CONFIGS = [
    {"name": "mnist_28x28x1", "shape": (1, 28, 28), "records": 20000, "batch": 64,
     "scale": 0.00390625},
    {"name": "cifar_3x32x32", "shape": (3, 32, 32), "records": 10000, "batch": 100, "mean": True},
    {"name": "imagenet_3x256x256_crop227", "shape": (3, 256, 256), "records": 512, "batch": 32,
     "mean": True, "crop": 227},
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer records and iterations")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per throughput measurement")
    ap.add_argument("--iters", type=int, default=10, help="CIFAR-10 quick iterations")
    ap.add_argument("--compute-ms", type=float, default=10.0,
                    help="simulated compute per iteration (sleep) for the second prefetch check")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "data.json"))
    args = ap.parse_args(argv)
    seconds, iters = (1.0, 3) if args.quick else (args.seconds, args.iters)

    rows = []
    with tempfile.TemporaryDirectory(prefix="poseidon-bench-data-") as tmp:
        for cfg in CONFIGS:
            rows.append(bench_throughput(tmp, cfg, seconds))
        pre = bench_prefetch(tmp, iters, args.compute_ms)

    print(f"{'pipeline':30s} {'batch':>5s} {'one core img/s':>15s} {'layer img/s':>12s} "
          f"{'ms/batch':>9s}")
    for r in rows:
        print(f"{r['name']:30s} {r['batch']:5d} {r['one_core_images_per_s']:15,.0f} "
              f"{r['layer_images_per_s']:12,.0f} {r['ms_per_batch_one_core']:9.2f}")
    target = rows[0]["one_core_images_per_s"] >= 20000
    print(f"target >= 20,000 img/s for 28x28 on one core: {'MET' if target else 'MISSED'}")
    for p in pre:
        print(f"prefetch, {p['mode']}: iteration {p['iteration_ms']:.1f} ms, data wait "
              f"{p['data_wait_ms']:.3f} ms = {100 * p['data_wait_fraction']:.2f}% "
              f"({'MET' if p['data_wait_fraction'] < 0.05 else 'MISSED'} < 5%)")

    result = {"benchmark": "data", "host": platform.node(), "cpu_count": os.cpu_count(),
              "python": platform.python_version(), "numpy": np.__version__,
              "throughput": rows, "prefetch": pre,
              "targets": {"mnist_one_core_ge_20000": target,
                          "prefetch_wait_lt_5pct": all(p["data_wait_fraction"] < 0.05 for p in pre)}}
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
