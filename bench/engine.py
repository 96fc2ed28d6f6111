"""Whole-net forward+backward throughput: poseidon's engine vs the same net in PyTorch.

Nets come from the conformance prototxts and models/ (Data layers replaced by Input layers of
the batch shape, random inputs): LeNet, CIFAR-10 quick and full, CaffeNet, AlexNet, GoogLeNet and
ResNet-50, forward+backward in TRAIN, with CPU batches a small machine steps in seconds and larger
GPU ones (``NETS``). The PyTorch twin replays the same layer graph by blob name
(Conv2d/MaxPool/AvgPool with ceil_mode, Linear, ReLU, LRN, Dropout, Concat, BatchNorm on batch
statistics, per-channel Scale, Eltwise, weighted cross-entropy losses) from our initial weights
and inputs. ``--memory`` adds each engine's peak resident memory of a training step, measured in
a process of its own per net and engine, minus a process that only imports.
The benchmark re-executes itself without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (``blas_env.py``: the
processor's own kernel, what a user's machine runs); ``--blas-env forced`` keeps them. On the GPU PyTorch runs cuDNN
in full FP32 (TF32 off), as our cuBLAS GEMMs are. Both run the same thread count
(``torch.set_num_threads`` and our ``ops.threads`` pool; ``--threads 1,2`` runs each count in
turn). Times are the median over repetitions taken in alternating blocks (``pairing.py``: drift on
a shared machine hits both alike, and neither engine is timed while the other's OpenMP threads
still spin; compare ratios from one run).
Also prints our per-layer forward/backward medians, so the report says where the time goes.

``--device gpu`` runs only the GPU configurations and exits 3 with one line when CuPy or torch
sees no GPU; ``--device cpu`` only the CPU ones. ``--batch alexnet=8`` overrides a net's batch (small CPU stand-in runs).
``--conformance DIR`` is the folder holding ``bvlc/...`` (default: ``shared/conformance`` in the
checkout if present, else ``../shared/conformance`` beside it).

Usage: python bench/engine.py [--reps 9] [--rounds 1] [--threads 2] [--nets lenet,alexnet]
                              [--device auto|cpu|gpu] [--batch NET=N ...] [--memory]
                              [--blas-env native|forced]
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


def default_conformance():
    """``shared/conformance`` inside the checkout (what travels to a GPU machine), else the
    development layout's ``../shared/conformance``."""
    inside = ROOT / "shared" / "conformance"
    return inside if inside.is_dir() else (ROOT / ".." / "shared" / "conformance").resolve()


CONF = default_conformance()

# (name, prototxt, CPU input shape, GPU input shape): a relative prototxt lives under the
# conformance folder, an absolute one in this checkout's models/. The CPU batches are what a
# two-core machine steps in seconds; the GPU ones fill a device.
NETS = [
    ("lenet", "bvlc/examples/mnist/lenet_train_test.prototxt", (64, 1, 28, 28), (64, 1, 28, 28)),
    ("cifar10_quick", "bvlc/examples/cifar10/cifar10_quick_train_test.prototxt",
     (100, 3, 32, 32), (100, 3, 32, 32)),
    ("cifar10_full", "bvlc/examples/cifar10/cifar10_full_train_test.prototxt",
     (100, 3, 32, 32), (100, 3, 32, 32)),
    ("caffenet", str(ROOT / "models" / "bvlc_reference_caffenet" / "train_val.prototxt"),
     (32, 3, 227, 227), (128, 3, 227, 227)),
    ("alexnet", "bvlc/models/bvlc_alexnet/train_val.prototxt", (32, 3, 227, 227),
     (128, 3, 227, 227)),
    ("googlenet", "bvlc/models/bvlc_googlenet/train_val.prototxt", (16, 3, 224, 224),
     (32, 3, 224, 224)),
    ("resnet_50", str(ROOT / "models" / "resnet_50" / "train_val.prototxt"), (8, 3, 224, 224),
     (32, 3, 224, 224)),
]


def build_ours(rel, shape, xp, conf=None, edit=None):
    """Our TRAIN net for ``conf/rel`` with Input layers of ``shape``; ``edit(param)`` may change
    the NetParameter first (tests switch dropout off)."""
    param = config.load_net_param(pathlib.Path(conf or CONF) / rel)
    names = [l.name for l in param.layer if l.type == "Data"]
    param = substitute_data_layers(param, shapes={n: shape for n in names})
    if edit:
        edit(param)
    net = Net(param, TRAIN, seed=1701, xp=xp)
    fill_inputs(net)
    return net


def _torch_op(layer, ntops, torch, device, params, dtype=None):
    """fn(*bottom tensors) -> tuple of top tensors computing ``layer`` in PyTorch, from our
    weights (appended to ``params``, as ``dtype`` when given); None for layers that add nothing
    to the loss."""
    F = torch.nn.functional
    t = layer.type

    def weight(i):
        w = torch.tensor(backend.to_host(layer.blobs[i].data), device=device, dtype=dtype,
                         requires_grad=True)
        params.append(w)
        return w
    if t in ("Input", "Accuracy", "Silence"):
        return None
    if t == "Split":
        return lambda x: (x,) * ntops
    if t == "Convolution":
        w = weight(0)
        b = weight(1) if len(layer.blobs) > 1 else None
        return lambda x, L=layer: (F.conv2d(x, w, b, L.stride, L.pad, L.dilation, L.group),)
    if t == "Pooling":
        def pool(x, L=layer):
            kernel = tuple(x.shape[2:]) if L.global_pooling else L.kernel
            fn = F.max_pool2d if L.mode == "MAX" else F.avg_pool2d
            return (fn(x, kernel, L.stride, L.pad, ceil_mode=not L.floor),)
        return pool
    if t == "InnerProduct":
        w = weight(0)
        b = weight(1) if len(layer.blobs) > 1 else None
        return lambda x: (F.linear(x.flatten(1), w, b),)
    if t == "ReLU":
        return lambda x: (F.relu(x),)
    if t == "LRN":
        return lambda x, L=layer: (F.local_response_norm(x, L.size, L.alpha, L.beta, L.k),)
    if t == "Dropout":
        return lambda x, L=layer: (F.dropout(x, L.ratio, True),)
    if t == "Concat":
        return lambda *xs, L=layer: (torch.cat(xs, dim=L.axis),)
    if t == "BatchNorm":
        if layer.use_global_stats:   # the stored statistics, scaled as Caffe keeps them
            s_ = float(backend.to_host(layer.blobs[2].data)[0])
            s_ = 0.0 if s_ == 0 else 1.0 / s_
            mean = torch.tensor(backend.to_host(layer.blobs[0].data) * s_, device=device,
                                dtype=dtype)
            var = torch.tensor(backend.to_host(layer.blobs[1].data) * s_, device=device,
                               dtype=dtype)
            return lambda x, L=layer: (F.batch_norm(x, mean, var, training=False, eps=L.eps),)
        # TRAIN: batch mean and biased batch variance, no affine part (Scale follows)
        return lambda x, L=layer: (F.batch_norm(x, None, None, training=True, eps=L.eps),)
    if t == "Scale":
        if len(layer.blobs) < 1 or layer.blobs[0].data.ndim != 1 or \
                int(layer.param.scale_param.axis) != 1:
            raise SystemExit(f"bench: Scale twin covers a learned per-channel scale only "
                             f"(layer {layer.name})")
        g = weight(0)
        b = weight(layer.bias_index) if layer.bias_index is not None else None

        def scale(x):
            y = x * g.view(1, -1, *([1] * (x.dim() - 2)))
            return (y if b is None else y + b.view(1, -1, *([1] * (x.dim() - 2))),)
        return scale
    if t == "Eltwise":
        from poseidon_cli.layers.eltwise import _P

        def eltwise(*xs, L=layer):
            if L.op == _P.SUM:
                y = L.coeff[0] * xs[0] if L.coeff[0] != 1 else xs[0]
                for c, x in zip(L.coeff[1:], xs[1:]):
                    y = y + (c * x if c != 1 else x)
            elif L.op == _P.PROD:
                y = xs[0]
                for x in xs[1:]:
                    y = y * x
            else:
                y = xs[0]
                for x in xs[1:]:
                    y = torch.maximum(y, x)
            return (y,)
        return eltwise
    if t == "SoftmaxWithLoss":
        wt = float(layer.loss_weights[0])
        return lambda x, label: (wt * F.cross_entropy(x, label),)
    raise SystemExit(f"bench: no torch twin for layer type {t}")


def build_torch(net, torch, device, dtype=None):
    """A torch callable computing the same loss from the same weights and inputs: the layer
    graph is replayed by blob name (branches and Concat included), losses summed with their
    weights. The callable runs forward+backward and returns the loss tensor. ``dtype`` (e.g.
    torch.float64) casts weights and inputs, which gives tests a reference more exact than either
    float32 engine."""
    params = []
    program = []   # (fn, bottom names, top names), in our execution order
    for li, layer in enumerate(net.layers):
        tops = list(net._top_name_lists[li])
        fn = _torch_op(layer, len(tops), torch, device, params, dtype)
        if fn is None:
            continue
        program.append((fn, list(net._bottom_name_lists[li]), tops,
                        layer.type == "SoftmaxWithLoss"))
    inputs = {}
    for name in net.inputs:
        host = backend.to_host(net.blobs[name].data)
        if host.ndim <= 1:   # labels
            inputs[name] = torch.tensor(host.astype(np.int64), device=device)
        else:
            inputs[name] = torch.tensor(host, device=device, dtype=dtype)

    def step():
        for p in params:
            p.grad = None
        blobs = dict(inputs)
        loss = None
        for fn, bottoms, tops, is_loss in program:
            outs = fn(*[blobs[b] for b in bottoms])
            for name, value in zip(tops, outs):
                blobs[name] = value
            if is_loss:
                loss = outs[0] if loss is None else loss + outs[0]
        loss.backward()
        if device != "cpu":
            torch.cuda.synchronize()
        return loss
    step.params = params
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


def _error(name, dev, stage, exc):
    line = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    print(f"engine.py: {name}/{dev} failed at {stage}: {line}", flush=True)
    return {"net": name, "device": dev, "stage": stage, "error": line}


def _select(dev):
    return backend.use_gpu(0) if dev == "gpu" else backend.use_cpu()


def _blas_line():
    import blas_env  # noqa: E402 - bench/ is the script folder
    return blas_env.describe()


def _peak_rss_mib():
    """Peak resident set of this process since the last :func:`_reset_peak`, in MiB: Linux's
    VmHWM of this address space, not ``ru_maxrss``, which a process started by exec inherits
    from the parent it was spawned from."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak():
    """Restart the peak-RSS count (Linux: ``clear_refs`` 5), so the setup that built a net for
    the other engine does not count; False where the kernel does not offer it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(spec, batches, conf, nthreads):
    """Run in a child process: ``NET:ours``, ``NET:torch`` or ``-:baseline``. Prints one JSON
    line with the peak resident MiB of two training steps (after the net is built; for torch
    our net, which only supplies the weights, is freed first), or of the imports alone."""
    import gc
    import torch
    name, _, engine_name = spec.partition(":")
    torch.set_num_threads(int(nthreads))
    threads.set_num_threads(int(nthreads))
    if engine_name == "baseline":
        _reset_peak()
        print(json.dumps({"peak_mib": _peak_rss_mib()}))
        return 0
    rel, shape = {n: (r, c) for n, r, c, _ in NETS}[name]
    if name in batches:
        shape = (batches[name],) + shape[1:]
    net = build_ours(rel, shape, backend.use_cpu(), conf)
    step = ours_step(net)
    if engine_name == "torch":
        step = build_torch(net, torch, "cpu")
        del net
        gc.collect()
    exact = _reset_peak()
    for _ in range(2):
        step()
    print(json.dumps({"peak_mib": _peak_rss_mib(), "reset": exact}))
    return 0


def measure_memory(names, batch_args, conf, nthreads):
    """{net: {"ours": MiB, "torch": MiB}}: each engine's peak resident memory of a training step,
    in its own process, minus that of a process that only imports (the interpreter, numpy and
    torch)."""
    import subprocess
    import sys

    def child(spec):
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--memory-child={spec}",
               "--conformance", str(conf), "--threads", str(nthreads)]
        for b in batch_args:
            cmd += ["--batch", b]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise SystemExit(f"engine.py: memory child {spec} failed: {out.stderr[-500:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]
    base = child("-:baseline")
    return {n: {"ours": child(f"{n}:ours") - base, "torch": child(f"{n}:torch") - base,
                "baseline": base} for n in names}


def parse_batches(items, ap):
    """{net: batch} from ``NET=N`` strings; ``ap.error`` (exit 2) on a bad one."""
    known = {n for n, *_ in NETS}
    out = {}
    for item in items:
        name, _, n = item.partition("=")
        if name not in known or not n.isdigit() or int(n) < 1:
            ap.error(f"--batch {item!r}: give NET=N with NET one of {', '.join(sorted(known))} "
                     f"and N >= 1")
        out[name] = int(n)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat every measurement this many times, rounds outermost; the "
                         "ratio is the median over rounds and the range is printed")
    ap.add_argument("--threads", default=str(os.cpu_count()),
                    help="thread count(s) for both engines, comma-separated (e.g. 1,2)")
    ap.add_argument("--nets", default=",".join(n for n, *_ in NETS))
    ap.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    ap.add_argument("--batch", action="append", default=[], metavar="NET=N")
    ap.add_argument("--conformance", default=None, help="folder holding bvlc/...")
    ap.add_argument("--blas-env", choices=["native", "forced"], default="native",
                    help="native: drop OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (what a user's machine "
                         "runs); forced: keep the machine's settings, for comparison")
    ap.add_argument("--memory", action="store_true",
                    help="also measure each engine's peak resident memory of a training step, "
                         "each net and engine in its own process (CPU only)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine.json"))
    args = ap.parse_args(argv)
    batches = parse_batches(args.batch, ap)
    conf = pathlib.Path(args.conformance) if args.conformance else CONF
    if not (conf / "bvlc").is_dir():
        ap.exit(2, f"engine.py: error: no conformance nets in {conf} (give --conformance DIR, "
                   f"the folder holding bvlc/)\n")
    wanted = args.nets.split(",")
    unknown = sorted(set(wanted) - {n for n, *_ in NETS})
    if unknown:
        ap.error(f"--nets: unknown net(s) {', '.join(unknown)}")
    if args.memory_child:
        return memory_child(args.memory_child, batches, conf, args.threads)
    import torch
    gpu = backend.gpu_available() and torch.cuda.is_available()
    if args.device == "gpu" and not gpu:
        ap.exit(3, f"engine.py: error: --device gpu: no usable GPU (CuPy sees "
                   f"{backend.gpu_count()} device(s), torch.cuda.is_available() is "
                   f"{torch.cuda.is_available()})\n")
    if gpu:
        _torch_full_fp32(torch)
    devices = {"auto": ["cpu"] + (["gpu"] if gpu else []), "cpu": ["cpu"],
               "gpu": ["gpu"]}[args.device]
    described = {}
    errors = []    # {net, device, stage, error}: configurations that raised
    configs = []   # (name, dev, nthreads, shape, net, torch step)
    for nthreads in [int(t) for t in args.threads.split(",")]:
        for name, rel, cpu_shape, gpu_shape in NETS:
            if name not in wanted:
                continue
            for dev in devices:
                shape = cpu_shape if dev == "cpu" else gpu_shape
                if name in batches:
                    shape = (batches[name],) + shape[1:]
                xp = _select(dev)
                described[dev] = backend.device_description()
                try:
                    net = build_ours(rel, shape, xp, conf)
                    tstep = build_torch(net, torch, "cuda" if dev == "gpu" else "cpu")
                except Exception as exc:   # noqa: BLE001 - one broken net must not hide the rest
                    errors.append(_error(name, dev, "build", exc))
                    continue
                finally:
                    backend.use_cpu()
                configs.append((name, dev, nthreads, shape, net, tstep))
    # Rounds outermost: a noisy minute on the shared machine then hits one round of every
    # configuration, not every round of one.
    times = [[] for _ in configs]
    broken = set()
    for _ in range(args.rounds):
        for c, (name, dev, nthreads, shape, net, tstep) in enumerate(configs):
            if c in broken:
                continue
            torch.set_num_threads(nthreads)
            threads.set_num_threads(nthreads)
            _select(dev)   # backend.synchronize waits for the GPU only while it is selected
            try:
                times[c].append(blocked_medians(ours_step(net), tstep, args.reps))
            except Exception as exc:   # noqa: BLE001 - reported in the JSON, exit status 1
                errors.append(_error(name, dev, "step", exc))
                broken.add(c)
    rows = []
    for c, ((name, dev, nthreads, shape, net, tstep), pairs) in enumerate(zip(configs, times)):
        if c in broken:
            continue
        torch.set_num_threads(nthreads)
        threads.set_num_threads(nthreads)
        _select(dev)
        prof = layer_profile(net, args.reps)
        n = shape[0]
        ratios = [theirs / ours for ours, theirs in pairs]
        ours = float(np.median([o for o, _ in pairs]))
        theirs = float(np.median([t for _, t in pairs]))
        rows.append({
            "net": name, "device": dev, "batch": n, "threads": nthreads,
            "device_description": described[dev],
            "ours_img_s": n / ours, "torch_img_s": n / theirs,
            "ratio_ours_over_torch": float(np.median(ratios)),
            "round_ratios": [round(r, 4) for r in ratios],
            "ours_ms": ours * 1e3, "torch_ms": theirs * 1e3,
            "profile_ms": {ln: {"forward": round(f, 3), "backward": round(b, 3)}
                           for ln, (f, b) in zip(net.layer_names, prof)},
        })
    memory = {}
    if args.memory and "cpu" in devices:
        memory = measure_memory([n for n, *_ in NETS if n in wanted], args.batch, conf,
                                args.threads.split(",")[0])
        for r in rows:
            if r["device"] == "cpu" and r["net"] in memory:
                r["peak_rss_mib"] = memory[r["net"]]
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
    if memory:
        print(f"peak resident memory of a training step, MiB above a process that only imports "
              f"(each in its own process, {args.threads.split(',')[0]} thread(s)):")
        for name, m in memory.items():
            print(f"  {name:14} ours {m['ours']:8.0f}  torch {m['torch']:8.0f}  "
                  f"ratio {m['ours'] / max(m['torch'], 1e-9):.2f}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = {"host": platform.node(), "python": platform.python_version(),
           "numpy": np.__version__, "torch": torch.__version__, "threads": args.threads,
           "cpu_count": os.cpu_count(), "loadavg": load, "blas": _blas_line(),
           "memory_mib": memory,
           "torch_cuda_device": torch.cuda.get_device_name(0) if gpu else None,
           "tf32": False if gpu else None,
           "reps": args.reps, "rounds": args.rounds, "results": rows, "errors": errors}
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out} (load average {load})")
    return 1 if errors else 0


if __name__ == "__main__":
    import sys
    import blas_env  # noqa: E402 - bench/ is the script folder
    if not blas_env.keeps_forced(sys.argv):
        blas_env.run_natively()
    if not any(a.startswith("--memory-child") for a in sys.argv):
        print(blas_env.describe(), flush=True)
    raise SystemExit(main())
