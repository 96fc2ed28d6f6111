"""Does the compute stand-in take the profile's time, with the real net's bytes?

    python bench/emulate_check.py [--dilation D] [--iters N] [--no-train] [--no-cluster]

For each shipped K20 profile (AlexNet b256, GoogLeNet b32), on this machine:

1. **net**: the stand-in Net's forward+backward per iteration against the profile's sum x D
   (target: within 5%).
2. **train**: ``poseidon train --emulate-compute`` on one node (the seed's "original Caffe" point)
   per iteration from the log, against the same sum; the difference is this machine's solver step
   over the real parameters (not in the profile; a GPU would take milliseconds).
3. **bytes**: parameter bytes and the sufficient factors of fc6/fc7/fc8 against the published
   shapes (AlexNet fc6 9216->4096 37,752,832 parameters, fc7 16,781,312, fc8 4,097,000).
4. **cluster** (AlexNet only): a 2-client loopback cluster of the stand-in, bytes each client
   counted per iteration (its stats file) against ``ps_bytes``/``sfb_bytes`` of the cost model.
   The workers count whole pushes and pulls, their own shard's part included; at 2 clients that
   equals a node's network bytes, so the comparison holds only there (``bench/scaling.py`` counts
   the interfaces of any number of hosts).

Prints a table and writes bench/results/emulate_check.json.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFORMANCE = ROOT / ".." / "shared" / "conformance"
PROFILES = ROOT / "bench" / "profiles"
POSEIDON = [sys.executable, "-m", "poseidon_cli.cli"]
LAPSE = re.compile(r"Iteration (\d+), [-0-9.e+]+ iter/s, ([-0-9.e+]+)s/(\d+) iters")

PUBLISHED_FC = {"fc6": (4096, 9216), "fc7": (4096, 4096), "fc8": (1000, 4096)}


def check_net(prof_path, dilation, iters):
    from poseidon_cli import emulate
    from poseidon_cli.net import Net
    prof = emulate.load_profile(prof_path)
    model = CONFORMANCE / prof.extra["model"]
    emu = emulate.Emulation(prof, dilation)
    net = emulate.apply(Net(emulate.stand_in_param(str(model)), "TRAIN"), emu)
    net.forward_backward()                     # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        net.forward_backward()
        times.append(time.perf_counter() - t0)
    want = prof.iteration_ms * 1e-3 * dilation
    got = statistics.fmean(times)
    params = sum(p.count for p in net.learnable_params)
    fc = {}
    for name, (m, n) in PUBLISHED_FC.items():
        if name in net.params:
            li = net.layer_names.index(name)
            fc[name] = {"weight": list(net.params[name][0].shape), "published": [m, n],
                        "top_diff": list(net.top_vecs[li][0].shape),
                        "bottom_data": list(net.bottom_vecs[li][0].shape)}
    return net, {"profile": prof_path.name, "profile_ms": prof.iteration_ms * dilation,
                 "measured_ms": got * 1e3, "error_pct": 100 * (got - want) / want,
                 "params": params, "param_bytes": params * 4,
                 "profile_param_bytes": prof.extra.get("param_bytes"), "fc": fc}


def write_solver(d, model, iters, display=1):
    """The benches' solver. ``display`` 1 gives the per-iteration "Iteration N, ... s/1 iters"
    lines check_train times; a cluster run must not display every iteration: in a cluster each
    display iteration averages the loss over every worker (``PSSync.mean``), i.e. it waits for
    the slowest worker at that clock whatever the staleness."""
    s = d / "solver.prototxt"
    s.write_text(f'net: "{model}"\nbase_lr: 0.001 lr_policy: "fixed" momentum: 0.9\n'
                 f'max_iter: {iters} display: {int(display)} snapshot_after_train: false '
                 f'solver_mode: CPU random_seed: 1701\n')
    return s


def check_train(prof_path, dilation, iters, workdir):
    from poseidon_cli import emulate
    prof = emulate.load_profile(prof_path)
    solver = write_solver(workdir, CONFORMANCE / prof.extra["model"], iters + 2)
    r = subprocess.run(POSEIDON + ["train", "--solver", str(solver), "--emulate-compute", str(prof_path),
                                   "--dilation", str(dilation), "--output-dir", str(workdir / "out")],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"poseidon train failed:\n{r.stderr[-3000:]}")
    per = [float(m.group(2)) / int(m.group(3)) for m in LAPSE.finditer(r.stderr) if int(m.group(1)) > 1]
    want = prof.iteration_ms * dilation
    got = statistics.fmean(per) * 1e3
    return {"profile": prof_path.name, "profile_ms": want, "measured_ms": got,
            "error_pct": 100 * (got - want) / want, "iterations": len(per)}


def check_cluster(prof_path, dilation, iters, workdir):
    """2 clients on loopback: bytes per iteration per param from the stats files vs the model."""
    from poseidon_cli import emulate
    from poseidon_cli.distributed.sfb import ps_bytes, sfb_bytes
    prof = emulate.load_profile(prof_path)
    d = workdir / "cluster"
    d.mkdir()
    solver = write_solver(d, CONFORMANCE / prof.extra["model"], iters)
    hosts = d / "hosts.txt"
    hosts.write_text("0 127.0.0.1 47811\n1 127.0.0.1 47812\n")
    r = subprocess.run(POSEIDON + ["train", "--solver", str(solver), "--hosts", str(hosts), "--cpu",
                                   "--emulate-compute", str(prof_path), "--dilation", str(dilation),
                                   "--output-dir", str(d / "run")],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"2-client cluster failed:\n{r.stderr[-3000:]}")
    stats = [json.loads(p.read_text()) for p in sorted((d / "run").rglob("stats.client*.json"))]
    net, _ = check_net(prof_path, 1e-9, 1)
    shapes = {f"{n}/{i}": tuple(b.shape) for n, blobs in net.params.items() for i, b in enumerate(blobs)}
    K = emulate.net_batch(net)
    rows, measured, model = [], 0, 0
    for st in stats:
        n_iter = len(st["iterations"])
        for p in st["params"]:
            if not p["communicated"]:
                continue
            shape = shapes[p["param"]]
            count = 1
            for s in shape:
                count *= s
            if p["scheme"] == "sfb":
                want = sfb_bytes(shape[0], shape[1], K, 2)
            else:
                want = ps_bytes(count, 1, 2, 2)
            got = (p["bytes_sent"] + p["bytes_received"]) / n_iter
            measured += got
            model += want
            if st["client"] == 0:
                rows.append({"param": p["param"], "scheme": p["scheme"], "measured": got, "model": want})
    return {"clients": 2, "iterations": iters, "per_param_client0": rows,
            "bytes_per_node_measured": measured / len(stats), "bytes_per_node_model": model / len(stats),
            "error_pct": 100 * (measured - model) / model if model else float("nan"),
            "note": "bytes counted by the workers (payload of every push, pull and factor stream); "
                    "bench/scaling.py counts them on the namespace interfaces"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dilation", type=float, default=1.0)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-cluster", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "emulate_check.json"))
    a = ap.parse_args(argv)
    if not CONFORMANCE.is_dir():
        print("bench/emulate_check.py skipped: ../shared/conformance (the nets) is not present")
        return 0
    doc = {"dilation": a.dilation, "iters": a.iters, "loadavg_before": os.getloadavg(),
           "cpu_count": os.cpu_count(), "net": [], "train": [], "cluster": None}
    with tempfile.TemporaryDirectory(prefix="emucheck-") as tmp:
        tmp = pathlib.Path(tmp)
        for name in ("alexnet_b256_k20.json", "googlenet_b32_k20.json"):
            _, res = check_net(PROFILES / name, a.dilation, a.iters)
            doc["net"].append(res)
            if not a.no_train:
                w = tmp / name
                w.mkdir()
                doc["train"].append(check_train(PROFILES / name, a.dilation, a.iters, w))
        if not a.no_cluster:
            doc["cluster"] = check_cluster(PROFILES / "alexnet_b256_k20.json", a.dilation, 3, tmp)
    doc["loadavg_after"] = os.getloadavg()
    print(f"dilation {a.dilation:g}; {a.iters} iterations each; loadavg {doc['loadavg_before'][0]:.1f}"
          f" -> {doc['loadavg_after'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'check':<8} {'profile':<26} {'profile ms':>11} {'measured ms':>12} {'error':>8}")
    for kind in ("net", "train"):
        for r in doc[kind]:
            print(f"{kind:<8} {r['profile']:<26} {r['profile_ms']:>11.1f} {r['measured_ms']:>12.1f} "
                  f"{r['error_pct']:>+7.2f}%")
    for r in doc["net"]:
        print(f"bytes    {r['profile']:<26} params {r['params']:,} = {r['param_bytes'] / 1e6:.2f} MB")
        for name, f in r["fc"].items():
            ok = "ok" if f["weight"] == f["published"] else "MISMATCH"
            print(f"         {name}: weight {f['weight']} (published {f['published']}, {ok}); "
                  f"factors top_diff {f['top_diff']}, bottom_data {f['bottom_data']}")
    c = doc["cluster"]
    if c:
        print(f"cluster  2 clients AlexNet: {c['bytes_per_node_measured'] / 1e6:.2f} MB/node/iteration "
              f"measured, {c['bytes_per_node_model'] / 1e6:.2f} MB model ({c['error_pct']:+.2f}%)")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
