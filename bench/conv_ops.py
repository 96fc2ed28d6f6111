"""Per-layer forward+backward time of poseidon's conv/pool ops vs PyTorch CPU (same thread count).

Layers are those of LeNet (batch 64) and CIFAR-10 quick (batch 100). First convolutions skip the
input gradient (as a net would: the data layer needs none). Times are the median over repetitions,
ours and torch's in alternating blocks (``pairing.py``), so drift on a shared machine hits both
alike; compare ratios. Both engines run ``--threads`` threads (torch.set_num_threads and our
``ops.threads`` pool). ``--clock cpu`` times the calling thread's CPU time instead of wall time:
with ``--threads 1`` that is insensitive to other load on the machine (not meaningful with more
threads).

For every convolution the table also times the GEMMs alone that our im2col method issues (same
shapes, operands built beforehand, no column copies): where that column exceeds torch's time, no
im2col + OpenBLAS implementation of the layer can match PyTorch's direct (oneDNN) convolution.

Runs on the processor's own OpenBLAS kernel (``blas_env.py``); ``--blas-env forced`` keeps the
machine's OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for comparison.

Usage: python bench/conv_ops.py [--reps 15] [--threads 2] [--clock wall|cpu] [--blas-env forced]
                                [--out bench/results/conv_ops.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from poseidon_cli.ops import conv as cv
from poseidon_cli.ops import pooling as pl
from poseidon_cli.ops import threads

from pairing import blocked_medians_of  # noqa: E402  (bench/ is on sys.path when run as a script)

# name: ("conv", N, C, H, O, k, pad, need_dx) or ("pool", N, C, H, mode, k, stride)
LAYERS = {
    "lenet/conv1": ("conv", 64, 1, 28, 20, 5, 0, False),
    "lenet/pool1": ("pool", 64, 20, 24, "MAX", 2, 2),
    "lenet/conv2": ("conv", 64, 20, 12, 50, 5, 0, True),
    "lenet/pool2": ("pool", 64, 50, 8, "MAX", 2, 2),
    "cifar_quick/conv1": ("conv", 100, 3, 32, 32, 5, 2, False),
    "cifar_quick/pool1": ("pool", 100, 32, 32, "MAX", 3, 2),
    "cifar_quick/conv2": ("conv", 100, 32, 16, 32, 5, 2, True),
    "cifar_quick/pool2": ("pool", 100, 32, 16, "AVE", 3, 2),
    "cifar_quick/conv3": ("conv", 100, 32, 8, 64, 5, 2, True),
    "cifar_quick/pool3": ("pool", 100, 64, 8, "AVE", 3, 2),
}


def _ours(spec, rng):
    if spec[0] == "conv":
        _, N, C, H, O, k, p, ndx = spec
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((O, C, k, k), dtype=np.float32)
        b = rng.standard_normal(O, dtype=np.float32)
        dy = rng.standard_normal((N, O, cv.conv_out_size(H, k, p), cv.conv_out_size(H, k, p)),
                                 dtype=np.float32)

        def run():
            cv.conv2d_forward(x, w, b, 1, p)
            cv.conv2d_backward(x, w, dy, 1, p, need_dx=ndx)
        return run
    _, N, C, H, mode, k, s = spec
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    P = pl.pool_out_size(H, k, 0, s)
    dy = rng.standard_normal((N, C, P, P), dtype=np.float32)

    def run():
        _, mask = pl.pool2d_forward(x, mode, k, s, 0)
        pl.pool2d_backward(dy, mask, x.shape, mode, k, s, 0)
    return run


def _torch(spec, rng, torch):
    F = torch.nn.functional
    if spec[0] == "conv":
        _, N, C, H, O, k, p, ndx = spec
        x = torch.randn(N, C, H, H, requires_grad=ndx)
        w = torch.randn(O, C, k, k, requires_grad=True)
        b = torch.randn(O, requires_grad=True)
        Ho = cv.conv_out_size(H, k, p)
        dy = torch.randn(N, O, Ho, Ho)

        def run():
            F.conv2d(x, w, b, padding=p).backward(dy)
        return run
    _, N, C, H, mode, k, s = spec
    x = torch.randn(N, C, H, H, requires_grad=True)
    P = pl.pool_out_size(H, k, 0, s)
    dy = torch.randn(N, C, P, P)
    pool = F.max_pool2d if mode == "MAX" else F.avg_pool2d

    def run():
        pool(x, k, s, 0, ceil_mode=True).backward(dy)  # no pad: torch's divisor == Caffe's
    return run


_CLOCK = time.perf_counter


def _gemms_only(spec, rng):
    """The GEMMs alone that our im2col method issues for a convolution: forward, weight gradient,
    and input gradient when the layer needs it (stride-1 "same" layers: the flipped-kernel forward;
    others: the column-gradient GEMM), one image per call as with 1 MB column chunks, on
    operands built beforehand and split over the same thread pool. No column copies, no layout
    changes: what any im2col + this BLAS implementation of the layer costs at the least."""
    _, N, C, H, O, k, p, ndx = spec
    Ho = cv.conv_out_size(H, k, p)
    P, K = Ho * Ho, C * k * k
    f32 = np.float32
    cols = rng.standard_normal((P, K), dtype=f32)
    w_t = rng.standard_normal((K, O), dtype=f32)
    w = np.ascontiguousarray(w_t.T)
    dy = rng.standard_normal((O, P), dtype=f32)
    dy_t = np.ascontiguousarray(dy.T)
    same = H * H <= 1.25 * P
    cols_dx = rng.standard_normal((H * H, O * k * k), dtype=f32)
    wf = rng.standard_normal((O * k * k, C), dtype=f32)

    def images(n0, n1):
        y, dw = np.empty((P, O), f32), np.empty((O, K), f32)
        dx = np.empty((H * H, C), f32) if same else np.empty((P, K), f32)
        for _ in range(n0, n1):
            np.matmul(cols, w_t, out=y)
            np.matmul(dy, cols, out=dw)
            if ndx and same:
                np.matmul(cols_dx, wf, out=dx)
            elif ndx:
                np.matmul(dy_t, w, out=dx)

    return lambda: threads.parallel_for(N, images, np, cost=N * P * K * 4)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--blas-env", choices=["native", "forced"], default="native",
                    help="native: drop OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (what a user's machine "
                         "runs); forced: keep the machine's settings, for comparison")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "conv_ops.json"))
    args = ap.parse_args(argv)
    global _CLOCK
    _CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    threads.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    rows = []
    for name, spec in LAYERS.items():
        fns = [_ours(spec, rng)]
        if torch is not None:
            fns.append(_torch(spec, rng, torch))
        if spec[0] == "conv":
            fns.append(_gemms_only(spec, rng))
        ms = [t * 1e3 for t in blocked_medians_of(fns, args.reps, clock=_CLOCK)]
        t_ours = ms[0]
        t_torch = ms[1] if torch is not None else None
        gemms = ms[-1] if spec[0] == "conv" else None
        rows.append({"layer": name, "ours_ms": t_ours, "torch_ms": t_torch,
                     "gemms_only_ms": gemms})
    print(f"{'layer':<20} {'ours ms':>9} {'torch ms':>9} {'ours/torch':>10} {'GEMMs ms':>9} "
          f"{'GEMMs/torch':>11}   (fwd+bwd, median of {args.reps}, {args.threads} threads, "
          f"{args.clock} clock; GEMMs = our method's GEMMs alone)")
    totals = {}
    for r in rows:
        ratio = r["ours_ms"] / r["torch_ms"] if r["torch_ms"] else float("nan")
        r["ratio"] = ratio
        net = r["layer"].split("/")[0]
        o, t = totals.get(net, (0.0, 0.0))
        totals[net] = (o + r["ours_ms"], t + (r["torch_ms"] or 0.0))
        gm = r["gemms_only_ms"]
        gm_ratio = gm / r["torch_ms"] if gm and r["torch_ms"] else float("nan")
        print(f"{r['layer']:<20} {r['ours_ms']:9.2f} {r['torch_ms'] or float('nan'):9.2f} "
              f"{ratio:10.2f} {gm if gm else float('nan'):9.2f} {gm_ratio:11.2f}")
    summary = {}
    for net, (o, t) in totals.items():
        summary[net] = {"ours_ms": o, "torch_ms": t, "ratio": o / t if t else None}
        print(f"{net + ' total':<20} {o:9.2f} {t:9.2f} {o / t if t else float('nan'):10.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"layers": rows, "totals": summary, "reps": args.reps, "threads": args.threads,
                   "clock": args.clock, "loadavg": os.getloadavg(),
                   "numpy": np.__version__, "torch": getattr(torch, "__version__", None),
                   "machine": platform.processor() or platform.machine()}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    import sys
    if not blas_env.keeps_forced(sys.argv):
        blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    main()
