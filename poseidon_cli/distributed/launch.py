"""``poseidon train --hosts``: decide which client this process is, or start them all locally.

- With a client id (``--client-id``, a launcher's rank variable, or one local address in the hosts
  file) this process runs that client: one PS shard + one worker (``worker.run_client``).
- Without one, when every hosts-file line is a loopback address, this process becomes a local
  launcher: it starts every client as a child process, shows client 0's output, sends the others to
  ``<run dir>/client_<k>.log``, and stops every child when one fails or on Ctrl-C.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from .. import config
from ..errors import ClusterError
from .hosts import all_loopback, discover_client_id, parse_hosts, run_dir_name

#: options forwarded verbatim to every child (name -> CLI flag)
_FORWARD = {
    "staleness": "--staleness", "svb": "--svb", "gpu": "--gpu", "snapshot": "--snapshot",
    "weights": "--weights", "sigint_effect": "--sigint-effect", "sighup_effect": "--sighup-effect",
    "deadline": "--deadline", "workers_per_client": "--workers-per-client",
    "emulate_compute": "--emulate-compute", "dilation": "--dilation", "jitter": "--jitter",
}


def resolve_run_dir(opts, num_clients: int) -> str:
    """``<output-dir or solver folder>/<net>.S<s>.M<clients>.T<workers per client>``, unless the
    user's --output-dir already is such a folder."""
    solver = config.load_solver_param(opts["solver"])
    net_path = solver.net or solver.train_net
    name = "net"
    if net_path:
        try:
            name = config.load_net_param(net_path, resolve=False).name or os.path.splitext(
                os.path.basename(net_path))[0]
        except Exception:  # the worker reports a bad net itself, with the full message
            name = os.path.splitext(os.path.basename(net_path))[0]
    elif solver.HasField("net_param") or solver.HasField("train_net_param"):
        name = (solver.net_param.name or solver.train_net_param.name) or name
    staleness = opts.get("staleness") or 0
    base = opts.get("output_dir") or os.path.dirname(os.path.abspath(opts["solver"]))
    return os.path.join(base, run_dir_name(name, staleness, num_clients, workers_per_client(opts)))


def workers_per_client(opts) -> int:
    """T: ``--workers-per-client``, else one worker per ``--gpu`` id, else 1."""
    gpus = [g for g in (opts.get("gpu") or "").split(",") if g.strip()]
    t = opts.get("workers_per_client")
    if t is None:
        return max(1, len(gpus))
    if t < 1:
        raise ClusterError(f"--workers-per-client must be >= 1, got {t}")
    if len(gpus) > 1 and t != len(gpus):
        raise ClusterError(f"--workers-per-client {t} but {len(gpus)} GPU ids in --gpu {opts.get('gpu')}",
                           "give one GPU id per worker")
    return t


def train_distributed(**opts) -> int:
    hosts = parse_hosts(opts["hosts"])
    cid = discover_client_id(hosts, opts.get("client_id"))
    if cid is None:
        if all_loopback(hosts):
            return spawn_local(opts, hosts)
        raise ClusterError(
            f"{opts['hosts']}: cannot tell which line is this machine",
            "pass --client-id K, or start through mpirun/srun/a Kubernetes indexed job")
    from .worker import run_client  # imported late: needs grpc and the engine
    return run_client(client_id=cid, hosts=hosts, opts=opts)


def child_argv(opts, client_id: int, run_dir: str) -> list[str]:
    argv = [sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", opts["solver"],
            "--hosts", opts["hosts"], "--client-id", str(client_id), "--output-dir", run_dir]
    for key, flag in _FORWARD.items():
        value = opts.get(key)
        if value is not None and value is not False:
            argv += [flag, str(value)]
    if opts.get("cpu"):
        argv.append("--cpu")
    if opts.get("no_overlap"):
        argv.append("--no-overlap")
    return argv


def spawn_local(opts, hosts, poll_s: float = 0.1) -> int:
    """Run every client as a local child; return the first failing exit code (0 if all pass)."""
    run_dir = resolve_run_dir(opts, len(hosts))
    os.makedirs(run_dir, exist_ok=True)
    children, logs = [], []
    print(f"poseidon: starting {len(hosts)} local clients; logs of clients 1..{len(hosts) - 1} "
          f"in {run_dir}/client_<k>.log", file=sys.stderr, flush=True)
    try:
        for h in hosts:
            argv = child_argv(opts, h.client_id, run_dir)
            if h.client_id == 0:
                out = None  # inherit: client 0's log is the user's terminal
            else:
                out = open(os.path.join(run_dir, f"client_{h.client_id}.log"), "wb")
                logs.append(out)
            children.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None))
        return _supervise(children, hosts, opts.get("deadline"), poll_s)
    except KeyboardInterrupt:
        _stop_all(children, signal.SIGINT, grace_s=15.0)
        print("poseidon: interrupted; every client stopped", file=sys.stderr)
        return 130
    finally:
        _stop_all(children, signal.SIGTERM, grace_s=5.0)
        for fh in logs:
            fh.close()


def _supervise(children, hosts, deadline, poll_s) -> int:
    failed_at, first_rc, first_bad = None, 0, None
    # Once one client failed, the others get this long to notice (they name the dead peer in
    # their own message) before they are stopped.
    grace = (deadline or 60.0) + 10.0
    while True:
        codes = [c.poll() for c in children]
        for i, rc in enumerate(codes):
            if rc not in (None, 0) and first_bad is None:
                first_bad, first_rc, failed_at = i, rc, time.monotonic()
        if all(rc is not None for rc in codes):
            break
        if failed_at is not None and time.monotonic() - failed_at > grace:
            break
        time.sleep(poll_s)
    if first_bad is not None:
        print(f"poseidon: client {hosts[first_bad].client_id} ({hosts[first_bad].address}) exited "
              f"with code {first_rc}; stopping the others", file=sys.stderr, flush=True)
        return first_rc if first_rc > 0 else 1
    return 0


def _stop_all(children, sig, grace_s: float):
    live = [c for c in children if c.poll() is None]
    for c in live:
        try:
            c.send_signal(sig)
        except ProcessLookupError:
            pass
    end = time.monotonic() + grace_s
    for c in live:
        try:
            c.wait(timeout=max(0.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
