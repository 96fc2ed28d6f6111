"""Poseidon's scaling figure on an emulated cluster: real communication, emulated GPU compute.

    sudo python bench/scaling.py --net alexnet --nodes 1,2,4 --staleness 0 --svb off \\
        --link 40gbit --dilation 40 --iters 5

Hosts are network namespaces on one bridge (``bench/netns.py``), every link capped with tc.
Compute is the stand-in (``poseidon train --emulate-compute``, ``poseidon_cli/emulate.py``) with a
GPU profile from ``bench/profiles/``. **Time dilation D**: links are capped at rate/D and every layer
takes D times its profile time, which keeps the seed cluster's ratio of communication to compute
while this machine's CPUs move D times fewer bytes per second. Times in the table are divided by D
(real-device seconds); D is printed with every run.

Per configuration: images/s, speedup over the 1-node run (the stand-in alone, no parameter server:
the seed's "original Caffe" point), bytes per node per iteration counted on the namespace
interfaces (tx + rx of eth0, steady-state window, so start-up is excluded) next to the cost model,
this machine's CPU-seconds per iteration (all clients), and a flag when that CPU time is near what
the machine has (the run is then bound by this machine, not by links or emulated compute). Beside
each row: what ``poseidon plan`` predicts for it.

Needs root (network namespaces); otherwise prints why it skipped and exits 0. Writes
bench/results/scaling.json and bench/results/scaling.png.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
CONFORMANCE = ROOT / ".." / "shared" / "conformance"
PROFILES = ROOT / "bench" / "profiles"
POSEIDON = [sys.executable, "-m", "poseidon_cli.cli"]
PORT = 7571
NETS = {"alexnet": "alexnet_b256", "googlenet": "googlenet_b32"}
from emulate_check import write_solver  # noqa: E402 - one solver file for both benches

CPU_BOUND = 0.8   # flag a run whose CPU use is above this share of the machine's CPUs


def cluster_solver(workdir, model, iters):
    """The solver every cluster run of this bench trains: no display iterations (see main)."""
    return write_solver(workdir, model, iters, display=0)


def link_totals(cl, n):
    """tx + rx bytes so far of hosts 0..n-1."""
    return [sum(cl.link_bytes(k).values()) for k in range(n)]


def run_single(model, profile, dilation, jitter, iters, skip):
    """The 1-node point: the stand-in net alone (no parameter server), forward + backward per
    iteration. Single-machine Caffe runs its solver step on the GPU (milliseconds for AlexNet), so
    this machine's CPU solver step is not part of it (``bench/emulate_check.py`` reports it)."""
    from poseidon_cli import emulate
    from poseidon_cli.net import Net
    emu = emulate.Emulation(emulate.load_profile(profile), dilation, jitter)
    net = emulate.apply(Net(emulate.stand_in_param(str(model)), "TRAIN"), emu)
    t0 = time.process_time()
    times = []
    for i in range(iters):
        a = time.perf_counter()
        net.forward_backward()
        if i >= skip:
            times.append(time.perf_counter() - a)
    return {"iteration_s": statistics.fmean(times),
            "cpu_s_per_iter": (time.process_time() - t0) / iters, "bytes_per_node": 0.0}


def startup_bytes(layers, n, svb):
    """Bytes per node (tx + rx) before the first iteration: every PS parameter is pulled once
    (each shard serves its part to the n-1 other workers), worker 0 sends every SFB layer's weights
    and SGD history to its n-1 peers (averaged over nodes)."""
    from poseidon_cli import plan
    total = 0.0
    for layer in layers:
        _, schemes = plan.layer_bytes(layer, n, svb)
        for p, scheme in zip(layer.params, schemes):
            if scheme == "sfb":
                total += 2 * 2 * p.count * 4 * (n - 1) / n
            else:
                total += 2 * p.count * 4 * (n - 1) / n
    return total


def run_cluster(cl, solver, profile, n, staleness, svb, overlap, dilation, jitter, workdir,
                timeout, skip, iters):
    run_dir = workdir / f"n{n}_s{staleness}_{svb}_{'ov' if overlap else 'noov'}"
    run_dir.mkdir()
    hosts = run_dir / "hosts.txt"
    hosts.write_text("".join(f"{k} {cl.addresses[k]} {PORT}\n" for k in range(n)))
    procs = []
    before = link_totals(cl, n)
    for k in range(n):
        argv = POSEIDON + ["train", "--solver", solver, "--hosts", hosts, "--client-id", k,
                           "--output-dir", run_dir, "--cpu", "--staleness", staleness, "--svb", svb,
                           "--emulate-compute", profile, "--dilation", dilation,
                           "--deadline", max(120.0, 30.0 * dilation)]
        if jitter:
            argv += ["--jitter", jitter]
        if not overlap:
            argv.append("--no-overlap")
        log = open(run_dir / f"client{k}.log", "w")
        procs.append((cl.run_in(k, argv, stdout=log, stderr=subprocess.STDOUT), log))
    t_end = time.monotonic() + timeout
    exit_errors = []
    for k, (p, log) in enumerate(procs):
        try:
            rc = p.wait(max(1.0, t_end - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{run_dir.name}: still running after {timeout:.0f}s") from None
        log.close()
        if rc != 0:
            tail = pathlib.Path(log.name).read_text()[-3000:]
            st = run_dir / f"stats.client{k}.json"
            done = json.loads(st.read_text())["iterations"] if st.exists() else []
            if len(done) < iters:   # failed before the end: no measurement
                raise RuntimeError(f"{run_dir.name}: client {k} exit code {rc}\n{tail}")
            # every iteration ran; the failure is in leaving (reported, measurement kept)
            exit_errors.append(f"client {k}: " + (tail.strip().splitlines() or ["?"])[-1])
    stats = [json.loads((run_dir / f"stats.client{k}.json").read_text()) for k in range(n)]
    walls = [x["wall_s"] for st in stats for x in st["iterations"][skip:] if x["wall_s"] is not None]
    cpus = [statistics.fmean([x["cpu_s"] for x in st["iterations"][skip:] if x["cpu_s"] is not None]
                             or [0.0]) for st in stats]
    moved = [b - a for a, b in zip(before, link_totals(cl, n))]
    payload = [sum(p["bytes_sent"] + p["bytes_received"] for p in st["params"]) for st in stats]
    return {"iteration_s": statistics.fmean(walls), "cpu_s_per_iter": sum(cpus),
            "run_bytes_per_node": statistics.fmean(moved),
            "payload_bytes_per_node": statistics.fmean(payload),
            "iterations": len(stats[0]["iterations"]), "exit_errors": exit_errors,
            "sfb_layers": [r.get("layer") for r in stats[0].get("sfb_decisions", [])
                           if r.get("scheme") == "sfb"]}


def plot(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    maxn = max(r["nodes"] for r in doc["rows"])
    ax.plot([1, maxn], [1, maxn], "k:", label="ideal")
    keys = sorted({(r["net"], r["staleness"], r["svb"], r["overlap"]) for r in doc["rows"]})
    for key in keys:
        rows = sorted((r for r in doc["rows"] if (r["net"], r["staleness"], r["svb"], r["overlap"]) == key),
                      key=lambda r: r["nodes"])
        label = f"{key[0]} s={key[1]} svb {key[2]}" + ("" if key[3] else " no overlap")
        line, = ax.plot([r["nodes"] for r in rows], [r["speedup"] for r in rows], "o-", label=label)
        ax.plot([r["nodes"] for r in rows], [r["predicted_speedup"] for r in rows], "x--",
                color=line.get_color(), alpha=0.6, label=f"{label} (poseidon plan)")
    ax.set_xlabel("nodes")
    ax.set_ylabel("speedup over 1 node (stand-in alone)")
    ax.set_title(f"emulated cluster: {doc['link']} per node equivalent, dilation {doc['dilation']:g}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--net", default="alexnet", choices=sorted(NETS))
    ap.add_argument("--device", default="k20", help="profile suffix (k20, a100)")
    ap.add_argument("--nodes", default="1,2,4,8")
    ap.add_argument("--staleness", default="0")
    ap.add_argument("--svb", default="off", help="comma-separated: off,auto,on")
    ap.add_argument("--overlap", default="on", help="comma-separated: on,off")
    ap.add_argument("--link", default="40gbit", help="real link rate being emulated (per node)")
    ap.add_argument("--dilation", type=float, default=40.0)
    ap.add_argument("--jitter", type=float, default=0.0)
    ap.add_argument("--iters", type=int, default=5, help="iterations per run (the first 2 are skipped)")
    ap.add_argument("--timeout", type=float, default=1500.0)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, stats)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "scaling.json"))
    ap.add_argument("--png", default=str(ROOT / "bench" / "results" / "scaling.png"))
    a = ap.parse_args(argv)

    from netns import NetnsCluster, NetnsUnavailable, check_available, parse_rate
    try:
        check_available()
    except NetnsUnavailable as e:
        print(f"bench/scaling.py skipped: {e}")
        return 0
    if not CONFORMANCE.is_dir():
        print("bench/scaling.py skipped: ../shared/conformance (the nets) is not present")
        return 0
    from poseidon_cli import emulate, plan
    from poseidon_cli.net import Net

    profile = PROFILES / f"{NETS[a.net]}_{a.device}.json"
    prof = emulate.load_profile(profile)
    model = CONFORMANCE / prof.extra["model"]
    layers = plan.layers_from_net(Net(emulate.stand_in_param(str(model)), "TRAIN"), prof)
    real_bps = parse_rate(a.link)
    capped = real_bps / a.dilation
    D = a.dilation
    nodes = [int(x) for x in a.nodes.split(",")]
    stal = [int(x) for x in a.staleness.split(",")]
    svbs = a.svb.split(",")
    overlaps = [x == "on" for x in a.overlap.split(",")]
    skip = 2
    print(f"{a.net} (profile {profile.name}, {prof.iteration_ms:.0f} ms/iteration on the device); "
          f"link {a.link} emulated as tbf {capped / 1e6:.0f} Mbit/s with dilation D={D:g}; "
          f"{a.iters} iterations per run, timing from iteration {skip}", flush=True)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="scaling-"))
    # display 0: a display iteration averages the loss and outputs over every worker, a barrier
    # at that clock; displaying every iteration made staleness s > 0 run like s = 0 (issue 18).
    # Timing comes from the stats files, not from display lines.
    solver = cluster_solver(workdir, model, a.iters)
    doc = {"bench": "scaling", "net": a.net, "profile": profile.name, "link": a.link,
           "link_capped_bps": capped, "dilation": D, "jitter": a.jitter, "iters": a.iters,
           "cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg(), "rows": []}
    t_start = time.time()
    try:
        single = run_single(model, profile, D, a.jitter, a.iters, skip)
        print(f"  1 node: {single['iteration_s'] / D * 1e3:.1f} ms/iteration (device time), "
              f"{single['cpu_s_per_iter']:.2f} CPU-s/iteration", flush=True)
        need = max(nodes)
        with NetnsCluster(need, rate=capped) as cl:
            for s in stal:
                for svb in svbs:
                    for ov in overlaps:
                        for n in nodes:
                            if n == 1:
                                res = dict(single)
                            else:
                                try:
                                    res = run_cluster(cl, solver, profile, n, s, svb, ov, D, a.jitter,
                                                      workdir, a.timeout, skip, a.iters)
                                except RuntimeError as exc:
                                    print(f"  n={n} s={s} svb={svb}: FAILED: {exc}", flush=True)
                                    doc.setdefault("failed", []).append(
                                        {"nodes": n, "staleness": s, "svb": svb, "overlap": ov,
                                         "error": str(exc)[-2000:]})
                                    continue
                            pred = plan.simulate(layers, n, real_bps, s, svb, ov, a.jitter,
                                                 batch=prof.batch)
                            it = res["iteration_s"] / D
                            iters_done = res.get("iterations", a.iters)
                            model_run = (pred.bytes_per_node * iters_done
                                         + (startup_bytes(layers, n, svb) if n > 1 else 0.0))
                            run_b = res.get("run_bytes_per_node", 0.0)
                            row = {"net": a.net, "nodes": n, "staleness": s, "svb": svb, "overlap": ov,
                                   "iteration_s": it, "images_per_s": n * prof.batch / it,
                                   "speedup": n * (single["iteration_s"] / D) / it,
                                   "model_bytes_per_node": pred.bytes_per_node,
                                   "run_bytes_per_node": run_b,
                                   "run_payload_bytes_per_node": res.get("payload_bytes_per_node", 0.0),
                                   "model_run_bytes_per_node": model_run,
                                   "bytes_error_pct": (100 * (run_b - model_run) / model_run
                                                       if model_run else 0.0),
                                   "cpu_s_per_iter": res["cpu_s_per_iter"],
                                   "cpu_share": res["cpu_s_per_iter"] / (res["iteration_s"] * os.cpu_count()),
                                   "predicted_iteration_s": pred.iteration_s,
                                   "predicted_speedup": pred.speedup,
                                   "sfb_layers": res.get("sfb_layers", []),
                                   "exit_errors": res.get("exit_errors", [])}
                            row["cpu_bound"] = row["cpu_share"] > CPU_BOUND
                            doc["rows"].append(row)
                            print(f"  n={n} s={s} svb={svb} overlap={'on' if ov else 'off'}: "
                                  f"{it * 1e3:.1f} ms, speedup {row['speedup']:.2f} "
                                  f"(plan {pred.speedup:.2f}), run {run_b / 1e6:.0f} MB/node on eth0 "
                                  f"(model {model_run / 1e6:.0f}, {row['bytes_error_pct']:+.1f}%), CPU share "
                                  f"{row['cpu_share']:.0%}", flush=True)
    except NetnsUnavailable as e:
        print(f"bench/scaling.py skipped: {e}")
        return 0
    finally:
        if a.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["wall_s"] = round(time.time() - t_start, 1)
    doc["loadavg_after"] = os.getloadavg()
    print(f"\n{a.net}, {a.link} equivalent (tbf {capped / 1e6:.0f} Mbit/s, dilation {D:g}); times are "
          f"device seconds (measured / D)")
    print(f"{'nodes':>5} {'s':>2} {'svb':>4} {'ovl':>3} {'iter ms':>9} {'img/s':>8} {'speedup':>7} "
          f"{'plan':>6} {'MB/it':>7} {'run MB':>8} {'model':>8} {'err':>6} {'CPU-s/it':>8}  flag")
    for r in doc["rows"]:
        flag = "CPU-BOUND (this machine)" if r["cpu_bound"] else ""
        print(f"{r['nodes']:>5} {r['staleness']:>2} {r['svb']:>4} {'on' if r['overlap'] else 'off':>3} "
              f"{r['iteration_s'] * 1e3:>9.1f} {r['images_per_s']:>8.1f} {r['speedup']:>7.2f} "
              f"{r['predicted_speedup']:>6.2f} {r['model_bytes_per_node'] / 1e6:>7.1f} "
              f"{r['run_bytes_per_node'] / 1e6:>8.0f} {r['model_run_bytes_per_node'] / 1e6:>8.0f} "
              f"{r['bytes_error_pct']:>+5.1f}% {r['cpu_s_per_iter']:>8.2f}  {flag}")
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(doc, fh, indent=1)
    png = plot(doc, a.png)
    print(f"wrote {a.json}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
