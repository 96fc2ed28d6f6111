"""gRPC shard servers (poseidon_cli/ps/server.py + grpc_transport.py) on 127.0.0.1 free ports."""
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from poseidon_cli.errors import ClusterError
from poseidon_cli.ps.client import PSClient
from poseidon_cli.ps.grpc_transport import GrpcTransport
from poseidon_cli.ps.server import ShardServer
from poseidon_cli.ps.store import ShardStore
from toy_updaters import MomentumUpdater, SGDUpdater

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("ps_worker_proc.py")
PARAMS = [("conv.0", (8, 3, 5, 5)), ("conv.1", (8,)), ("fc.0", (100, 200)), ("fc.1", (100,))]


@pytest.fixture
def shards():
    made = []

    def start(S, job="job", **kw):
        servers = [ShardServer(ShardStore(i, S, job, MomentumUpdater(0.1, 0.9), **kw)) for i in range(S)]
        made.extend(servers)
        return [f"127.0.0.1:{s.start()}" for s in servers]

    yield start
    for s in made:
        s.stop(0)


def client(addrs, w, P, params=PARAMS, job="job", **kw):
    kw.setdefault("deadline_s", 5)
    kw.setdefault("heartbeat_s", 0.2)
    return PSClient([GrpcTransport(a, i, job) for i, a in enumerate(addrs)], job, w, P, params,
                    chunk_bytes=4096, **kw)


def test_bsp_over_grpc_matches_in_process_reference(shards):
    addrs = shards(3)
    P, T = 2, 3
    out = {}

    def run(w):
        c = client(addrs, w, P)
        c.connect()
        if w == 0:
            c.init_params({n: np.ones(s, np.float32) for n, s in PARAMS})
        for t in range(T):
            c.pull_all()
            for n, s in PARAMS:
                c.push(n, np.full(s, w + t, np.float32))
            c.clock()
        out[w] = c.pull_all()
        c.finish()

    ts = [threading.Thread(target=run, args=(w,)) for w in range(P)]
    [t.start() for t in ts]
    [t.join(30) for t in ts]
    h, v = 0.0, 1.0
    for t in range(T):
        h = 0.9 * h + 0.1 * np.mean([w + t for w in range(P)])
        v -= h
    for w in range(P):
        for n in out[w]:
            np.testing.assert_allclose(out[w][n], v, rtol=1e-5)


def test_register_rejections_travel_over_grpc_naming_the_difference(shards):
    addrs = shards(2)
    a = client(addrs, 0, 2)
    a.connect()
    bad_shape = [("conv.0", (8, 3, 5, 5)), ("conv.1", (8,)), ("fc.0", (100, 201)), ("fc.1", (100,))]
    with pytest.raises(ClusterError, match=r"'fc.0' has shape \[100, 201\]"):
        client(addrs, 1, 2, params=bad_shape).connect()
    with pytest.raises(ClusterError, match="duplicate worker id"):
        client(addrs, 0, 2).connect()
    with pytest.raises(ClusterError, match="job 'other'"):
        client(addrs, 1, 2, job="other").connect()
    c = client(addrs, 1, 2, protocol_version=99)
    with pytest.raises(ClusterError, match="protocol version 99"):
        c.connect()
    a.close()


def test_connect_retries_then_names_the_missing_shard(shards):
    addrs = shards(1)
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=rf"shard 1 at {dead}"):
        client(addrs + [dead], 0, 1, connect_timeout_s=1.0).connect()
    assert time.monotonic() - t0 < 5


def _wait_file(path, proc, timeout=20):
    t_end, delay = time.monotonic() + timeout, 0.01
    while time.monotonic() < t_end:
        if path.exists() and path.read_text():
            return path.read_text()
        assert proc.poll() is None, f"process exited early: {proc.returncode}"
        time.sleep(delay)
        delay = min(2 * delay, 0.2)
    raise AssertionError(f"{path} not written in {timeout}s")


def test_killed_worker_process_stops_the_others_naming_it(tmp_path):
    """Shards and workers are separate processes; kill -9 worker 1 mid-run."""
    S, P, deadline = 2, 3, 4.0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    try:
        ports = []
        for i in range(S):
            pf = tmp_path / f"shard{i}.port"
            p = subprocess.Popen([sys.executable, "-m", "poseidon_cli.ps.server", "--job-id", "kill",
                                  "--shard-id", str(i), "--num-shards", str(S), "--port", "0",
                                  "--port-file", str(pf), "--deadline-s", str(deadline),
                                  "--heartbeat-timeout-s", "2"], cwd=ROOT, env=env)
            procs.append(p)
            ports.append((pf, p))
        addrs = [f"127.0.0.1:{_wait_file(pf, p)}" for pf, p in ports]
        workers = []
        for w in range(P):
            prog = tmp_path / f"w{w}.progress"
            p = subprocess.Popen([sys.executable, str(WORKER), "kill", str(w), str(P), "100000", str(deadline),
                                  str(prog), *addrs], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            workers.append((p, prog))
        t_end = time.monotonic() + 30
        while not (workers[1][1].exists() and workers[1][1].read_text() and int(workers[1][1].read_text()) >= 3):
            assert time.monotonic() < t_end, "workers made no progress"
            assert all(p.poll() is None for p, _ in workers)
            time.sleep(0.02)
        os.kill(workers[1][0].pid, signal.SIGKILL)
        t0 = time.monotonic()
        for w in (0, 2):
            p = workers[w][0]
            _, err = p.communicate(timeout=deadline + 6)
            print(f"worker {w} stderr: {err.strip()}")
            assert p.returncode != 0, err
            assert "worker 1" in err, err
        assert time.monotonic() - t0 < deadline + 6
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert all(p.poll() is not None for p in procs), "a process was left behind"
