"""Whole-net forward+backward throughput: poseidon's engine vs the same net in PyTorch.

Nets come from the conformance prototxts (Data layers replaced by Input layers of the batch
shape): LeNet (batch 64) and CIFAR-10 quick (batch 100) on the CPU; with a GPU (CuPy + torch CUDA)
also AlexNet (batch 128). The PyTorch twin is built layer by layer from the same NetParameter
(Conv2d/MaxPool/AvgPool with ceil_mode, Linear, ReLU, LRN, Dropout, cross-entropy) and given our
initial weights. Both run the same thread count (``torch.set_num_threads`` and our
``ops.threads`` pool; ``--threads 1,2`` runs each count in turn). Times are the median over
repetitions taken in alternating blocks (``pairing.py``: drift on a shared machine hits both
alike, and neither engine is timed while the other's OpenMP threads still spin; compare ratios
from one run).
Also prints our per-layer forward/backward medians, so the report says where the time goes.

Usage: python bench/engine.py [--reps 9] [--rounds 1] [--threads 2]
                              [--out bench/results/engine.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np

from poseidon_cli import backend, config
from poseidon_cli.context import TRAIN
from poseidon_cli.net import Net
from poseidon_cli.ops import threads
from poseidon_cli.timing import fill_inputs, substitute_data_layers

from pairing import blocked_medians  # noqa: E402  (bench/ is on sys.path when run as a script)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONF = (ROOT / ".." / "shared" / "conformance").resolve()

NETS = [
    ("lenet", "bvlc/examples/mnist/lenet_train_test.prototxt", (64, 1, 28, 28), False),
    ("cifar10_quick", "bvlc/examples/cifar10/cifar10_quick_train_test.prototxt",
     (100, 3, 32, 32), False),
    ("alexnet", "bvlc/models/bvlc_alexnet/train_val.prototxt", (128, 3, 227, 227), True),
]


def build_ours(rel, shape, xp):
    param = config.load_net_param(CONF / rel)
    names = [l.name for l in param.layer if l.type == "Data"]
    param = substitute_data_layers(param, shapes={n: shape for n in names})
    net = Net(param, TRAIN, seed=1701, xp=xp)
    fill_inputs(net)
    return net


def build_torch(net, torch, device):
    """A torch callable computing the same loss from the same weights (sequential nets only)."""
    F = torch.nn.functional
    ops = []
    params = []
    for layer in net.layers:
        t = layer.type
        if t in ("Input", "Split", "Accuracy"):
            continue
        if t == "Convolution":
            w = torch.tensor(backend.to_host(layer.blobs[0].data), device=device,
                             requires_grad=True)
            b = torch.tensor(backend.to_host(layer.blobs[1].data), device=device,
                             requires_grad=True) if len(layer.blobs) > 1 else None
            params += [w] + ([b] if b is not None else [])
            ops.append(lambda x, w=w, b=b, L=layer: F.conv2d(x, w, b, L.stride, L.pad,
                                                             L.dilation, L.group))
        elif t == "Pooling":
            if layer.mode == "MAX":
                ops.append(lambda x, L=layer: F.max_pool2d(x, L.kernel, L.stride, L.pad,
                                                           ceil_mode=True))
            else:
                ops.append(lambda x, L=layer: F.avg_pool2d(x, L.kernel, L.stride, L.pad,
                                                           ceil_mode=True))
        elif t == "InnerProduct":
            w = torch.tensor(backend.to_host(layer.blobs[0].data), device=device,
                             requires_grad=True)
            b = torch.tensor(backend.to_host(layer.blobs[1].data), device=device,
                             requires_grad=True)
            params += [w, b]
            ops.append(lambda x, w=w, b=b: F.linear(x.flatten(1), w, b))
        elif t == "ReLU":
            ops.append(F.relu)
        elif t == "LRN":
            ops.append(lambda x, L=layer: F.local_response_norm(x, L.size, L.alpha, L.beta, L.k))
        elif t == "Dropout":
            ops.append(lambda x: F.dropout(x, 0.5, True))
        elif t == "SoftmaxWithLoss":
            ops.append(None)
        else:
            raise SystemExit(f"bench: no torch twin for layer type {t}")
    x = torch.tensor(backend.to_host(net.blobs["data"].data), device=device)
    label = torch.zeros(x.shape[0], dtype=torch.long, device=device)

    def step():
        for p in params:
            p.grad = None
        h = x
        for op in ops:
            if op is None:
                h = F.cross_entropy(h, label)
            else:
                h = op(h)
        h.backward()
        if device != "cpu":
            torch.cuda.synchronize()
    return step


def ours_step(net):
    def step():
        net.clear_param_diffs()
        net.forward_backward()
        backend.synchronize()
    return step


def layer_profile(net, reps):
    """Per-layer (forward_ms, backward_ms) medians over ``reps`` forward+backward passes."""
    n = len(net.layers)
    fwd, bwd = [[] for _ in range(n)], [[] for _ in range(n)]
    sync = backend.synchronize
    for _ in range(reps):
        net.clear_param_diffs()
        for i, layer in enumerate(net.layers):
            t = time.perf_counter()
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            sync()
            fwd[i].append(time.perf_counter() - t)
        for i in range(n - 1, -1, -1):
            t = time.perf_counter()
            if net.layer_need_backward[i]:
                net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i],
                                       net.bottom_vecs[i])
                sync()
            bwd[i].append(time.perf_counter() - t)
    return [(float(np.median(f)) * 1e3, float(np.median(b)) * 1e3) for f, b in zip(fwd, bwd)]


def _torch_full_fp32(torch):
    """Make PyTorch's CUDA convolutions and matmuls full FP32, as our cuBLAS GEMMs are (CuPy uses
    TF32 only when CUPY_TF32 is set): cuDNN may otherwise pick TF32 tensor-core kernels, which
    would compare a lower-precision torch with our FP32."""
    for obj, attr in ((torch.backends.cudnn, "allow_tf32"),
                      (torch.backends.cuda.matmul, "allow_tf32")):
        try:
            setattr(obj, attr, False)
        except Exception:  # noqa: BLE001 - newer releases: the fp32_precision settings below
            pass
    for obj in (getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul):
        if obj is not None and hasattr(obj, "fp32_precision"):
            try:
                obj.fp32_precision = "ieee"
            except Exception:  # noqa: BLE001
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every measurement this many times, rounds outermost; the "
                         "ratio is the median over rounds and the range is printed")
    ap.add_argument("--threads", default=str(os.cpu_count()),
                    help="thread count(s) for both engines, comma-separated (e.g. 1,2)")
    ap.add_argument("--nets", default="lenet,cifar10_quick,alexnet")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"))
    args = ap.parse_args()
    import torch
    gpu = backend.gpu_available() and torch.cuda.is_available()
    if gpu:
        _torch_full_fp32(torch)
    wanted = args.nets.split(",")
    configs = []   # (name, dev, nthreads, shape, net, torch step)
    for nthreads in [int(t) for t in args.threads.split(",")]:
        for name, rel, shape, gpu_only in NETS:
            if name not in wanted:
                continue
            for dev in (["gpu"] if gpu_only else ["cpu"] + (["gpu"] if gpu else [])):
                if dev == "gpu" and not gpu:
                    continue
                xp = backend.use_gpu(0) if dev == "gpu" else backend.use_cpu()
                net = build_ours(rel, shape, xp)
                tstep = build_torch(net, torch, "cuda" if dev == "gpu" else "cpu")
                configs.append((name, dev, nthreads, shape, net, tstep))
                backend.use_cpu()
    # Rounds outermost: a noisy minute on the shared machine then hits one round of every
    # configuration, not every round of one.
    times = [[] for _ in configs]
    for _ in range(args.rounds):
        for c, (name, dev, nthreads, shape, net, tstep) in enumerate(configs):
            torch.set_num_threads(nthreads)
            threads.set_num_threads(nthreads)
            times[c].append(blocked_medians(ours_step(net), tstep, args.reps))
    rows = []
    for (name, dev, nthreads, shape, net, tstep), pairs in zip(configs, times):
        torch.set_num_threads(nthreads)
        threads.set_num_threads(nthreads)
        prof = layer_profile(net, args.reps)
        n = shape[0]
        ratios = [theirs / ours for ours, theirs in pairs]
        ours = float(np.median([o for o, _ in pairs]))
        theirs = float(np.median([t for _, t in pairs]))
        rows.append({
            "net": name, "device": dev, "batch": n, "threads": nthreads,
            "ours_img_s": n / ours, "torch_img_s": n / theirs,
            "ratio_ours_over_torch": float(np.median(ratios)),
            "round_ratios": [round(r, 4) for r in ratios],
            "ours_ms": ours * 1e3, "torch_ms": theirs * 1e3,
            "profile_ms": {ln: {"forward": round(f, 3), "backward": round(b, 3)}
                           for ln, (f, b) in zip(net.layer_names, prof)},
        })
    print(f"{'net':14} {'dev':4} {'thr':>3} {'batch':>5} {'ours img/s':>11} {'torch img/s':>12} "
          f"{'ratio':>6} {'range over rounds':>18}   (fwd+bwd, medians of {args.reps} steps, "
          f"{args.rounds} round(s); ratio = ours/torch throughput, median over rounds)")
    for r in rows:
        lo, hi = min(r["round_ratios"]), max(r["round_ratios"])
        print(f"{r['net']:14} {r['device']:4} {r['threads']:3d} {r['batch']:5d} "
              f"{r['ours_img_s']:11.1f} {r['torch_img_s']:12.1f} "
              f"{r['ratio_ours_over_torch']:6.2f} {lo:9.2f} - {hi:.2f}")
    for r in rows:
        print(f"  {r['net']}/{r['device']}/{r['threads']} threads, our layers (ms fwd / bwd): " +
              ", ".join(f"{k} {v['forward']:.1f}/{v['backward']:.1f}"
                        for k, v in r["profile_ms"].items()
                        if v["forward"] + v["backward"] >= 0.05))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {"host": platform.node(), "python": platform.python_version(),
           "numpy": np.__version__, "torch": torch.__version__, "threads": args.threads,
           "cpu_count": os.cpu_count(), "loadavg": load,
           "reps": args.reps, "rounds": args.rounds, "results": rows}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} (load average {load})")


if __name__ == "__main__":
    main()
