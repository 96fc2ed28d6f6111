"""Benchmark: does wait-free backprop hide communication? 2 clients in rate-capped namespaces.

    python bench/overlap.py                      # 1 Gbit/s links, 25.2M-param net, ~4 minutes
    python bench/overlap.py --rate 500mbit --fc-scale 0.5 --iters 16 --window 4

Two hosts are network namespaces on a private bridge (bench/netns.py, 10.77.0.1 and .2) whose
links are capped with tbf in both directions. The net is bench/nets/cifar_alexfc.prototxt: CIFAR-10
quick's conv stack (batch 32) under AlexNet's fc6/fc7/fc8 (fc6 reads 1024 features instead of 9216;
``--fc-scale`` scales fc6/fc7 widths further). Four measurements of the same net and parameter
layout:

  (a) compute-only: the single-node Solver (forward + backward + local update), timed per
      iteration in-process. Measured twice: one process alone, and one process in each namespace at
      the same time (the 2-client cluster shares this machine's cores, so this is the compute a
      client actually gets; it is the "compute" of the target).
  (b) communication-only: in each namespace a process with this client's PS shard (``ShardServer``
      with the Caffe ``SolverUpdater``) and a ``PSClient`` over ``GrpcTransport`` to both shards,
      exactly as ``poseidon train --hosts`` builds them; per iteration push every gradient,
      ``clock()``, pull every parameter (staleness 0); no compute.
  (c) ``poseidon train --hosts H --client-id K --no-overlap`` in each namespace;
  (d) the same with wait-free backprop (the default).

(c)/(d) iteration time = the solver's own display lapse ("Iteration N, x iter/s, Ys/W iters") of
client 0, over the windows after the first (warm-up); the per-iteration split compute / waiting for
parameters / clock comes from ``<run dir>/stats.client<k>.json``. Reported: mean iteration times,
overlapped / max(compute, communication) (target <= 1.15) and the speedup of (d) over (c).

Findings (2-core shared machine, 1 Gbit/s, 25.2M params; see the commit log for numbers): the
fc weights (99% of the bytes) are at the top, so their gradients are ready early but, at staleness 0,
the PS serves next iteration's values only after *every* worker has called ``clock()`` (the pull rule
``min_worker_clock >= c``), and ``clock()`` blocks on a Clock RPC queued behind megabytes of pushes
(0.1-0.35 s). Push and pull phases of the fc layers are thus serialised behind the whole backward;
only the conv backward/forward overlaps them. Pulling each layer's values right after its push
(``a >= c`` already implies every worker pushed that chunk) and not blocking on the Clock reply
removed the parameter wait in a private experiment; what remains is CPU contention between compute
and gRPC/kernel network work on 2 cores.

Needs root (namespaces + tc): otherwise prints why and exits 0 without measuring. Writes a table and
JSON (--json, default bench/results/overlap.json). Machine load from other processes makes absolute
times drift; compare the ratios of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NET = ROOT / "bench" / "nets" / "cifar_alexfc.prototxt"
PORT = 7471

SOLVER = """net: "{net}"
base_lr: 0.0001 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 type: "SGD"
max_iter: {iters} display: {display} random_seed: 1701 snapshot_after_train: false solver_mode: CPU
"""


# ---------------------------------------------------------------------------------------- set-up
def write_job(workdir: pathlib.Path, fc_scale: float, iters: int, display: int):
    """The net (fc6/fc7 widths scaled) and an SGD solver in ``workdir``; returns (solver, fc widths)."""
    text = NET.read_text()
    width = max(16, int(round(4096 * fc_scale)))
    if fc_scale != 1.0:
        for layer in ("fc6", "fc7"):
            text = re.sub(r'(name: "%s".*?num_output: )4096' % layer, r"\g<1>%d" % width, text,
                          count=1, flags=re.S)
    net = workdir / "net.prototxt"
    net.write_text(text)
    solver = workdir / "solver.prototxt"
    solver.write_text(SOLVER.format(net=net, iters=iters, display=display))
    return solver, width


def layout_info(solver_path):
    """Parameter count and bytes of the net behind ``solver_path``."""
    from poseidon_cli import config
    from poseidon_cli.net import Net
    param = config.load_solver_param(str(solver_path))
    net = Net(param.net, seed=1)
    n = sum(b.count for b in net.learnable_params)
    return {"params": int(n), "bytes": int(n * 4),
            "shapes": {name: list(b.shape) for name, b in zip(net.learnable_param_names, net.learnable_params)}}


# ---------------------------------------------------------------------------------------- roles
def role_compute(args):
    """Single-node Solver, wall time of every iteration (forward + backward + local update)."""
    from poseidon_cli import config
    from poseidon_cli.solver.log import TrainLog
    from poseidon_cli.solver.solver import Solver
    param = config.load_solver_param(args.solver)
    solver = Solver(param, solver_path=args.solver, log=TrainLog(streams=[]))
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        solver.step(1)
        times.append(time.perf_counter() - t0)
    pathlib.Path(args.out).write_text(json.dumps({"iteration_s": times}))


def role_comm(args):
    """This client's shard + a PSClient, push/clock/pull of the net's layout, no compute."""
    import numpy as np

    from poseidon_cli import config
    from poseidon_cli.context import RunContext
    from poseidon_cli.distributed.hosts import parse_hosts
    from poseidon_cli.distributed.ps_sync import PSSync
    from poseidon_cli.distributed.spec import ClusterSpec
    from poseidon_cli.ps.client import PSClient
    from poseidon_cli.ps.grpc_transport import GrpcTransport
    from poseidon_cli.ps.server import ShardServer
    from poseidon_cli.ps.store import ShardStore
    from poseidon_cli.ps.updaters import SolverUpdater
    from poseidon_cli.solver.log import TrainLog
    from poseidon_cli.solver.solver import Solver

    hosts = parse_hosts(args.hosts)
    k, n = args.client_id, len(hosts)
    param = config.load_solver_param(args.solver)
    # The real layout and multipliers (same code path as a client); its net is built but not run.
    sync = PSSync(svb="off", num_shards=n)   # every weight through the PS, as the train runs here
    Solver(param, solver_path=args.solver, context=RunContext(client_id=k, num_clients=n),
           log=TrainLog(streams=[]), sync=sync)
    job = ClusterSpec.from_cli({"hosts": args.hosts, "solver": args.solver, "client_id": k}).job_id
    store = ShardStore(k, n, job, SolverUpdater(param, sync.multipliers(), 0), deadline_s=60.0,
                       heartbeat_timeout_s=15.0)
    server = ShardServer(store, host=hosts[k].ip, port=hosts[k].port)
    server.start()
    trs = [GrpcTransport(h.address, i, job, channels=2) for i, h in enumerate(hosts)]
    client = PSClient(trs, job, worker_id=k, num_workers=n, params=sync.ps_layout(), staleness=0,
                      deadline_s=60.0, connect_timeout_s=60.0, job_config=sync.job_config())
    names = [s.ps_name for s in sync.syncs if s.scheme == "ps"]
    blobs = [s.param.blob for s in sync.syncs if s.scheme == "ps"]
    rng = np.random.default_rng(k)
    grads = [rng.standard_normal(b.shape).astype(np.float32) * 1e-3 for b in blobs]
    times = []
    try:
        client.connect()
        if k == 0:
            sync.client = client
            sync.publish_initial_state()
        client.barrier()
        for _ in range(args.iters):
            t0 = time.perf_counter()
            # Top layers first, as backward produces them; a fresh copy each, as WaitFreeBackprop does.
            for name, g in zip(reversed(names), reversed(grads)):
                client.push(name, g.copy(), copy=False)
            client.clock()
            futs = [client.pull(name) for name in names]
            for f in futs:
                f.result(timeout=120)
            times.append(time.perf_counter() - t0)
        client.finish()
    finally:
        server.stop(grace=1.0)
    pathlib.Path(args.out).write_text(json.dumps({"iteration_s": times}))


# ---------------------------------------------------------------------------------------- driver
def _wait_all(procs, timeout, what):
    t_end = time.monotonic() + timeout
    for p, log in procs:
        try:
            rc = p.wait(max(1.0, t_end - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{what}: still running after {timeout:.0f}s (log: {log})") from None
        if rc != 0:
            tail = pathlib.Path(log).read_text()[-3000:] if os.path.exists(log) else ""
            raise RuntimeError(f"{what}: exit code {rc} (log: {log})\n{tail}")


def _spawn(cl, host, argv, log_path, env):
    fh = open(log_path, "w")
    return cl.run_in(host, argv, stdout=fh, stderr=subprocess.STDOUT, env=env), str(log_path)


def run_compute(cl, solver, iters, workdir, env, concurrent, timeout):
    procs, outs = [], []
    for k in range(2 if concurrent else 1):
        out = workdir / f"compute{'2' if concurrent else '1'}.{k}.json"
        argv = [sys.executable, __file__, "role-compute", "--solver", solver, "--iters", iters,
                "--out", out]
        procs.append(_spawn(cl, k, argv, workdir / f"compute{'2' if concurrent else '1'}.{k}.log", env))
        outs.append(out)
    _wait_all(procs, timeout, "compute-only run")
    return [json.loads(o.read_text())["iteration_s"] for o in outs]


def run_comm(cl, solver, hosts, iters, workdir, env, timeout):
    procs, outs = [], []
    for k in range(2):
        out = workdir / f"comm.{k}.json"
        argv = [sys.executable, __file__, "role-comm", "--solver", solver, "--hosts", hosts,
                "--client-id", k, "--iters", iters, "--out", out]
        procs.append(_spawn(cl, k, argv, workdir / f"comm.{k}.log", env))
        outs.append(out)
    _wait_all(procs, timeout, "communication-only run")
    return [json.loads(o.read_text())["iteration_s"] for o in outs]


LAPSE = re.compile(r"Iteration (\d+), ([-0-9.e+]+) iter/s, ([-0-9.e+]+)s/(\d+) iters")


def run_train(cl, solver, hosts, overlap, workdir, env, timeout):
    tag = "wfbp" if overlap else "nooverlap"
    run_dir = workdir / tag
    run_dir.mkdir()
    procs = []
    for k in range(2):
        argv = [sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", solver, "--hosts", hosts,
                "--client-id", k, "--output-dir", run_dir, "--cpu", "--svb", "off"]
        if not overlap:
            argv.append("--no-overlap")
        procs.append(_spawn(cl, k, argv, run_dir / f"client{k}.log", env))
    _wait_all(procs, timeout, f"2-client training ({tag})")
    windows = []  # (iteration at the end of the window, seconds per iteration)
    for line in pathlib.Path(procs[0][1]).read_text().splitlines():
        m = LAPSE.search(line)
        if m and int(m.group(1)) > 0:
            windows.append((int(m.group(1)), float(m.group(3)) / int(m.group(4))))
    stats = [json.loads((run_dir / f"stats.client{k}.json").read_text()) for k in range(2)]
    return windows, stats


def mean_after(values, skip):
    v = values[skip:]
    return statistics.fmean(v) if v else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", default="1gbit", help="tbf cap of every link, both directions (tc syntax)")
    ap.add_argument("--fc-scale", type=float, default=1.0, help="scale fc6/fc7 widths (4096 at 1.0)")
    ap.add_argument("--window", type=int, default=4, help="iterations per timing window (= display)")
    ap.add_argument("--windows", type=int, default=3, help="timed windows after the warm-up window")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="OPENBLAS/OMP threads per process (default: the library's own)")
    ap.add_argument("--skip-alone", action="store_true", help="skip the single-process compute run")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "overlap.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, stats)")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per run before giving up")
    args = ap.parse_args(argv)

    from netns import NetnsCluster, NetnsUnavailable, check_available
    try:
        check_available()
    except NetnsUnavailable as e:
        print(f"bench/overlap.py skipped: {e}")
        return 0

    W, K = args.window, args.windows
    iters = W * (K + 1) + 1          # display at 0, W, ..., (K+1)W: K+1 windows, the first is warm-up
    warm = W                         # per-iteration series (compute-only, comm-only) skip this many
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="overlap-"))
    solver, width = write_job(workdir, args.fc_scale, iters, W)
    info = layout_info(solver)
    hosts = workdir / "hosts.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(args.blas_threads)
    print(f"net: CIFAR-10 quick convs (batch 32) + fc6 1024x{width}, fc7 {width}x{width}, fc8 {width}x1000 "
          f"(AlexNet fc: 9216x4096, 4096x4096, 4096x1000; fc-scale {args.fc_scale:g}); "
          f"{info['params'] / 1e6:.1f}M params = {info['bytes'] / 1e6:.0f} MB float32")
    print(f"links: tbf {args.rate} each direction; per iteration each link direction carries ~"
          f"{info['bytes'] / 1e6:.0f} MB (half of the gradients out + half of the values back, "
          f"for this worker and for the other worker's use of this shard)")
    t_start = time.time()
    load0 = os.getloadavg()
    try:
        with NetnsCluster(2, rate=args.rate) as cl:
            hosts.write_text("".join(f"{k} {ip} {PORT}\n" for k, ip in enumerate(cl.addresses)))
            res = {}
            runs = [("comm", lambda: run_comm(cl, solver, hosts, iters, workdir, env, args.timeout)),
                    ("compute2", lambda: run_compute(cl, solver, iters, workdir, env, True, args.timeout)),
                    ("nooverlap", lambda: run_train(cl, solver, hosts, False, workdir, env, args.timeout)),
                    ("wfbp", lambda: run_train(cl, solver, hosts, True, workdir, env, args.timeout))]
            if not args.skip_alone:
                runs.insert(1, ("compute1", lambda: run_compute(cl, solver, iters, workdir, env, False,
                                                               args.timeout)))
            wire = {}
            for name, fn in runs:
                t0 = time.time()
                before = [cl.link_bytes(k) for k in range(2)]
                res[name] = fn()
                after = [cl.link_bytes(k) for k in range(2)]
                # What actually crossed each capped link, per iteration (start-up included).
                wire[name] = [round((a["tx"] - b["tx"]) / iters / 1e6, 2) for a, b in zip(after, before)]
                print(f"  {name}: done in {time.time() - t0:.0f}s; link tx MB/iteration per host {wire[name]}",
                      flush=True)
    except NetnsUnavailable as e:
        print(f"bench/overlap.py skipped: {e}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(res, warm, W)
    doc = {
        "bench": "overlap", "rate": args.rate, "fc_scale": args.fc_scale, "fc_width": width,
        "params": info["params"], "bytes": info["bytes"], "window": W, "windows": K,
        "iterations": iters, "warmup_iterations": warm, "blas_threads": args.blas_threads,
        "loadavg_before": load0, "loadavg_after": os.getloadavg(), "wall_s": round(time.time() - t_start, 1),
        "cpu_count": os.cpu_count(), "link_tx_mb_per_iteration": wire, **summary,
        "raw": {"compute1": res.get("compute1"), "compute2": res["compute2"], "comm": res["comm"],
                "nooverlap_windows": res["nooverlap"][0], "wfbp_windows": res["wfbp"][0],
                "nooverlap_stats": [s["iterations"] for s in res["nooverlap"][1]],
                "wfbp_stats": [s["iterations"] for s in res["wfbp"][1]]},
    }
    print_table(doc)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {args.json}" + (f"; logs in {workdir}" if args.keep else ""))
    return 0


def _split(stats, warm):
    """Mean per-iteration compute / wait-for-params / clock seconds over both clients."""
    out = {}
    for key in ("compute_s", "wait_params_s", "clock_s"):
        vals = [it[key] for s in stats for it in s["iterations"][warm:]]
        out[key] = statistics.fmean(vals) if vals else float("nan")
    return out


def summarize(res, warm, W):
    comp1 = [mean_after(t, warm) for t in res["compute1"]] if res.get("compute1") else None
    comp2 = [mean_after(t, warm) for t in res["compute2"]]
    comm = [mean_after(t, warm) for t in res["comm"]]
    compute = max(comp2)           # the slower client sets the pace of a synchronous cluster
    communication = max(comm)
    nov = statistics.fmean(w for _, w in res["nooverlap"][0][1:])
    wf = statistics.fmean(w for _, w in res["wfbp"][0][1:])
    bound = max(compute, communication)
    return {
        "compute_alone_s": comp1[0] if comp1 else None,
        "compute_s": compute, "compute_per_client_s": comp2,
        "communication_s": communication, "communication_per_client_s": comm,
        "no_overlap_s": nov, "wfbp_s": wf,
        "no_overlap_split": _split(res["nooverlap"][1], warm),
        "wfbp_split": _split(res["wfbp"][1], warm),
        "sum_compute_comm_s": compute + communication,
        "max_compute_comm_s": bound,
        "wfbp_over_max": wf / bound, "no_overlap_over_max": nov / bound,
        "speedup_wfbp_vs_no_overlap": nov / wf,
        "target_ratio": 1.15, "target_met": wf / bound <= 1.15,
    }


def print_table(d):
    rows = []
    if d["compute_alone_s"] is not None:
        rows.append(("(a) compute only, 1 process alone", d["compute_alone_s"], ""))
    rows += [
        ("(a) compute only, 2 processes (= compute)", d["compute_s"],
         "per client " + ", ".join(f"{v:.3f}" for v in d["compute_per_client_s"])),
        ("(b) communication only (push+clock+pull)", d["communication_s"],
         "per client " + ", ".join(f"{v:.3f}" for v in d["communication_per_client_s"])),
        ("(c) 2 clients, --no-overlap", d["no_overlap_s"], _fmt_split(d["no_overlap_split"])),
        ("(d) 2 clients, wait-free backprop", d["wfbp_s"], _fmt_split(d["wfbp_split"])),
    ]
    print(f"\n{'run':46s} {'s/iter':>8s}  detail")
    for name, v, detail in rows:
        print(f"{name:46s} {v:8.3f}  {detail}")
    print(f"\nmax(compute, comm) = {d['max_compute_comm_s']:.3f} s, compute + comm = {d['sum_compute_comm_s']:.3f} s")
    print(f"wait-free / max = {d['wfbp_over_max']:.2f} (target <= {d['target_ratio']}: "
          f"{'met' if d['target_met'] else 'NOT met'}); no-overlap / max = {d['no_overlap_over_max']:.2f}; "
          f"speedup of wait-free over no-overlap = {d['speedup_wfbp_vs_no_overlap']:.2f}x")
    print(f"load average before/after: {d['loadavg_before'][0]:.1f} / {d['loadavg_after'][0]:.1f} "
          f"on {d['cpu_count']} cores (other processes skew absolute times)")


def _fmt_split(s):
    return f"compute {s['compute_s']:.3f} + wait params {s['wait_params_s']:.3f} + clock {s['clock_s']:.3f}"


def _role_main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["role-compute", "role-comm"])
    ap.add_argument("--solver", required=True)
    ap.add_argument("--hosts")
    ap.add_argument("--client-id", type=int, default=0)
    ap.add_argument("--iters", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    (role_compute if args.role == "role-compute" else role_comm)(args)
    return 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    if len(sys.argv) > 1 and sys.argv[1].startswith("role-"):
        sys.exit(_role_main(sys.argv[1:]))
    print(blas_env.describe(), flush=True)
    sys.exit(main())
