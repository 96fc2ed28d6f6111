#!/usr/bin/env python
"""Soak test: a long local cluster run of the digits example, watching every process for leaks.

    python bench/soak.py [--duration 600] [--clients 2] [--staleness 0] [--interval 2]
                         [--warmup 0.25] [--max-iter N] [--svb auto] [--base-lr LR]
                         [--env NAME=VALUE]
                         [--out soak.json] [--keep DIR]

Starts ``poseidon train --hosts`` on loopback ports (the local launcher plus one process per
client, each a parameter-server shard and a worker) on examples/digits, with the training LMDB
shared (every client reads its share of it) and a test every 200 iterations as in the example.
It trains until ``--duration`` seconds have passed (``max_iter`` is set out of reach) or, with
``--max-iter``, until that many iterations are done (sampling stops when the launcher logs the
last one, so that the clients' shutdown is not taken for the end state); a run still going at
``--duration`` gets SIGINT.

Every ``--interval`` seconds it samples, for each process of the run (read from /proc): resident
memory (VmRSS), thread count and open file descriptors. The first ``--warmup`` fraction of the
samples is warm-up (buffers, caches, the first test). Per process it reports the value at the end
of warm-up and at the end (each the median of three samples, so one noisy sample does not decide),
the range after warm-up and the trend; targets: RSS growth < 5 % after warm-up, and no thread or
descriptor growth, judged by the trend (a least-squares line through the samples after warm-up,
times their span: < 1), since the transports' pools open and close connections around a level
and a single end sample would say more about when it was taken than about a leak.
Prints a table and writes bench/results/soak.json (the samples too). Exit code 1 when a target
is missed or the run fails.

The processes run with one BLAS thread each (``OMP_NUM_THREADS=1``) so that the run measures the
program's own threads, and OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are dropped (``blas_env.py``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "digits")
RESULTS = os.path.join(ROOT, "bench", "results")
POSEIDON = [sys.executable, "-m", "poseidon_cli.cli"]
RSS_GROWTH_LIMIT = 0.05

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_cluster import free_ports  # noqa: E402 - one free-port helper for the benches


def make_data(work):
    spec = importlib.util.spec_from_file_location("digits_make_data",
                                                  os.path.join(EXAMPLE, "make_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if mod.main([os.path.join(work, "data"), "--force"]):
        raise SystemExit("making the digits data failed")


def prepare(work, clients, max_iter, base_lr=None):
    net = open(os.path.join(EXAMPLE, "digits_net.prototxt")).read()
    net = net.replace('source: "data/', f'source: "{work}/data/')
    net = net.replace("backend: LMDB }", "backend: LMDB shared_file_system: true }")
    open(os.path.join(work, "digits_net.prototxt"), "w").write(net)
    solver = open(os.path.join(EXAMPLE, "digits_solver.prototxt")).read()
    solver = re.sub(r"^max_iter: \d+", f"max_iter: {max_iter}", solver, flags=re.M)
    if base_lr is not None:
        solver = re.sub(r"^base_lr: .*$", f"base_lr: {base_lr:g}", solver, flags=re.M)
    solver = re.sub(r"^snapshot: \d+", "snapshot: 0", solver, flags=re.M)
    solver = re.sub(r"^display: \d+", "display: 50", solver, flags=re.M)
    solver = re.sub(r"^snapshot_prefix: .*$", 'snapshot_prefix: "output/digits"\n'
                    "snapshot_after_train: false", solver, flags=re.M)
    open(os.path.join(work, "digits_solver.prototxt"), "w").write(solver)
    ports = free_ports(clients)
    with open(os.path.join(work, "hosts.txt"), "w") as fh:
        for i, port in enumerate(ports):
            fh.write(f"{i} 127.0.0.1 {port}\n")


# -- /proc sampling -------------------------------------------------------------------------------

def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def process_tree(root):
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def role(pid, root):
    if pid == root:
        return "launcher"
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return f"pid{pid}"
    argv = [a.decode(errors="replace") for a in argv]
    if "--client-id" in argv:
        return f"client_{argv[argv.index('--client-id') + 1]}"
    return f"pid{pid}"


def sample(pid):
    """{'rss_kib', 'threads', 'fds'} of ``pid`` or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            status = fh.read()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = re.search(r"^VmRSS:\s+(\d+)", status, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    return {"rss_kib": int(rss.group(1)) if rss else 0,
            "threads": int(threads.group(1)) if threads else 0, "fds": fds}


def last_iteration(log_path, tail_bytes=None):
    """The last "Iteration N, loss" the launcher logged (reading only the last ``tail_bytes``)."""
    try:
        with open(log_path, "rb") as fh:
            if tail_bytes:
                fh.seek(max(0, os.path.getsize(log_path) - tail_bytes))
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    found = re.findall(r"Iteration (\d+), loss", text)
    return int(found[-1]) if found else None


# -- analysis ---------------------------------------------------------------------------------------

def _median3(values, at):
    window = values[max(0, at - 1): at + 2] or values[-3:]
    return statistics.median(window)


def _trend(times, vals):
    """Growth over the measured span that a least-squares line through (t, value) gives: a leak
    of one thread or socket in the whole run shows as >= 1; a bounded pool that opens and closes
    connections around a level shows as ~0, wherever its last sample falls."""
    if len(vals) < 2 or times[-1] <= times[0]:
        return 0.0
    slope = statistics.linear_regression(times, vals).slope
    return slope * (times[-1] - times[0])


def summarize(series, warmup):
    """Per role: warm / end / peak / growth of RSS, threads and fds (see module docstring)."""
    rows = {}
    for name, samples in series.items():
        if len(samples) < 4:
            continue
        w = min(len(samples) - 3, max(1, int(len(samples) * warmup)))
        row = {"samples": len(samples)}
        times = [s["t"] for s in samples[w:]]
        for key in ("rss_kib", "threads", "fds"):
            vals = [s[key] for s in samples]
            warm, end = _median3(vals, w), statistics.median(vals[-3:])
            row[key] = {"start": vals[0], "warm": warm, "end": end, "low": min(vals[w:]),
                        "peak": max(vals[w:]), "trend": _trend(times, vals[w:])}
        rss = row["rss_kib"]
        row["rss_growth"] = (rss["end"] - rss["warm"]) / rss["warm"] if rss["warm"] else 0.0
        row["thread_growth"] = row["threads"]["trend"]
        row["fd_growth"] = row["fds"]["trend"]
        row["ok"] = (row["rss_growth"] < RSS_GROWTH_LIMIT and row["thread_growth"] < 1.0
                     and row["fd_growth"] < 1.0)
        rows[name] = row
    return rows


def print_table(rows, meta):
    print(f"\nsoak: {meta['clients']} clients, staleness {meta['staleness']}, svb {meta['svb']}, "
          f"base_lr {meta['base_lr'] or 'of the example'}, env {' '.join(meta['env']) or '-'}, "
          f"{meta['seconds']:.0f} s, iterations {meta['iterations']}, "
          f"warm-up {meta['warmup']:.0%} of {meta['samples']} samples every {meta['interval']} s")
    head = (f"{'process':<10} {'RSS warm MiB':>12} {'RSS end MiB':>11} {'growth':>7} "
            f"{'threads warm/end, range, trend':>31} {'fds warm/end, range, trend':>27}  ok")
    print(head)
    print("-" * len(head))
    for name in sorted(rows):
        r = rows[name]
        t, f = r["threads"], r["fds"]
        tcol = f"{t['warm']:g}/{t['end']:g}, {t['low']:g}-{t['peak']:g}, {t['trend']:+.1f}"
        fcol = f"{f['warm']:g}/{f['end']:g}, {f['low']:g}-{f['peak']:g}, {f['trend']:+.1f}"
        print(f"{name:<10} {r['rss_kib']['warm'] / 1024:>12.1f} {r['rss_kib']['end'] / 1024:>11.1f} "
              f"{r['rss_growth']:>+7.1%} {tcol:>31} {fcol:>27}  {'yes' if r['ok'] else 'NO'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of training")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--staleness", type=int, default=0)
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.25, help="fraction of samples that is warm-up")
    ap.add_argument("--max-iter", type=int, default=None,
                    help="stop after this many iterations instead of after --duration")
    ap.add_argument("--svb", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--base-lr", type=float, default=None,
                    help="the solver's base_lr instead of the example's (stale gradients of 8 "
                         "workers at s=3 with momentum 0.9 diverge at the example's 0.01)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the run, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    ap.add_argument("--out", default="soak.json", help="file name under bench/results/")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args(argv)

    work = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="poseidon-soak-")
    os.makedirs(work, exist_ok=True)
    if not os.path.isdir(os.path.join(work, "data", "digits_train_lmdb")):
        make_data(work)
    prepare(work, args.clients, args.max_iter or 10 ** 8, args.base_lr)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    log_path = os.path.join(work, "launcher.log")
    cmd = POSEIDON + ["train", "--solver", os.path.join(work, "digits_solver.prototxt"),
                      "--hosts", os.path.join(work, "hosts.txt"), "--cpu",
                      "--staleness", str(args.staleness), "--svb", args.svb, "--output-dir", os.path.join(work, "run")]
    series: dict[str, list] = {}
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                now = time.monotonic() - t0
                if args.max_iter is None and now >= args.duration:
                    break
                if args.max_iter is not None:
                    # once the last iteration is logged the clients shut down: their threads and
                    # sockets go away, which is not the steady state this measures
                    it = last_iteration(log_path, 16384)
                    if it is not None and it >= args.max_iter:
                        try:
                            proc.wait(timeout=120)
                        except subprocess.TimeoutExpired:
                            pass   # the finally below interrupts it and says so in the table
                        break
                for pid in process_tree(proc.pid):
                    s = sample(pid)
                    if s is not None:
                        s["t"] = round(now, 2)
                        series.setdefault(role(pid, proc.pid), []).append(s)
                time.sleep(args.interval)
        finally:
            iterations = last_iteration(log_path)
            seconds = time.monotonic() - t0
            finished = proc.poll() is not None
            if not finished:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    rc = proc.returncode
    rows = summarize(series, args.warmup)
    meta = {"clients": args.clients, "staleness": args.staleness, "svb": args.svb,
            "base_lr": args.base_lr,
            "env": args.env, "seconds": seconds,
            "iterations": iterations, "interval": args.interval, "warmup": args.warmup,
            "samples": max((len(v) for v in series.values()), default=0),
            "finished_by_itself": finished, "launcher_rc": rc,
            "targets": {"rss_growth_below": RSS_GROWTH_LIMIT, "thread_trend_below": 1,
                        "fd_trend_below": 1}}
    print_table(rows, meta)
    failed_run = (finished and rc != 0) or not rows
    if failed_run:
        print(f"\nthe run failed (launcher exit code {rc}); last lines of {log_path}:")
        print("".join(open(log_path, errors="replace").readlines()[-20:]))
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, args.out)
    with open(out, "w") as fh:
        json.dump({"meta": meta, "processes": rows, "samples": series}, fh, indent=1)
    print(f"\nwrote {out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed_run or not all(r["ok"] for r in rows.values()) else 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
