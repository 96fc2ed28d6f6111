"""Hybrid communication benchmark: PS vs sufficient-factor broadcasting on capped links.

Runs ``poseidon train --hosts`` as N clients (default 4), each in its own network namespace with a
link capped by ``tc`` (default 1 Gbit/s each way; bench/netns.py), on a net of fully connected
layers (default two 4096 x 4096 and one 10 x 4096, batch 32, DummyData input), once per ``--svb``
mode (off, on, auto). For each mode it reports, per node and iteration:

* measured link bytes (tx + rx of the node's eth0, from the kernel), taken as the difference
  between a run of ``--warm`` iterations and one of ``--warm + --iters`` iterations, so start-up
  traffic (initial weights, registration) cancels out;
* the analytic bytes of the cost model (distributed/sfb/plan.py: PS 2·M·N·(P1+P2-2)/P2, SFB
  2·K·(P1-1)·(M+N) values per layer, biases on the PS) and measured / model;
* the mean iteration time of the long run (wall time from one update to the next, the first
  iteration left out), the speed-up over ``off``, and the CPU seconds per iteration of each client
  process (all its threads: worker, PS shard, transports) with, for SFB layers, the part spent
  rebuilding gradients and in the local solver step.

Threads: every client runs with ONE compute thread (``OPENBLAS_NUM_THREADS=1``,
``POSEIDON_NUM_THREADS=1``, ``--threads`` to change). The N simulated hosts share this machine's
cores, so a client that splits its GEMMs over several threads only competes with the other
clients (and OpenBLAS workers busy-wait); the same setting is used for every ``--svb`` mode.
When the clients' summed CPU time per iteration divided by the cores exceeds the link time, the
run measures this machine's CPU, not the network: the summary prints both bounds.

    sudo .venv/bin/python bench/sfb.py [--clients 4] [--rate 1gbit] [--iters 6] [--warm 2]
                                       [--modes off,on,auto] [--threads 1] [--json PATH]

JSON goes to ``--json`` (default ``bench/results/sfb.json``).

Not root, or no ``ip``/``tc``: prints why and exits 0 (skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from netns import NetnsCluster, NetnsUnavailable, check_available, parse_rate  # noqa: E402

from poseidon_cli.distributed import sfb  # noqa: E402

NET = """name: "fcbench"
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ shape {{ dim: {batch} dim: {width} }} shape {{ dim: {batch} }}
    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "constant" value: 3 }} }} }}
{layers}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{last}" bottom: "label" top: "loss" }}
"""
FC = """layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"
  inner_product_param {{ num_output: {out} weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
"""
RELU = """layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}
"""
SOLVER = """net: "net.prototxt"
base_lr: 0.001 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 type: "SGD"
max_iter: {iters} display: 0 random_seed: 1 snapshot_after_train: false solver_mode: CPU
"""


def write_job(folder: pathlib.Path, batch: int, width: int, hidden: list, classes: int, iters: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    layers, bottom = "", "data"
    for i, out in enumerate(hidden + [classes]):
        name = f"fc{i + 6}"
        layers += FC.format(name=name, bottom=bottom, out=out)
        if i < len(hidden):
            layers += RELU.format(name=name)
        bottom = name
    (folder / "net.prototxt").write_text(NET.format(batch=batch, width=width, layers=layers, last=bottom))
    (folder / "solver.prototxt").write_text(SOLVER.format(iters=iters))
    return str(folder / "solver.prototxt")


def model_bytes(batch, width, hidden, classes, clients, mode):
    """Per node per iteration: (total, [(layer, M, N, scheme, bytes)]) by the cost model."""
    rows, total, k_in = [], 0, width
    for i, out in enumerate(hidden + [classes]):
        m, n = out, k_in
        scheme = sfb.choose(m, n, batch, clients, clients, mode)
        w = sfb.sfb_bytes(m, n, batch, clients) if scheme == "sfb" else sfb.ps_bytes(m, n, clients, clients)
        b = sfb.ps_bytes(m, 1, clients, clients)  # the bias always travels through the PS
        rows.append((f"fc{i + 6}", m, n, scheme, w + b))
        total += w + b
        k_in = out
    return total, rows


def run_once(cl, job, run_dir, clients, mode, port, deadline, threads=1):
    hosts = pathlib.Path(run_dir) / "hosts.txt"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    hosts.write_text("".join(f"{i} {cl.addresses[i]} {port}\n" for i in range(clients)))
    before = [cl.link_bytes(i) for i in range(clients)]
    logs, procs = [], []
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), POSEIDON_NUM_THREADS=str(threads))
    t0 = time.time()
    for i in range(clients):
        log = open(pathlib.Path(run_dir) / f"client{i}.log", "wb")
        logs.append(log)
        procs.append(cl.run_in(i, [sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", job,
                                   "--hosts", str(hosts), "--client-id", str(i), "--svb", mode,
                                   "--cpu", "--deadline", str(deadline), "--output-dir", run_dir],
                               stdout=log, stderr=log, cwd=str(REPO), env=env))
    codes = [p.wait() for p in procs]
    wall = time.time() - t0
    for log in logs:
        log.close()
    if any(codes):
        bad = codes.index(next(c for c in codes if c))
        tail = (pathlib.Path(run_dir) / f"client{bad}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"--svb {mode}: client {bad} exited with {codes[bad]}:\n{tail}")
    after = [cl.link_bytes(i) for i in range(clients)]
    moved = [(a["tx"] - b["tx"]) + (a["rx"] - b["rx"]) for a, b in zip(after, before)]
    stats = [json.loads((pathlib.Path(run_dir) / f"stats.client{i}.json").read_text()) for i in range(clients)]
    return moved, stats, wall


def _later(st):
    its = st["iterations"][1:] or st["iterations"]
    return [i for i in its if i.get("wall_s") is not None] or its


def iteration_time(stats):
    """Mean over clients of the mean iteration time (end of one update to the end of the next),
    the first iteration left out (warm-up)."""
    per = []
    for st in stats:
        its = _later(st)
        per.append(statistics.mean(i["wall_s"] if i.get("wall_s") is not None
                                   else i["compute_s"] + i["wait_params_s"] + i["clock_s"] for i in its))
    return statistics.mean(per)


def cpu_breakdown(stats):
    """Per client: mean process CPU seconds per iteration, and the SFB rebuild / step CPU seconds
    per iteration (summed over SFB layers, all iterations)."""
    out = []
    for st in stats:
        its = [i for i in _later(st) if i.get("cpu_s") is not None]
        n = max(1, len(st["iterations"]))
        out.append({"cpu_s": statistics.mean(i["cpu_s"] for i in its) if its else float("nan"),
                    "sfb_rebuild_cpu_s": sum(r.get("rebuild_cpu_s", 0.0) for r in st.get("sfb_layers", [])) / n,
                    "sfb_step_cpu_s": sum(r.get("step_cpu_s", 0.0) for r in st.get("sfb_layers", [])) / n,
                    "compute_s": statistics.mean(i["compute_s"] for i in _later(st)),
                    "wait_params_s": statistics.mean(i["wait_params_s"] for i in _later(st)),
                    "clock_s": statistics.mean(i["clock_s"] for i in _later(st))})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--hidden", default="4096,4096", help="outputs of the hidden fc layers")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--iters", type=int, default=6, help="iterations measured (on top of --warm)")
    ap.add_argument("--warm", type=int, default=2)
    ap.add_argument("--modes", default="off,on,auto")
    ap.add_argument("--port", type=int, default=7300)
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="compute threads per client (OPENBLAS_NUM_THREADS, POSEIDON_NUM_THREADS)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "sfb.json"))
    a = ap.parse_args(argv)
    try:
        check_available()
    except NetnsUnavailable as e:
        print(f"bench/sfb.py skipped: {e}")
        return 0
    hidden = [int(x) for x in a.hidden.split(",") if x]
    results = []
    with tempfile.TemporaryDirectory(prefix="sfb-bench-") as tmp:
        tmp = pathlib.Path(tmp)
        short = write_job(tmp / "short", a.batch, a.width, hidden, a.classes, a.warm)
        long = write_job(tmp / "long", a.batch, a.width, hidden, a.classes, a.warm + a.iters)
        try:
            with NetnsCluster(a.clients, rate=a.rate) as cl:
                for mode in a.modes.split(","):
                    m_short, _, _ = run_once(cl, short, str(tmp / f"{mode}_short"), a.clients, mode, a.port, a.deadline,
                                           a.threads)
                    m_long, stats, wall = run_once(cl, long, str(tmp / f"{mode}_long"), a.clients, mode, a.port,
                                                   a.deadline, a.threads)
                    per_node = [(l - s) / a.iters for l, s in zip(m_long, m_short)]
                    model, rows = model_bytes(a.batch, a.width, hidden, a.classes, a.clients, mode)
                    decisions = [(d["layer"], d["scheme"]) for d in stats[0]["sfb_decisions"]]
                    cpu = cpu_breakdown(stats)
                    results.append({"mode": mode, "iteration_s": iteration_time(stats), "wall_s": wall,
                                    "cpu_per_client": cpu,
                                    "cpu_s_per_iter_all_clients": sum(c["cpu_s"] for c in cpu),
                                    "measured_bytes_per_node_iter": statistics.mean(per_node),
                                    "measured_bytes_per_node_iter_each": per_node,
                                    "model_bytes_per_node_iter": model, "model_layers": rows,
                                    "decisions": decisions,
                                    "app_sfb_layers": stats[0].get("sfb_layers", [])})
                    r = results[-1]
                    per_client = " ".join(f"{c['cpu_s']:.2f}" for c in cpu)
                    print(f"  --svb {mode}: {r['iteration_s']:.3f} s/iter, CPU "
                          f"{per_client} s/iter per client (SFB rebuild "
                          f"{cpu[0]['sfb_rebuild_cpu_s']:.3f}, step {cpu[0]['sfb_step_cpu_s']:.3f} on client 0), measured "
                          f"{r['measured_bytes_per_node_iter'] / 1e6:.1f} MB/node/iter, model "
                          f"{model / 1e6:.1f} MB ({decisions})", flush=True)
        except NetnsUnavailable as e:
            print(f"bench/sfb.py skipped: {e}")
            return 0
    base = next((r for r in results if r["mode"] == "off"), None)
    print(f"\n{a.clients} clients, links {a.rate}, fc {a.width} -> {hidden} -> {a.classes}, batch {a.batch}, "
          f"{a.iters} iterations measured")
    cores = os.cpu_count() or 1
    link_bps = parse_rate(a.rate) / 8
    print(f"{'--svb':<6} {'choices':<28} {'s/iter':>8} {'speed-up':>9} {'MB/node/iter':>13} "
          f"{'model MB':>9} {'meas/model':>10} {'CPU s/iter':>10} {'CPU bound':>9} {'link bound':>10}")
    for r in results:
        choices = ",".join(f"{l}:{s}" for l, s in r["decisions"])
        speed = (base["iteration_s"] / r["iteration_s"]) if base else float("nan")
        r["speedup_vs_off"] = speed
        ratio = r["measured_bytes_per_node_iter"] / r["model_bytes_per_node_iter"]
        r["measured_over_model"] = ratio
        # lower bounds on this machine: all clients' CPU over its cores; each node's bytes split
        # evenly over the two directions of its full-duplex link
        r["cpu_bound_s"] = r["cpu_s_per_iter_all_clients"] / cores
        r["link_bound_s"] = r["measured_bytes_per_node_iter"] / 2 / link_bps
        print(f"{r['mode']:<6} {choices:<28} {r['iteration_s']:>8.3f} {speed:>8.2f}x "
              f"{r['measured_bytes_per_node_iter'] / 1e6:>13.2f} {r['model_bytes_per_node_iter'] / 1e6:>9.2f} "
              f"{ratio:>10.3f} {r['cpu_s_per_iter_all_clients']:>10.2f} {r['cpu_bound_s']:>9.2f} "
              f"{r['link_bound_s']:>10.2f}")
    print(f"CPU s/iter: summed over the {a.clients} client processes; CPU bound = that / {cores} cores; "
          f"link bound = MB/node/iter / 2 directions / {a.rate}")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump({"clients": a.clients, "rate": a.rate, "batch": a.batch, "width": a.width,
                       "hidden": hidden, "classes": a.classes, "iters": a.iters, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
