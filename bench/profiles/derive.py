"""Derive per-layer GPU profiles (``poseidon train --emulate-compute``) from published totals.

    python bench/profiles/derive.py            # rewrites bench/profiles/*.json

No per-layer timings of Caffe on a K20 were published for these nets; what was published is the
time a whole training run or iteration took (see README.md here). So each profile is a published
iteration time split over the layers by a cost model of the real net:

* Convolution / InnerProduct: forward 2·(top count)·(fan-in) FLOPs; backward twice that (weight
  gradient + bottom gradient), once when the bottom needs no gradient (conv1 over the data).
* every other layer: memory bound, (bottom + top elements)·4 bytes per pass, LRN 3 passes (Caffe's
  scale, power and product), at the device's memory bandwidth times ``MEM_EFFICIENCY``.

The FLOP rate (the fraction of peak Caffe reached) is the one that makes the sum equal the published
iteration time. The current-GPU profiles assume that same fraction of a current GPU's FP32 peak and
bandwidth: a stated assumption, not a measurement; a profile measured with ``poseidon time`` on a
real GPU (issue 17) should replace them.
"""
from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CONFORMANCE = ROOT / ".." / "shared" / "conformance"
HERE = pathlib.Path(__file__).resolve().parent

MEM_EFFICIENCY = 0.5
DAY = 86400.0

# Devices: FP32 peak (TFLOP/s) and memory bandwidth (GB/s) from the vendors' data sheets.
DEVICES = {
    "k20": {"name": "NVIDIA Tesla K20 (derived)", "tflops": 3.52, "gbs": 208.0},
    "a100": {"name": "NVIDIA A100 40GB FP32 no tensor cores (derived, scaled from K20)",
             "tflops": 19.5, "gbs": 1555.0},
}

# Published single-machine Caffe figures (one K20, cuDNN R2) and what they imply per iteration.
NETS = {
    "alexnet": {
        "model": "bvlc/models/bvlc_alexnet/train_val.prototxt", "batch": 256,
        # Poseidon's docs: single-machine Caffe trains AlexNet in 5-7 days; BVLC's solver runs
        # 450,000 iterations of batch 256. Midpoint 6 days.
        "iteration_s": 6 * DAY / 450000,
        "source": "Poseidon docs (performance.md): AlexNet on one K20 with original Caffe takes "
                  "5-7 days; BVLC solver.prototxt max_iter 450000 at batch 256; midpoint 6 days "
                  "-> 1.152 s/iteration (222 images/s). Cross-check: Caffe's performance page "
                  "quotes 19.2 s / 20 iterations of 256 on a K40 with cuDNN (0.96 s), and a K20 "
                  "has 82% of a K40's FP32 peak -> 1.17 s.",
    },
    "googlenet": {
        "model": "bvlc/models/bvlc_googlenet/train_val.prototxt", "batch": 32,
        # Poseidon's docs: 15-20 days single-machine; BVLC's bundled model is the 2.4M-iteration
        # quick_solver schedule (60 epochs at batch 32). Midpoint 17.5 days.
        "iteration_s": 17.5 * DAY / 2400000,
        "source": "Poseidon docs (performance.md): GoogLeNet on one K20 with original Caffe takes "
                  "15-20 days; BVLC googlenet quick_solver.prototxt max_iter 2400000 at batch 32; "
                  "midpoint 17.5 days -> 0.630 s/iteration (50.8 images/s).",
    },
}


def layer_costs(net):
    """[(name, type, fwd_flops, bwd_flops, fwd_bytes, bwd_bytes)] for the net's layers (no Split)."""
    rows = []
    for li, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        t = layer.param.type
        if t == "Split":
            continue
        bottoms, tops = net.bottom_vecs[li], net.top_vecs[li]
        ff = fb = mb_f = mb_b = 0.0
        if t in ("Convolution", "InnerProduct"):
            w = layer.blobs[0].shape
            fan_in = 1
            for d in w[1:]:
                fan_in *= d
            if t == "InnerProduct" and layer.param.inner_product_param.transpose:
                fan_in = w[0]
            ff = 2.0 * tops[0].count * fan_in
            data_grad = any(net.bottom_need_backward[li])
            fb = ff * (2.0 if data_grad else 1.0) if net.layer_need_backward[li] else 0.0
        elif t not in ("Input", "Data", "ImageData"):
            elems = sum(b.count for b in bottoms) + sum(b.count for b in tops if b not in bottoms)
            passes = 3.0 if t == "LRN" else 1.0
            mb_f = 4.0 * elems * passes
            mb_b = mb_f * (2.0 if net.layer_need_backward[li] else 0.0)   # reads diff + data
        rows.append((name, t, ff, fb, mb_f, mb_b))
    return rows


def derive(net, spec, device, flops_rate):
    bw = device["gbs"] * 1e9 * MEM_EFFICIENCY
    layers = []
    for name, t, ff, fb, mf, mbk in layer_costs(net):
        layers.append({"name": name, "type": t,
                       "forward_ms": round(1e3 * (ff / flops_rate + mf / bw), 4),
                       "backward_ms": round(1e3 * (fb / flops_rate + mbk / bw), 4)})
    return layers


def build(spec):
    from poseidon_cli import emulate
    from poseidon_cli.net import Net
    src = CONFORMANCE / spec["model"]
    if not src.exists():
        raise SystemExit(f"derive.py: {spec['model']} not found under ../shared/conformance")
    return Net(emulate.stand_in_param(str(src), spec["batch"]), "TRAIN")


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="derive the GPU profiles from published totals")
    ap.add_argument("--out-dir", default=str(HERE))
    out_dir = pathlib.Path(ap.parse_args(argv).out_dir)
    written = []
    for key, spec in NETS.items():
        net = build(spec)
        costs = layer_costs(net)
        flops = sum(c[2] + c[3] for c in costs)
        k20 = DEVICES["k20"]
        mem_s = sum(c[4] + c[5] for c in costs) / (k20["gbs"] * 1e9 * MEM_EFFICIENCY)
        compute_s = spec["iteration_s"] - mem_s
        if compute_s <= 0:
            raise SystemExit(f"{key}: memory-bound layers alone exceed the published time")
        rate_k20 = flops / compute_s
        efficiency = rate_k20 / (k20["tflops"] * 1e12)
        params = sum(p.count for p in net.learnable_params)
        for dev_key, dev in DEVICES.items():
            rate = efficiency * dev["tflops"] * 1e12
            layers = derive(net, spec, dev, rate)
            total = sum(r["forward_ms"] + r["backward_ms"] for r in layers)
            doc = {"net": net.name, "device": dev["name"], "batch": spec["batch"],
                   "model": spec["model"], "iteration_ms": round(total, 3),
                   "images_per_s": round(spec["batch"] / total * 1e3, 2),
                   "params": params, "param_bytes": params * 4,
                   "train_flops_per_iteration": flops, "fraction_of_fp32_peak": round(efficiency, 4),
                   "memory_efficiency": MEM_EFFICIENCY,
                   "source": spec["source"],
                   "derivation": "bench/profiles/derive.py: published iteration time split by "
                                 "FLOPs (conv, fc) and bytes (other layers); current GPU: the same "
                                 "fraction of its FP32 peak and bandwidth (assumption)",
                   "layers": layers}
            out = out_dir / f"{key}_b{spec['batch']}_{dev_key}.json"
            out.write_text(json.dumps(doc, indent=1) + "\n")
            written.append((out.name, total, efficiency, params))
    print(f"{'profile':<28} {'iteration ms':>12} {'of FP32 peak':>12} {'params':>12}")
    for name, total, eff, params in written:
        print(f"{name:<28} {total:>12.1f} {eff:>12.1%} {params:>12,}")


if __name__ == "__main__":
    main()
