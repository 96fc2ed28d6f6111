#!/usr/bin/env python
"""Convergence on real data: the digits example on 1 node against 2/4(/8) local clients at
staleness 0, 1 and 2, all at the same global batch, with held-out accuracy against iterations and
epochs and a projected time-to-accuracy.

    python bench/convergence.py [--quick] [--clients 2,4[,8]] [--staleness 0,1,2]
                                [--max-iter 1200] [--test-interval 50] [--tta 0.97]
                                [--scaling-json bench/results/scaling.json] [--keep DIR]

Every run trains examples/digits' net with real compute (``poseidon train``, CPU) from the same
``random_seed``; a cluster run starts its N clients with ``poseidon train --hosts`` on loopback
ports (``bench/digits_cluster.py``'s helpers make the data and the prototxts). Same global batch
G (default 48): one node trains at batch G, each of N clients at G/N, reading the shared training
LMDB with stride N, so at every clock the N clients together see the G records one node sees.

Held-out accuracy is what the runs log themselves: the test net's ``accuracy`` every
``--test-interval`` iterations, read from the run's ``<net>.netoutputs`` (the Caffe-style log is
the fallback). A cluster splits a test pass among its clients (each runs ceil(test_iter / N)
batches, reading the test LMDB with stride N) and averages; so that every pass of every
configuration scores each held-out image exactly once, the split holds out 296 images (8 x 37,
test_iter 8 at batch 37; the example's 297 is odd and cannot be split), leaving 1,501 to train.
Epochs = iterations x G / 1,501.

Time-to-accuracy: the first test at or above ``--tta`` gives the iterations (and epochs) each
configuration needs; "here" is the seconds it took on this machine (all clients share its cores),
"projected" multiplies those iterations by the per-iteration time ``bench/scaling.py`` measured
for the same number of nodes and staleness (its emulated cluster, read from its JSON). Without a
matching row the table says "no measured per-iteration time"; nothing is invented.

Targets (at the final iteration, i.e. after the same number of samples): 4 clients at s=0 within
0.5 points of one node's held-out accuracy, 4 clients at s=2 within 1 point. Prints a table and
PASS/MISS per target, writes bench/results/convergence.json and convergence.png (accuracy against
iterations and against epochs, one line per configuration); exit code 1 on a miss or a failed run.
``--quick`` (400 iterations, test every 25) takes a few minutes; the default run about 10 on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
import digits_cluster as dc  # noqa: E402 - free ports, data and prototxts of the digits benches

RESULTS = os.path.join(ROOT, "bench", "results")
DIGITS_TOTAL = 1797          # scikit-learn's digits
TEST_COUNT = 296             # held out: 8 x 37, so 1, 2, 4 or 8 clients split a test pass evenly
TEST_SPLIT = 8               # test_iter; every client count must divide it
TRAIN_COUNT = DIGITS_TOTAL - TEST_COUNT
TARGETS = [(4, 0, 0.5), (4, 2, 1.0)]   # (clients, staleness, max |difference| in points)
NO_TIME = "no measured per-iteration time"


# -- reading a run ---------------------------------------------------------------------------------

def read_test_curve(path, column="accuracy"):
    """[(iteration, seconds, value)] of the first test net's ``column`` in a ``.netoutputs`` file."""
    from poseidon_cli.solver.netoutputs import read_netoutputs
    blocks = read_netoutputs(path)
    if len(blocks) < 2:
        return []
    test = blocks[1]
    if column not in test["columns"]:
        raise ValueError(f"{path}: test block has no column {column!r} ({test['columns']})")
    j = test["columns"].index(column)
    return [(int(r[0]), float(r[1]), float(r[j])) for r in test["rows"]]


_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"Test net output #\d+: (\S+) = ([0-9.eE+-]+|nan|inf)")


def parse_log_tests(text, column="accuracy"):
    """[(iteration, value)] of test net #0's ``column`` from a Caffe-format training log."""
    out, current = [], None
    for line in text.splitlines():
        m = _TESTING.search(line)
        if m:
            current = int(m.group(1)) if m.group(2) == "0" else None
            continue
        m = _OUTPUT.search(line)
        if m and current is not None and m.group(1) == column:
            out.append((current, float(m.group(2))))
            current = None
    return out


def find_curve(run_dir):
    """The test-accuracy curve a run left in ``run_dir`` (searched recursively): the .netoutputs
    file, else the client-0 log. [(iteration, seconds or None, accuracy)]."""
    netouts, logs = [], []
    for base, _, files in os.walk(run_dir):
        for f in files:
            if f.endswith(".netoutputs"):
                netouts.append(os.path.join(base, f))
            elif f.endswith(".log") and not f.startswith("client_"):
                logs.append(os.path.join(base, f))
    for p in sorted(netouts):
        curve = read_test_curve(p)
        if curve:
            return curve
    for p in sorted(logs):
        curve = parse_log_tests(open(p, errors="replace").read())
        if curve:
            return [(it, None, v) for it, v in curve]
    return []


# -- arithmetic ------------------------------------------------------------------------------------

def epochs(iteration, global_batch, train_count=TRAIN_COUNT):
    return iteration * global_batch / train_count


def first_reaching(curve, threshold):
    """The first (iteration, seconds) whose accuracy is >= threshold, or None."""
    for it, sec, acc in curve:
        if acc >= threshold:
            return it, sec
    return None


def scaling_rows(path):
    """scaling.py's rows, or [] when its JSON is missing or unreadable."""
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return []
    return [dict(r, _source=os.path.basename(path)) for r in doc.get("rows", [])
            if "nodes" in r and "iteration_s" in r]


def match_scaling(rows, nodes, staleness, svb=None):
    """scaling.py's row for this many nodes and this staleness (one node: any staleness, it has
    no parameter server), preferring overlap on and the same ``--svb``; None when there is none."""
    cand = [r for r in rows if r["nodes"] == nodes and (nodes == 1 or r.get("staleness") == staleness)]
    if not cand:
        return None
    cand.sort(key=lambda r: (not r.get("overlap", True), r.get("svb") != svb))
    return cand[0]


def projected_seconds(iterations, row):
    """Iterations to the accuracy x scaling.py's seconds per iteration (None without a row)."""
    if row is None or iterations is None:
        return None
    return iterations * float(row["iteration_s"])


def check(runs, targets=TARGETS):
    """PASS/MISS rows: each target config's final accuracy against one node's, in points."""
    base = next((r for r in runs if r["clients"] == 1 and r.get("final_accuracy") is not None), None)
    out = []
    for n, s, limit in targets:
        r = next((x for x in runs if x["clients"] == n and x["staleness"] == s), None)
        row = {"clients": n, "staleness": s, "limit_points": limit}
        if base is None or r is None or r.get("final_accuracy") is None:
            row.update(diff_points=None, result="MISS",
                       why="not run" if r is None else "no result (run failed or 1 node missing)")
        else:
            diff = 100 * (r["final_accuracy"] - base["final_accuracy"])
            row.update(diff_points=round(diff, 3), iteration=r["final_iteration"],
                       result="PASS" if abs(diff) <= limit + 1e-9 else "MISS")
            if r["final_iteration"] != base["final_iteration"]:
                row.update(result="MISS", why="final iterations differ")
        out.append(row)
    return out


# -- running ---------------------------------------------------------------------------------------

def configure(d, global_batch, clients, max_iter, test_interval):
    """Finish the prototxts ``dc.prepare`` wrote in ``d``: the test split (test_iter x batch =
    TEST_COUNT), the test interval, no snapshots (held-out accuracy comes from the run's tests)."""
    net_p = os.path.join(d, "digits_net.prototxt")
    net = open(net_p).read()
    net, k = re.subn(r"(digits_test_lmdb\" batch_size: )\d+", rf"\g<1>{TEST_COUNT // TEST_SPLIT}", net)
    assert k == 1 and f"batch_size: {global_batch // clients} " in net, "unexpected digits_net.prototxt"
    open(net_p, "w").write(net)
    sol_p = os.path.join(d, "digits_solver.prototxt")
    sol = open(sol_p).read()
    for key, value in (("test_iter", TEST_SPLIT), ("test_interval", test_interval),
                       ("display", test_interval), ("max_iter", max_iter)):
        sol, k = re.subn(rf"^{key}: \d+", f"{key}: {value}", sol, flags=re.M)
        assert k == 1, f"no {key} in digits_solver.prototxt"
    sol += "snapshot_after_train: false\n"
    open(sol_p, "w").write(sol)


def train(work, name, clients, staleness, a):
    d = dc.prepare(work, name, a.global_batch // clients, True, a.max_iter)
    configure(d, a.global_batch, clients, a.max_iter, a.test_interval)
    cmd = dc.POSEIDON + ["train", "--solver", "digits_solver.prototxt", "--cpu", "--output-dir", "run"]
    if clients > 1:
        with open(os.path.join(d, "hosts.txt"), "w") as fh:
            fh.writelines(f"{i} 127.0.0.1 {p}\n" for i, p in enumerate(dc.free_ports(clients)))
        cmd += ["--hosts", "hosts.txt", "--staleness", str(staleness), "--svb", a.svb,
                "--deadline", str(a.deadline)]
    wall = dc.run(cmd, d, os.path.join(work, f"{name}.log"))
    return wall, find_curve(os.path.join(d, "run"))


def summarize(run, curve, a, srows):
    run["curve"] = [{"iteration": it, "samples": it * a.global_batch,
                     "epoch": round(epochs(it, a.global_batch), 4), "seconds": sec, "accuracy": acc}
                    for it, sec, acc in curve]
    if curve:
        run["final_iteration"], run["final_accuracy"] = curve[-1][0], curve[-1][2]
    time_to_accuracy(run, a.tta, a.global_batch, srows, a.svb)


def time_to_accuracy(run, tta, global_batch, srows, svb):
    """run["tta"] from run["curve"]: iterations, epochs, seconds here, projected seconds."""
    hit = first_reaching([(p["iteration"], p["seconds"], p["accuracy"]) for p in run["curve"]], tta)
    row = match_scaling(srows, run["clients"], run["staleness"], svb)
    run["tta"] = {"accuracy": tta, "iterations": hit and hit[0],
                  "epochs": hit and round(epochs(hit[0], global_batch), 3),
                  "seconds_here": hit and hit[1],
                  "projected_seconds": projected_seconds(hit and hit[0], row),
                  "scaling_row": None if row is None else
                  {k: row.get(k) for k in ("_source", "net", "nodes", "staleness", "svb", "overlap",
                                           "iteration_s")}}


def fmt_acc(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def table(doc):
    lines = [f"digits: {TRAIN_COUNT} train / {TEST_COUNT} held out, global batch "
             f"{doc['global_batch']}, {doc['max_iter']} iterations "
             f"({epochs(doc['max_iter'], doc['global_batch']):.1f} epochs), CPU",
             f"time to {100 * doc['tta']:.1f}%: iterations, epochs, seconds here (all clients on "
             f"this machine's {doc['cpu_count']} cores), projected seconds",
             f"{'config':<22} {'final acc':>9} {'vs 1 node':>9} {'iters':>6} {'epochs':>6} "
             f"{'here s':>7}  projected s (scaling.py)"]
    base = next((r for r in doc["runs"] if r["clients"] == 1), None)
    for r in doc["runs"]:
        acc = r.get("final_accuracy")
        diff = ("-" if acc is None or base is None or base.get("final_accuracy") is None
                or r is base else f"{100 * (acc - base['final_accuracy']):+.2f}p")
        t = r.get("tta", {})
        it = t.get("iterations")
        here = t.get("seconds_here")
        if r.get("error"):
            proj = "run failed"
        elif it is None:
            proj = f"not reached {100 * doc['tta']:.1f}%"
        elif t.get("projected_seconds") is None:
            proj = NO_TIME
        else:
            s = t["scaling_row"]
            proj = (f"{t['projected_seconds']:.2f} (projected: {it} x {s['iteration_s'] * 1e3:.1f} ms, "
                    f"{s.get('net')} svb {s.get('svb')})")
        lines.append(f"{r['name']:<22} {fmt_acc(acc):>9} {diff:>9} {'-' if it is None else it:>8} "
                     f"{'-' if it is None else t['epochs']:>6} "
                     f"{'-' if here is None else f'{here:.1f}':>7}  {proj}")
    lines.append("")
    for c in doc["checks"]:
        d = "-" if c["diff_points"] is None else f"{c['diff_points']:+.2f}"
        lines.append(f"target: {c['clients']} clients s={c['staleness']} within {c['limit_points']} "
                     f"points of 1 node at the final iteration: {d} points -> {c['result']}"
                     + (f" ({c['why']})" if c.get("why") else ""))
    return "\n".join(lines)


def plot(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {1: "black", 2: "tab:blue", 4: "tab:orange", 8: "tab:green"}
    styles = {0: "-", 1: "--", 2: ":"}
    marks = {0: "o", 1: "s", 2: "^"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    lo = 1.0
    for r in doc["runs"]:
        pts = [p for p in r.get("curve", []) if p["iteration"] > 0]
        if not pts:
            continue
        lo = min(lo, min(p["accuracy"] for p in pts[len(pts) // 4:]))
        one = r["clients"] == 1
        kw = dict(color=colors.get(r["clients"], None), label=r["name"],
                  linestyle="-" if one else styles.get(r["staleness"], "-."),
                  marker=None if one else marks.get(r["staleness"], "x"), markersize=3,
                  linewidth=3.0 if one else 1.2, alpha=0.45 if one else 0.9, zorder=1 if one else 2)
        axes[0].plot([p["iteration"] for p in pts], [100 * p["accuracy"] for p in pts], **kw)
        axes[1].plot([p["epoch"] for p in pts], [100 * p["accuracy"] for p in pts], **kw)
    for ax, xl in zip(axes, ("iterations", f"epochs ({TRAIN_COUNT} images)")):
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
        ax.axhline(100 * doc["tta"], color="grey", linewidth=0.8, linestyle="-.")
    axes[0].set_ylabel(f"held-out accuracy, % ({TEST_COUNT} images)")
    axes[0].set_ylim(max(0.0, 100 * lo - 1.0), 100.0)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"digits, global batch {doc['global_batch']}: 1 node vs N clients at staleness s "
                 f"(grey: {100 * doc['tta']:.0f}%, the time-to-accuracy level)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="400 iterations, test every 25")
    ap.add_argument("--clients", default="2,4", help="client counts (divisors of 8); 8 is optional")
    ap.add_argument("--staleness", default="0,1,2")
    ap.add_argument("--global-batch", type=int, default=48)
    ap.add_argument("--max-iter", type=int, default=None, help="default 1200 (--quick 400)")
    ap.add_argument("--test-interval", type=int, default=None, help="default 50 (--quick 25)")
    ap.add_argument("--tta", type=float, default=0.97, help="accuracy for time-to-accuracy")
    ap.add_argument("--svb", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--deadline", type=float, default=120.0)
    ap.add_argument("--scaling-json", default=os.path.join(RESULTS, "scaling.json"))
    ap.add_argument("--json", default=os.path.join(RESULTS, "convergence.json"))
    ap.add_argument("--png", default=os.path.join(RESULTS, "convergence.png"))
    ap.add_argument("--keep", help="work in this folder and keep it (logs, prototxts)")
    ap.add_argument("--reproject", metavar="JSON",
                    help="train nothing: redo the table, projection and PNG of this earlier "
                         "convergence.json with --scaling-json (e.g. once scaling.py has run)")
    a = ap.parse_args(argv)
    if a.reproject:
        return reproject(a)
    a.max_iter = a.max_iter or (400 if a.quick else 1200)
    a.test_interval = a.test_interval or (25 if a.quick else 50)
    clients = [int(x) for x in a.clients.split(",") if x]
    stal = [int(x) for x in a.staleness.split(",") if x]
    for n in clients:
        if n < 2 or TEST_SPLIT % n or a.global_batch % n:
            ap.error(f"--clients {n}: needs 2..8 dividing {TEST_SPLIT} and --global-batch {a.global_batch}")
    if not 0 < a.tta <= 1:
        ap.error("--tta is a fraction, e.g. 0.97")
    work = os.path.abspath(a.keep) if a.keep else tempfile.mkdtemp(prefix="convergence_")
    os.makedirs(work, exist_ok=True)
    dc.make_data(work, TEST_COUNT)
    srows = scaling_rows(a.scaling_json)
    print(f"scaling.py rows: {len(srows)} from {a.scaling_json}" if srows else
          f"scaling.py results: none at {a.scaling_json} ({NO_TIME} for the projection)", flush=True)
    plan = [(1, None)] + [(n, s) for n in clients for s in stal]
    runs, t0 = [], time.time()
    for n, s in plan:
        name = "1 node" if n == 1 else f"{n} clients s={s}"
        tag = "single" if n == 1 else f"n{n}_s{s}"
        run = {"name": name, "clients": n, "staleness": s, "batch_per_client": a.global_batch // n}
        try:
            wall, curve = train(work, tag, n, s, a)
            run["wall_s"] = round(wall, 1)
            if not curve:
                raise RuntimeError("the run logged no test accuracy")
        except (SystemExit, RuntimeError) as exc:
            run["error"], curve = str(exc), []
        summarize(run, curve, a, srows)
        runs.append(run)
        print(f"  {name}: " + (f"FAILED: {run['error']}" if run.get("error") else
                               f"{fmt_acc(run.get('final_accuracy'))} at iteration "
                               f"{run.get('final_iteration')}, {run['wall_s']} s"), flush=True)
    doc = {"bench": "convergence", "global_batch": a.global_batch, "train_count": TRAIN_COUNT,
           "test_count": TEST_COUNT, "max_iter": a.max_iter, "test_interval": a.test_interval,
           "tta": a.tta, "svb": a.svb, "quick": a.quick, "scaling_json": a.scaling_json,
           "scaling_rows": len(srows), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
           "wall_s": round(time.time() - t0, 1), "runs": runs}
    rc = report(doc, a)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return rc


def report(doc, a):
    """Checks, table, JSON and PNG; the exit code (1 on a miss or a failed run)."""
    doc["checks"] = check(doc["runs"])
    print("\n" + table(doc))
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as fh:
        json.dump(doc, fh, indent=1)
    png = plot(doc, a.png)
    print(f"wrote {a.json}" + (f" and {png}" if png else " (no matplotlib: no PNG)"))
    failed = (any(r.get("error") for r in doc["runs"])
              or any(c["result"] != "PASS" for c in doc["checks"]))
    return 1 if failed else 0


def reproject(a):
    with open(a.reproject) as fh:
        doc = json.load(fh)
    srows = scaling_rows(a.scaling_json)
    print(f"scaling.py rows: {len(srows)} from {a.scaling_json}" if srows else
          f"scaling.py results: none at {a.scaling_json} ({NO_TIME} for the projection)")
    doc.update(scaling_json=a.scaling_json, scaling_rows=len(srows))
    for run in doc["runs"]:
        time_to_accuracy(run, doc["tta"], doc["global_batch"], srows, doc.get("svb"))
    return report(doc, a)


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
