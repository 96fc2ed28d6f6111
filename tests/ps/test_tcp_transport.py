"""The TCP bulk data plane (poseidon_cli/ps/tcp_server.py + tcp_transport.py + tcp_wire.py): the gRPC
cluster tests again with Push / Pull payloads on plain sockets, plus its own failure modes.
Everything on 127.0.0.1 free ports."""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from poseidon_cli.errors import ClusterError
from poseidon_cli.ps import tcp_wire as W
from poseidon_cli.ps.client import PSClient
from poseidon_cli.ps.server import ShardServer
from poseidon_cli.ps.store import ShardStore
from poseidon_cli.ps.tcp_transport import TcpTransport
from poseidon_cli.ps.client import make_transport
from poseidon_cli.ps.protocol import GRADIENT, PROTOCOL_VERSION, VALUE
from toy_updaters import MomentumUpdater, SGDUpdater

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("ps_worker_proc.py")
PARAMS = [("conv.0", (8, 3, 5, 5)), ("conv.1", (8,)), ("fc.0", (100, 200)), ("fc.1", (100,))]
SPECS = [(n, s, "float32") for n, s in PARAMS]


@pytest.fixture
def shards():
    made = []

    def start(S, job="job", updater=lambda: MomentumUpdater(0.1, 0.9), data_plane="tcp", **kw):
        servers = [ShardServer(ShardStore(i, S, job, updater(), **kw), data_plane=data_plane) for i in range(S)]
        made.extend(servers)
        return [f"127.0.0.1:{s.start()}" for s in servers], servers

    yield start
    for s in made:
        s.stop(0)


def client(addrs, w, P, params=PARAMS, job="job", **kw):
    kw.setdefault("deadline_s", 5)
    kw.setdefault("heartbeat_s", 0.2)
    trs = [make_transport(a, i, job, "tcp") for i, a in enumerate(addrs)]
    assert all(isinstance(t, TcpTransport) for t in trs)
    return PSClient(trs, job, w, P, params, chunk_bytes=4096, **kw)


def run_threads(fn, n, timeout=30):
    errors = []

    def wrap(i):
        try:
            fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join(timeout) for t in ts]
    assert not any(t.is_alive() for t in ts), "a worker hung"
    if errors:
        raise errors[0]


def test_bsp_over_tcp_equals_one_momentum_step_on_the_mean_gradient_per_clock(shards):
    (addrs, servers) = shards(3)
    P, T, lr, mom = 2, 3, 0.1, 0.9
    rng = np.random.default_rng(5)
    init = {n: rng.standard_normal(s).astype(np.float32) for n, s in PARAMS}
    grads = {(w, t, n): rng.standard_normal(s).astype(np.float32) for w in range(P) for t in range(T) for n, s in PARAMS}
    seen = {w: [] for w in range(P)}

    def run(w):
        c = client(addrs, w, P)
        c.connect()
        if w == 0:
            c.init_params(init)
        for t in range(T):
            seen[w].append(c.pull_all())
            for n, s in PARAMS:
                c.push(n, grads[(w, t, n)])
            c.clock()
        seen[w].append(c.pull_all())
        c.finish()

    run_threads(run, P)
    # Independent numpy reference (float64): Caffe momentum SGD on the mean gradient, once per clock.
    ref = {n: init[n].astype(np.float64) for n in init}
    hist = {n: np.zeros_like(ref[n]) for n in init}
    for t in range(T + 1):
        for w in range(P):
            for n in ref:
                np.testing.assert_allclose(seen[w][t][n], ref[n], rtol=1e-5, atol=1e-6)
        if t < T:
            for n in ref:
                hist[n] = mom * hist[n] + lr * np.mean([grads[(w, t, n)] for w in range(P)], axis=0)
                ref[n] = ref[n] - hist[n]
    # The payloads really took the TCP data plane: the shards' data listeners saw connections.
    assert all(s.data_port for s in servers)


def test_duplicate_push_over_tcp_is_ignored_and_counted(shards):
    (addrs, servers) = shards(1, updater=lambda: SGDUpdater(1.0))
    tr = TcpTransport(addrs[0], 0, "job")
    tr.health(5)
    for w in range(2):
        tr.register(w, "job", PROTOCOL_VERSION, 2, 0, 1, 4096, [("p", (10,), "float32")])
    tr.push(0, 0, [(0, VALUE, np.zeros(10, np.float32))], 5)
    g0 = np.arange(10, dtype=np.float32)
    assert tr.push(0, 0, [(0, GRADIENT, g0)], 5) == (1, 0)
    assert tr.push(0, 0, [(0, GRADIENT, g0 * 7)], 5) == (0, 1)        # a retry: ignored
    assert tr.push(1, 0, [(0, GRADIENT, np.ones(10, np.float32))], 5) == (1, 0)
    assert tr.push(1, 0, [(0, GRADIENT, np.ones(10, np.float32))], 5) == (0, 1)  # repeat of an applied clock
    for w in range(2):
        tr.clock(w, 1, 5)
    (key, applied, buf), = list(tr.pull(0, 1, [0], 0, 5))
    assert (key, applied) == (0, 1)
    np.testing.assert_allclose(np.frombuffer(buf, np.float32), -(g0 + 1) / 2)
    assert servers[0].store.duplicates == 2
    tr.close()


def test_fast_worker_blocks_exactly_s_clocks_ahead_over_tcp(shards):
    s, k = 1, 1
    (addrs, _) = shards(2, updater=lambda: SGDUpdater(0.01))
    release = threading.Event()
    clients = [client(addrs, w, 2, staleness=s, deadline_s=10) for w in range(2)]

    def run(w):
        c = clients[w]
        c.connect()
        if w == 0:
            c.init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
        for t in range(k + s + 3):
            c.pull_all()
            if w == 1 and t == k:
                assert release.wait(20)
            for n, sh in PARAMS:
                c.push(n, np.ones(sh, np.float32))
            c.clock()
        c.finish()

    th = threading.Thread(target=run_threads, args=(run, 2))
    th.start()
    t_end = time.monotonic() + 10
    while clients[0].clock_value < k + s + 1 and time.monotonic() < t_end:
        time.sleep(0.01)
    time.sleep(0.3)  # room to run further if the bound were broken
    assert (clients[1].clock_value, clients[0].clock_value) == (k, k + s + 1)
    release.set()
    th.join(30)
    assert clients[0].clock_value == clients[1].clock_value == k + s + 3


def test_pull_deadline_over_tcp_names_the_worker_waited_for(shards):
    (addrs, _) = shards(2, updater=lambda: SGDUpdater(0.1))
    a, b = client(addrs, 0, 2, deadline_s=0.4), client(addrs, 1, 2, deadline_s=0.4)
    a.connect()
    b.connect()
    a.init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
    for n, sh in PARAMS:
        a.push(n, np.ones(sh, np.float32)).result()
    a.clock()
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"worker 0's pull at clock 1 \(staleness 0\) waited 0\.4s; for worker\(s\) \[1\]"):
        a.pull("fc.0").result()
    assert time.monotonic() - t0 < 1.3  # the shard's answer, not the socket timeout (deadline + 1 s)
    # The error frame left the connection in sync: the same pooled connections keep working.
    for n, sh in PARAMS:
        b.push(n, np.ones(sh, np.float32)).result()
    b.clock()
    np.testing.assert_allclose(a.pull("fc.0").result(), -0.1)
    a.close()
    b.close()


def test_store_errors_come_back_as_one_line_and_the_connection_stays_usable(shards):
    (addrs, servers) = shards(1)
    tr = TcpTransport(addrs[0], 0, "job")
    tr.health(5)
    with pytest.raises(ClusterError, match="shard 0: no worker has registered yet"):
        tr.push(0, 0, [(0, GRADIENT, np.zeros(4, np.float32))], 5)
    tr.register(0, "job", PROTOCOL_VERSION, 1, 0, 1, 4096, [("p", (4,), "float32")])
    with pytest.raises(ClusterError, match="chunk 0 announced 12 bytes; it holds 16"):
        tr.push(0, 0, [(0, VALUE, np.zeros(3, np.float32)), (0, VALUE, np.zeros(4, np.float32))], 5)
    other = TcpTransport(addrs[0], 0, "another-job")
    other.health(5)
    with pytest.raises(ClusterError, match="serves job 'job'; worker 0 sent a message for job 'another-job'"):
        list(other.pull(0, 0, [0], 0, 5))
    assert len(tr._idle) == 1  # every error above was a reply frame: the connection was kept
    assert tr.push(0, 0, [(0, VALUE, np.full(4, 3, np.float32))], 5) == (1, 0)
    assert np.frombuffer(list(tr.pull(0, 0, [0], 0, 5))[0][2], np.float32).tolist() == [3] * 4
    tr.close()
    other.close()


def test_values_written_during_a_send_are_sent_again_from_a_consistent_copy(shards, monkeypatch):
    """The shard sends a chunk straight from the store and checks its version afterwards; simulate an
    update landing during that send: the worker must end with the new values, not the torn ones."""
    (addrs, servers) = shards(1)
    store = servers[0].store
    real = ShardStore.unchanged_since
    raced = []

    def racing(self, key, version):
        if not raced:
            raced.append(key)
            self.set_value(key, np.full(1024, 9, np.float32))  # a write after the send, before the check
        return real(self, key, version)

    monkeypatch.setattr(ShardStore, "unchanged_since", racing)
    c = client(addrs, 0, 1, params=[("p", (2048,))])
    c.connect()
    c.init_params({"p": np.zeros(2048, np.float32)})
    got = c.pull("p").result()
    assert raced and store.values()[raced[0]][0] == 9
    np.testing.assert_array_equal(got, np.concatenate([store.values()[k] for k in sorted(store.values())]))
    c.close()


def test_broken_and_silent_shards_are_named_with_their_addresses(shards):
    (addrs, servers) = shards(1)
    tr = TcpTransport(addrs[0], 0, "job")
    tr.health(5)
    tr.register(0, "job", PROTOCOL_VERSION, 1, 0, 1, 4096, [("p", (4,), "float32")])
    data = f"127.0.0.1:{servers[0].data_port}"
    servers[0].stop(0)
    with pytest.raises(ClusterError, match=rf"shard 0 at {addrs[0]} \(data {data}\).*(broke|cannot open)"):
        tr.push(0, 0, [(0, VALUE, np.zeros(4, np.float32))], 2)
    tr.close()
    # A data port that accepts but never answers: the call's deadline, naming the shard.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        (addrs2, _) = shards(1)
        tr = TcpTransport(addrs2[0], 0, "job")
        tr.health(5)
        tr._data_port = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=rf"shard 0 at {addrs2[0]} .* did not answer pull at clock 0 within 1\.2s"):
            list(tr.pull(0, 0, [0], 0, 0.2))
        assert time.monotonic() - t0 < 3
        tr.close()


def test_a_shard_without_the_tcp_data_plane_says_so(shards):
    (addrs, _) = shards(1, data_plane="grpc")
    with pytest.raises(ClusterError, match=r"shard 0 at .* serves no TCP data plane"):
        TcpTransport(addrs[0], 0, "job").health(5)


def test_a_data_connection_cut_mid_request_marks_the_worker_lost(shards):
    (addrs, servers) = shards(1)
    store = servers[0].store
    store.register(3, "job", PROTOCOL_VERSION, 4, 0, 1, 4096, [("p", (1024,), "float32")])
    with socket.create_connection(("127.0.0.1", servers[0].data_port), timeout=5) as s:
        job = b"job"
        s.sendall(W.REQUEST.pack(W.MAGIC, W.OP_PUSH, len(job), 3, 1, 0, 0, 5.0, 1) + job
                  + W.ITEM.pack(0, GRADIENT, 4096) + b"\0" * 100)  # then the process "dies"
    t_end = time.monotonic() + 5
    while 3 not in store.health()["dead_workers"] and time.monotonic() < t_end:
        time.sleep(0.01)
    assert "worker 3: its data connection" in store.health()["error"]


def _wait_file(path, proc, timeout=20):
    t_end, delay = time.monotonic() + timeout, 0.01
    while time.monotonic() < t_end:
        if path.exists() and path.read_text():
            return path.read_text()
        assert proc.poll() is None, f"process exited early: {proc.returncode}"
        time.sleep(delay)
        delay = min(2 * delay, 0.2)
    raise AssertionError(f"{path} not written in {timeout}s")


def test_killed_worker_process_stops_the_others_naming_it_over_tcp(tmp_path):
    """Shards and workers are separate processes using the TCP data plane; kill -9 worker 1 mid-run."""
    S, P, deadline = 2, 3, 4.0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PS_DATA_PLANE": "tcp"}
    procs = []
    try:
        ports = []
        for i in range(S):
            pf = tmp_path / f"shard{i}.port"
            p = subprocess.Popen([sys.executable, "-m", "poseidon_cli.ps.server", "--job-id", "kill",
                                  "--shard-id", str(i), "--num-shards", str(S), "--port", "0",
                                  "--port-file", str(pf), "--deadline-s", str(deadline),
                                  "--heartbeat-timeout-s", "2", "--data-plane", "tcp"], cwd=ROOT, env=env)
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
            assert p.returncode == 3, err
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


def test_the_connection_pool_shrinks_back_after_a_peak_of_concurrent_calls(shards, monkeypatch):
    """Connections opened for a burst of concurrent calls are closed once they have been idle for
    IDLE_REUSE_S, also when they sit under newer ones in the pool, and the shard frees their threads."""
    import poseidon_cli.ps.tcp_transport as tt
    (addrs, servers) = shards(1)
    tr = TcpTransport(addrs[0], 0, "job")
    tr.register(0, "job", PROTOCOL_VERSION, 1, 0, 1, 4096, [("p", (4,), "float32")])
    held = [tr._acquire(time.monotonic() + 5, "test") for _ in range(4)]   # a peak of 4 calls
    for s in held:
        tr._release(s, True)
    assert len(tr._idle) == 4
    data = servers[0].data_server
    deadline = time.monotonic() + 5
    while len(data._conns) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(data._conns) == 4
    monkeypatch.setattr(tt, "IDLE_REUSE_S", 1.0)
    for _ in range(2):   # one call at a time from now on: only the newest connection is reused
        time.sleep(0.6)
        tr.push(0, 0, [(0, VALUE, np.full(4, 2, np.float32))], 5)
    # the newest connection is 0.6 s idle (kept); the three under it, 1.2 s (closed on release)
    assert len(tr._idle) == 1
    deadline = time.monotonic() + 5
    while len(data._conns) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(data._conns) == 1   # the shard saw the three closes and ended their threads
    tr.close()


def test_pools_start_their_threads_up_front_and_a_client_keeps_its_thread_count(shards):
    """started_pool: the threads exist before the first task; a PSClient's pool is complete at
    construction, so a run's thread count does not creep up at each new peak of calls."""
    from poseidon_cli.ps.pools import started_pool
    probes = lambda: len([t for t in threading.enumerate() if t.name.startswith("probe")])
    pool = started_pool(8, 5, thread_name_prefix="probe")
    assert probes() == 5
    assert [f.result(5) for f in [pool.submit(lambda: 7) for _ in range(5)]] == [7] * 5
    assert probes() == 5      # idle started threads took them
    pool.shutdown()
    (addrs, servers) = shards(2)
    c = client(addrs, 0, 1)
    c.connect()
    c.init_params({n: np.zeros(s, np.float32) for n, s in PARAMS})
    mine = lambda: len([t for t in threading.enumerate() if t.name.startswith("ps-w0")])
    started = mine()
    assert started >= 8
    for _ in range(3):   # every parameter pushed and pulled at once, clock after clock: no new thread
        for n, s in PARAMS:
            c.push(n, np.ones(s, np.float32))
        c.clock()
        c.pull_all()
    assert mine() == started
    c.finish()
