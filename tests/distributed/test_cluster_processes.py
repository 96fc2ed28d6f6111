"""Real clusters of local processes over gRPC: `poseidon train --hosts`."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job
from poseidon_cli import config
from poseidon_cli.solver.log import TrainLog
from poseidon_cli.solver.solver import Solver


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_hosts(path, n):
    path.write_text("".join(f"{i} 127.0.0.1 {p}\n" for i, p in enumerate(free_ports(n))))
    return path


def poseidon(*args, **kw):
    return subprocess.run([sys.executable, "-m", "poseidon_cli.cli", *args], capture_output=True,
                          text=True, **kw)


@pytest.mark.parametrize("solver_type,clients", [("SGD", 2), ("Adam", 2), ("SGD", 4), ("Adam", 4)])
def test_processes_over_grpc_match_single_node(tmp_path, solver_type, clients):
    """P clients of batch B (local processes, PS shards over gRPC) follow one node of batch P*B."""
    paths = make_digits(tmp_path)
    lr = 0.05 if solver_type == "SGD" else 0.01
    single = write_job(tmp_path / "single", paths, batch=4 * clients, solver_type=solver_type, lr=lr)
    dist = write_job(tmp_path / "dist", paths, batch=4, solver_type=solver_type, lr=lr)
    Solver(config.load_solver_param(single), solver_path=single, log=TrainLog(streams=[])).solve()
    hosts = write_hosts(tmp_path / "hosts.txt", clients)
    r = poseidon("train", "--solver", dist, "--hosts", str(hosts), "--deadline", "60", timeout=300)
    run_dir = tmp_path / "dist" / f"tiny.S0.M{clients}.T1"
    other = (run_dir / "client_1.log").read_text()[-3000:] if (run_dir / "client_1.log").exists() else ""
    assert r.returncode == 0, r.stderr[-3000:] + "\n--- client 1 ---\n" + other
    assert "Optimization Done." in r.stderr + r.stdout
    ref = read_caffemodel(tmp_path / "single/snap/tiny_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "dist/snap/tiny_iter_20.caffemodel")
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    assert (run_dir / "client_1.log").exists()
    import json
    stats = json.loads((run_dir / "stats.client1.json").read_text())
    assert len(stats["iterations"]) == 20
    sent = {p["param"]: p["bytes_sent"] for p in stats["params"]}
    assert sent["ip1/0"] == 20 * 10 * 4 * 6 * 6 * 4  # 20 pushes of a 10x144 float32 gradient


def test_killed_client_stops_the_others_naming_it(tmp_path):
    paths = make_digits(tmp_path)
    dist = write_job(tmp_path / "dist", paths, batch=4, iters=100000)
    hosts = write_hosts(tmp_path / "hosts.txt", 3)
    deadline = 8
    procs = [subprocess.Popen([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", dist,
                               "--hosts", str(hosts), "--client-id", str(k), "--deadline", str(deadline),
                               "--output-dir", str(tmp_path / "run")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(3)]
    try:
        # let the three clients connect and train for a while (max_iter is huge)
        t_end = time.monotonic() + 10
        while time.monotonic() < t_end and all(p.poll() is None for p in procs):
            time.sleep(0.25)
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        procs[2].send_signal(signal.SIGKILL)
        t_kill = time.monotonic()
        outs = []
        for p in procs[:2]:
            out, err = p.communicate(timeout=deadline + 30)
            outs.append((p.returncode, err))
        elapsed = time.monotonic() - t_kill
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rc, err in outs:
        assert rc != 0
        last = err.strip().splitlines()[-1]
        assert "poseidon: error:" in last and "2" in last, last
        # client k runs shard k and worker k: either side of the loss may be reported
        assert "client 2" in last and ("shard 2" in last or "worker(s) [2]" in last), last
        assert "Traceback" not in err
    assert elapsed < deadline + 25
    assert all(p.poll() is not None for p in procs)


@pytest.mark.parametrize("svb", ["off", "on"])
def test_two_workers_per_client_match_single_node(tmp_path, svb):
    """2 clients x 2 worker processes (as with --gpu 0,1) = 4 PS workers of batch 4 follow one
    node of batch 16; worker 1 of each client runs in its own process with its own log. With
    --svb on the InnerProduct weight travels as sufficient factors between all 4 workers (worker 1
    of each client on a port of its own, found through its client's worker 0)."""
    paths = make_digits(tmp_path)
    single = write_job(tmp_path / "single", paths, batch=16)
    dist = write_job(tmp_path / "dist", paths, batch=4)
    Solver(config.load_solver_param(single), solver_path=single, log=TrainLog(streams=[])).solve()
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    r = poseidon("train", "--solver", dist, "--hosts", str(hosts), "--workers-per-client", "2",
                 "--svb", svb, "--deadline", "60", timeout=300)
    run_dir = tmp_path / "dist" / "tiny.S0.M2.T2"
    logs = {p.name: p.read_text()[-1500:] for p in run_dir.glob("*.log")} if run_dir.exists() else {}
    assert r.returncode == 0, r.stderr[-3000:] + str(logs)
    ref = read_caffemodel(tmp_path / "single/snap/tiny_iter_20.caffemodel")
    got = read_caffemodel(tmp_path / "dist/snap/tiny_iter_20.caffemodel")
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    assert (run_dir / "client_0.worker_1.log").exists() and (run_dir / "client_1.worker_1.log").exists()
    assert (run_dir / "stats.client1.worker1.json").exists()
    stats = [json.loads((run_dir / f"stats.client{k}.worker{t}.json").read_text())
             for k in (0, 1) for t in (0, 1)]
    for st in stats:
        sfb_rows = {row["param"]: row for row in st["sfb_layers"]}
        if svb == "off":
            assert not sfb_rows
        else:
            # every worker sent its factors (4 rows x (10 outputs + 4*6*6 inputs) float32) to
            # each of the 3 others and received theirs, for each of the 20 clocks
            row = sfb_rows["ip1/0"]
            assert row["bytes_sent"] == row["bytes_received"] == 20 * 3 * 4 * (10 + 144) * 4
