"""The job secret and TLS (poseidon_cli/ps/auth.py) on both planes of a shard, as a stranger on the
same network would try them: well-formed messages of the right job without the secret, spoofed
heartbeats and data headers, replayed credentials, announced sizes, idle connections, and a TLS
client whose certificate another CA signed. Everything on 127.0.0.1 free ports."""
import io
import shutil
import socket
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

from poseidon_cli._proto import ps_pb2
from poseidon_cli.errors import ClusterError
from poseidon_cli.ps import auth
from poseidon_cli.ps import tcp_server
from poseidon_cli.ps import tcp_wire as W
from poseidon_cli.ps.client import PSClient, make_transport
from poseidon_cli.ps.protocol import PROTOCOL_VERSION, SERVICE
from poseidon_cli.ps.server import ShardServer
from poseidon_cli.ps.store import ShardStore
from tls_helpers import make_pki
from toy_updaters import SGDUpdater

JOB = "poseidon-0123456789ab"
SECRET = b"s" * 32
PARAMS = [("w", (64, 32)), ("b", (64,))]


def security(secret=SECRET, tls=None):
    return auth.Security.for_job(secret, JOB, tls)


@pytest.fixture
def cluster():
    """``start(S, sec)`` -> (addresses, servers) of S shards serving ``sec``."""
    made = []

    def start(S=1, sec=None, handlers=(), **kw):
        sec = sec or security()
        servers = [ShardServer(ShardStore(i, S, JOB, SGDUpdater(0.1), deadline_s=5), security=sec,
                               **kw) for i in range(S)]
        for s in servers:
            s.add_generic_handlers([h() for h in handlers])
        made.extend(servers)
        return [f"127.0.0.1:{s.start()}" for s in servers], servers

    yield start
    for s in made:
        s.stop(0)


def clients(addrs, P=2, sec=None, **kw):
    sec = sec or security()
    kw.setdefault("deadline_s", 5)
    kw.setdefault("heartbeat_s", 0.2)
    return [PSClient([make_transport(a, i, JOB, "tcp", security=sec) for i, a in enumerate(addrs)],
                     JOB, w, P, PARAMS, chunk_bytes=4096, **kw) for w in range(P)]


def train(cs, clocks, start=0, pause=None):
    """Every client pushes ones for ``clocks`` clocks (in threads); returns the final value of w
    as worker 0 sees it. ``pause(clock)`` runs in worker 0 before each clock's push."""
    errors = []

    def run(c):
        try:
            for t in range(start, start + clocks):
                if pause is not None and c.worker_id == 0:
                    pause(t)
                c.pull("w").result(10)
                c.push("w", np.ones((64, 32), np.float32))
                c.push("b", np.ones(64, np.float32))
                c.clock()
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in cs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    if errors:
        raise errors[0]
    return cs[0].pull("w").result(10)


def together(cs, what):
    threads = [threading.Thread(target=getattr(c, what)) for c in cs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)


def finish(cs):
    together(cs, "finish")


def connect(cs):
    together(cs, "connect")
    cs[0].init_params({"w": np.zeros((64, 32), np.float32), "b": np.zeros(64, np.float32)})


def stranger_calls():
    """(method, request bytes, kind) for every method a shard serves, each a well-formed message
    of the right job, as a stranger who learnt the job id would send."""
    h = ps_pb2.Header(job_id=JOB, worker_id=1, clock=0, protocol_version=PROTOCOL_VERSION)
    reg = ps_pb2.RegisterRequest(header=h, num_workers=2, staleness=0, num_shards=1, chunk_bytes=4096,
                                 params=[ps_pb2.ParamSpec(name="w", shape=[64, 32], dtype="float32")])
    chunk = ps_pb2.Chunk(header=h, key=0, kind=ps_pb2.GRADIENT, data=b"\0" * 16).SerializeToString()
    s = f"/{SERVICE}/"
    return [
        (s + "Register", reg.SerializeToString(), "uu"),
        (s + "Push", [chunk], "su"),
        (s + "Pull", ps_pb2.PullRequest(header=h, keys=[0]).SerializeToString(), "us"),
        (s + "Clock", ps_pb2.ClockRequest(header=h).SerializeToString(), "uu"),
        (s + "Barrier", ps_pb2.BarrierRequest(header=h, barrier_id=0).SerializeToString(), "uu"),
        (s + "GetSolverState", ps_pb2.SolverStateRequest(header=h).SerializeToString(), "us"),
        (s + "SetSolverState", [ps_pb2.SolverStateChunk(header=h, key=0, slot="m", dtype="float32",
                                                        shape=[1], data=b"\0" * 4).SerializeToString()],
         "su"),
        (s + "Shutdown", ps_pb2.ShutdownRequest(header=h, stop_server=True).SerializeToString(), "uu"),
        (s + "Health", ps_pb2.HealthRequest(header=h).SerializeToString(), "uu"),
        (s + "Heartbeat", [ps_pb2.HealthRequest(header=h).SerializeToString()], "su"),
        ("/poseidon.ps.DataPlane/Endpoint", b"", "uu"),
        ("/poseidon.sfb.Directory/Lookup", f"{JOB}|1".encode(), "uu"),
        ("/poseidon.sfb.FactorBroadcast/Send", [b""], "su"),
    ]


def call(channel, method, request, kind, timeout=5):
    if kind == "uu":
        return channel.unary_unary(method)(request, timeout=timeout)
    if kind == "us":
        return list(channel.unary_stream(method)(request, timeout=timeout))
    return channel.stream_unary(method)(iter(request), timeout=timeout)


# ------------------------------------------------------------------------ the secret itself
def test_tokens_are_bound_to_method_time_and_key_and_cannot_be_replayed():
    sec, replays = security(), auth._Replays(240)
    now = 1_800_000_000.0
    tok = sec.token("/a/B", now=now)
    assert SECRET.decode() not in tok and sec.key.hex() not in tok   # the secret never travels
    assert sec.check_token("/a/B", tok, replays, now=now + 5) is None
    assert "replayed" in sec.check_token("/a/B", tok, replays, now=now + 6)
    tok2 = sec.token("/a/B", now=now)
    assert "wrong" in sec.check_token("/a/C", tok2, replays, now=now)          # another method
    assert "wrong" in security(b"t" * 32).check_token("/a/B", tok2, replays, now=now)  # another key
    assert "wrong" in auth.Security.for_job(SECRET, "another-job").check_token(
        "/a/B", tok2, replays, now=now)                                           # another job
    assert "off this clock" in sec.check_token("/a/B", sec.token("/a/B", now=now), replays,
                                               now=now + auth.CLOCK_SKEW_S + 1)
    assert sec.check_token("/a/B", None, replays) == "no job credentials"
    assert sec.check_token("/a/B", "x.y", replays) == "malformed job credentials"


def test_secret_sources_and_their_errors(tmp_path, monkeypatch):
    f = tmp_path / "job.secret"
    f.write_bytes(b"a" * 40 + b"\n")
    assert auth.load_secret(str(f), environ={}) == b"a" * 40
    assert auth.load_secret(None, environ={"POSEIDON_SECRET": "b" * 20}) == b"b" * 20
    assert auth.load_secret(None, environ={}) is None
    f.write_bytes(b"short")
    with pytest.raises(ClusterError, match="5 bytes, fewer than 16"):
        auth.load_secret(str(f), environ={})
    with pytest.raises(ClusterError, match="cannot read it"):
        auth.load_secret(str(tmp_path / "missing"), environ={})


def test_refusals_are_logged_once_per_host_and_rate_limited():
    out = io.StringIO()
    log = auth.RejectionLog("shard 0", stream=out, every_s=60, burst=3)
    assert log.note("ipv4:10.0.0.1:5000", "x") and not log.note("ipv4:10.0.0.1:5001", "x")
    assert log.note("ipv6:[::1]:7", "x") and log.note("10.0.0.2:9", "x")
    assert not log.note("10.0.0.3:9", "x")       # a fourth host in the window: over the burst
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "10.0.0.1" in lines[0] and "::1" in lines[1]
    assert log.counts["10.0.0.1"] == 2 and log.counts["10.0.0.3"] == 1


# ------------------------------------------------------------------------ gRPC plane
@pytest.mark.parametrize("secret", [None, b"w" * 32], ids=["no-secret", "wrong-secret"])
def test_a_stranger_is_refused_on_every_grpc_method_and_learns_nothing(cluster, secret, capfd):
    from poseidon_cli.distributed.directory import WorkerDirectory

    # a client's worker 0 serves the directory on the shard's server (SFB's method is unknown
    # here and must be refused the same way)
    addrs, servers = cluster(1, handlers=[lambda: WorkerDirectory(JOB).handler()])
    cs = clients(addrs, P=2)
    connect(cs)
    stranger = (security(secret) if secret else auth.NO_SECURITY).channel(addrs[0])
    for method, request, kind in stranger_calls():
        with pytest.raises(grpc.RpcError) as e:
            call(stranger, method, request, kind)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
        assert JOB not in (e.value.details() or "") and "poseidon-" not in (e.value.details() or "")
    stranger.close()
    # the job did not notice: no worker lost, the shard still serves, training goes on
    assert servers[0].store.health()["dead_workers"] == []
    w = train(cs, 3)
    np.testing.assert_allclose(w, -0.1 * 3 * np.ones((64, 32)), rtol=1e-6)
    finish(cs)
    err = capfd.readouterr().err
    refusals = [ln for ln in err.splitlines() if "refused 127.0.0.1" in ln]
    assert len(refusals) == 1, err          # logged once for the address, not once per call


def test_a_second_heartbeat_stream_for_a_live_worker_is_refused_and_blames_no_one(cluster):
    addrs, servers = cluster(1)
    cs = clients(addrs, P=2)
    connect(cs)
    insider = security().channel(addrs[0])   # even with the secret, it cannot take over worker 1
    h = ps_pb2.Header(job_id=JOB, worker_id=1, protocol_version=PROTOCOL_VERSION)
    beat = ps_pb2.HealthRequest(header=h).SerializeToString()
    with pytest.raises(grpc.RpcError) as e:
        call(insider, f"/{SERVICE}/Heartbeat", [beat, beat], "su")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    ghost = ps_pb2.HealthRequest(header=ps_pb2.Header(job_id=JOB, worker_id=7,
                                                      protocol_version=PROTOCOL_VERSION))
    with pytest.raises(grpc.RpcError) as e:   # a worker that never registered
        call(insider, f"/{SERVICE}/Heartbeat", [ghost.SerializeToString()], "su")
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    insider.close()
    time.sleep(0.5)
    assert servers[0].store.health()["dead_workers"] == []
    train(cs, 2)
    finish(cs)


def test_clients_with_different_secrets_are_told_so(cluster):
    addrs, _ = cluster(1)
    c = clients(addrs, P=1, sec=security(b"x" * 32), connect_timeout_s=2)[0]
    with pytest.raises(ClusterError, match="refused our credentials.*same job secret"):
        c.connect()
    c.close()


# ------------------------------------------------------------------------ TCP data plane
def _header(op, worker, count, job=JOB.encode(), job_len=None):
    return W.REQUEST.pack(W.MAGIC, op, len(job) if job_len is None else job_len, worker,
                          PROTOCOL_VERSION, 0, 0, 5.0, count) + job


def test_spoofed_data_headers_without_the_secret_neither_stop_nor_blame(cluster, capfd):
    addrs, servers = cluster(1)
    cs = clients(addrs, P=2)
    connect(cs)
    port = servers[0].data_port

    def spoof(t):
        if t != 1:
            return
        for worker in (1, 0, 99):          # a live worker, the caller itself, one that does not exist
            for op in (W.OP_PUSH, W.OP_PULL):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                s.sendall(_header(op, worker, 1))   # no handshake: a stranger's request, then close
                s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"\x00" * 4096)      # garbage instead of the handshake
            assert s.recv(64)[:4] == auth.TCP_MAGIC   # only the challenge came back
    w = train(cs, 4, pause=spoof)
    np.testing.assert_allclose(w, -0.1 * 4 * np.ones((64, 32)), rtol=1e-6)
    assert servers[0].store.health()["dead_workers"] == []
    finish(cs)
    assert "data connection without the job's credentials" in capfd.readouterr().err


def authed_data_socket(port, sec=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return (sec or security()).tcp_client_side(s, "127.0.0.1", time.monotonic() + 5)


def read_error(s):
    hdr = bytearray(W.REPLY.size)
    W.recv_exact(s, memoryview(hdr), time.monotonic() + 5)
    kind, a, b, n = W.REPLY.unpack(hdr)
    body = bytearray(n)
    W.recv_exact(s, memoryview(body), time.monotonic() + 5)
    return kind, W.parse_error(b, body)[0]


def test_announced_sizes_are_checked_before_anything_is_allocated(cluster):
    addrs, servers = cluster(1)
    cs = clients(addrs, P=1)
    connect(cs)
    port = servers[0].data_port
    cases = [
        (_header(W.OP_PUSH, 0, 1, job=b"", job_len=256 << 20), "job id of 268435456 bytes"),
        (_header(W.OP_PULL, 0, 1 << 31), "items (at most"),
        (_header(W.OP_PUSH, 0, 1) + W.ITEM.pack(0, ps_pb2.GRADIENT, 4 << 30), "announced 4294967296 bytes"),
        (_header(W.OP_PUSH, 0, 1) + W.ITEM.pack(10 ** 9, ps_pb2.GRADIENT, 16), "not on this shard"),
    ]
    for request, message in cases:
        with authed_data_socket(port) as s:
            s.sendall(request)
            if "not on this shard" in message:
                s.sendall(b"\0" * 16)       # a chunk-sized body is drained: the connection stays in sync
            kind, text = read_error(s)
            assert kind == W.R_ERROR and message in text, text
    assert servers[0].store.health()["dead_workers"] == []
    assert train(cs, 1).shape == (64, 32)
    finish(cs)


def test_idle_and_half_open_connections_are_closed_and_churn_leaks_nothing(cluster, monkeypatch):
    monkeypatch.setattr(auth, "HANDSHAKE_TIMEOUT_S", 0.5)
    addrs, servers = cluster(1)
    cs = clients(addrs, P=1)
    connect(cs)
    data = servers[0].data_server
    data.idle_timeout_s = 1.0
    port = data.port
    half_open = socket.create_connection(("127.0.0.1", port), timeout=5)  # never answers the challenge
    idle = authed_data_socket(port)                                         # authenticated, then silent
    t0 = time.monotonic()
    half_open.recv(64)                     # the challenge
    assert half_open.recv(64) == b""       # then the close
    assert time.monotonic() - t0 < 3
    idle.settimeout(5)
    assert idle.recv(64) == b"" and time.monotonic() - t0 < 4
    half_open.close()
    idle.close()
    time.sleep(0.5)
    base_threads = threading.active_count()
    for _ in range(100):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        authed_data_socket(port).close()
    time.sleep(1.0)
    assert threading.active_count() <= base_threads + 2
    assert len(data._conns) <= 1
    finish(cs)


# ------------------------------------------------------------------------ TLS
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_on_both_planes_and_a_client_of_another_ca_cannot_connect(cluster, tmp_path):
    good, other = make_pki(tmp_path / "good", "job"), make_pki(tmp_path / "other", "stranger")
    addrs, servers = cluster(1, sec=security(tls=good))
    cs = clients(addrs, P=2, sec=security(tls=good))
    connect(cs)
    w = train(cs, 2)
    np.testing.assert_allclose(w, -0.1 * 2 * np.ones((64, 32)), rtol=1e-6)
    # right secret, certificate of another CA: neither plane lets it in
    bad = clients(addrs, P=1, sec=security(tls=other), connect_timeout_s=2)[0]
    with pytest.raises(ClusterError, match="TLS"):
        bad.connect()
    bad.close()
    with pytest.raises(OSError):
        authed_data_socket(servers[0].data_port, security(tls=other)).close()
    plain = socket.create_connection(("127.0.0.1", servers[0].data_port), timeout=5)
    plain.sendall(_header(W.OP_PULL, 0, 1))       # plain text to a TLS port: dropped, not served
    plain.settimeout(8)
    got = b""
    try:
        while chunk := plain.recv(4096):
            got += chunk
    except ConnectionResetError:
        pass
    plain.close()
    assert auth.TCP_MAGIC not in got and len(got) < W.REPLY.size + 64, got
    assert servers[0].store.health()["dead_workers"] == []
    train(cs, 1, start=2)
    finish(cs)
