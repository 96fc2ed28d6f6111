"""Tensor roles (PARAM / STAT), the job config checked at registration, ClusterError's structured
fields across every transport, and the transport interface (issue 12)."""
import inspect
import subprocess
import sys
import threading

import numpy as np
import pytest

from poseidon_cli.errors import ClusterError
from poseidon_cli.ps import PSClient, ShardServer, ShardStore, make_transport
from poseidon_cli.ps import tcp_wire as W
from poseidon_cli.ps.grpc_transport import GrpcTransport
from poseidon_cli.ps.keys import PARAM, STAT, Layout
from poseidon_cli.ps.local_transport import LocalTransport
from poseidon_cli.ps.protocol import PROTOCOL_VERSION, VALUE
from poseidon_cli.ps.store import config_difference
from poseidon_cli.ps.tcp_transport import TcpTransport
from poseidon_cli.ps.transport import ShardTransport
from poseidon_cli.ps.updaters import SolverUpdater, make_updater
from toy_updaters import SGDUpdater

LAYOUT = [("w", (3, 4), "float32"), ("loss", (2,), "float64", STAT)]
PLANES = ["local", "grpc", "tcp"]


class Recording:
    """SGD (lr 1) that records which tensors it was asked to step."""

    def __init__(self):
        self.names = []

    def update(self, key, param, grad, state, clock):
        self.names.append(key.name)
        param -= grad


def register(st, w, P, specs=LAYOUT, job_config=""):
    return st.register(w, "job", PROTOCOL_VERSION, P, 0, 1, 4096, specs, job_config)


# ------------------------------------------------------------------ roles
def test_stat_tensor_takes_the_mean_and_never_reaches_the_updater():
    rec = Recording()
    st = ShardStore(0, 1, "job", rec)
    for w in range(2):
        register(st, w, 2)
    lay = Layout(LAYOUT, 1, 4096)
    wkey, skey = lay.by_param["w"][0].key, lay.by_param["loss"][0].key
    st.set_value(wkey, np.ones(12, np.float32))
    st.set_value(skey, np.zeros(2))
    st.push(0, 0, wkey, np.full(12, 2.0, np.float32))
    st.push(1, 0, wkey, np.full(12, 4.0, np.float32))
    st.push(0, 0, skey, np.array([1.0, 10.0]))
    st.push(1, 0, skey, np.array([3.0, 30.0]))
    values = st.values()
    np.testing.assert_array_equal(values[skey], [2.0, 20.0])    # the mean, as the value
    np.testing.assert_array_equal(values[wkey], np.full(12, -2.0, np.float32))  # 1 - mean(2, 4)
    assert rec.names == ["w"]
    assert {k for k, _, _ in st.get_solver_state()} <= {wkey}


def test_a_different_role_is_a_different_layout():
    st = ShardStore(0, 1, "job", SGDUpdater())
    register(st, 0, 2)
    with pytest.raises(ClusterError, match=r"'loss' has role param but the registered layout has stat"):
        register(st, 1, 2, specs=LAYOUT[:1] + [("loss", (2,), "float64")])
    with pytest.raises(ValueError, match="role"):
        Layout([("x", (1,), "float32", "weights")], 1)


def test_solver_updater_treats_stat_role_not_names():
    from poseidon_cli._proto import caffe_pb2
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=0.5, lr_policy="fixed")
    st = ShardStore(0, 1, "job", SolverUpdater(p, {"w": (1.0, 1.0)}))
    register(st, 0, 1)
    lay = Layout(LAYOUT, 1, 4096)
    skey = lay.by_param["loss"][0].key
    st.set_value(skey, np.zeros(2))
    st.push(0, 0, skey, np.array([5.0, 7.0]))  # no multipliers for "loss": the updater must not see it
    np.testing.assert_array_equal(st.values()[skey], [5.0, 7.0])


# ------------------------------------------------------------------ network fixtures
@pytest.fixture
def cluster():
    """``cluster(plane, S, updater=...)`` -> (stores, transports_factory); ``cluster.servers``."""
    made = []

    def start(plane, S=1, updater=lambda: SGDUpdater(1.0), **kw):
        stores = [ShardStore(i, S, "job", updater(), **kw) for i in range(S)]
        if plane == "local":
            return stores, lambda: [LocalTransport(s) for s in stores]
        servers = [ShardServer(s, data_plane="tcp") for s in stores]
        made.extend(servers)
        start.servers = servers
        addrs = [f"127.0.0.1:{sv.start()}" for sv in servers]
        return stores, lambda: [make_transport(a, i, "job", plane) for i, a in enumerate(addrs)]

    yield start
    for sv in made:
        sv.stop(0)


def run_threads(fn, n, timeout=30):
    errors, out = [], {}

    def wrap(i):
        try:
            out[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    assert not any(t.is_alive() for t in ts), "a worker thread hung"
    if errors:
        raise errors[0]
    return out


@pytest.mark.parametrize("plane", PLANES)
def test_mean_over_workers_averages_stat_tensors_at_one_clock(cluster, plane):
    _, transports = cluster(plane, S=2)
    P = 3

    def worker(w):
        c = PSClient(transports(), "job", w, P, LAYOUT, deadline_s=10, heartbeat_s=None, chunk_bytes=4096)
        c.connect()
        try:
            if w == 0:
                c.init_params({"w": np.zeros((3, 4), np.float32), "loss": np.zeros(2)})
            c.barrier()
            first = c.mean_over_workers("loss", [float(w), 10.0 * w])
            c.push("w", np.ones((3, 4), np.float32))
            c.clock()
            second = c.mean_over_workers("loss", [w * w])  # fewer values than the tensor holds
            with pytest.raises(ValueError, match="not a statistics tensor"):
                c.mean_over_workers("w", [1.0])
            with pytest.raises(ValueError, match="holds 2 values"):
                c.mean_over_workers("loss", [1.0, 2.0, 3.0])
            c.clock()
            c.flush()
            c.barrier()
            return first, second
        finally:
            c.close()

    out = run_threads(worker, P)
    for w in range(P):
        np.testing.assert_array_equal(out[w][0], [1.0, 10.0])   # mean of 0,1,2 and 0,10,20
        np.testing.assert_allclose(out[w][1], [5.0 / 3.0])      # mean of 0,1,4
        assert out[w][1].shape == (1,)


# ------------------------------------------------------------------ job config
def test_config_difference_names_each_differing_field_with_both_values():
    mine = "type=SGD base_lr=0.05 momentum=0.9"
    assert config_difference(mine, mine.replace("0.05", "0.01")) == "base_lr=0.01 but the job has base_lr=0.05"
    assert config_difference("a=1", "a=1 b=2") == "b=2 but the job has no b"
    assert config_difference("opaque", "other") == "'other' but the job has 'opaque'"


@pytest.mark.parametrize("plane", PLANES)
def test_a_different_job_config_is_rejected_naming_the_worker_and_the_field(cluster, plane):
    _, transports = cluster(plane)
    tr0, tr1 = transports()[0], transports()[0]
    tr0.register(0, "job", PROTOCOL_VERSION, 2, 0, 1, 4096, LAYOUT, "type=SGD base_lr=0.05")
    with pytest.raises(ClusterError) as err:
        tr1.register(1, "job", PROTOCOL_VERSION, 2, 0, 1, 4096, LAYOUT, "type=SGD base_lr=0.01")
    msg = str(err.value)
    assert "worker 1" in msg and "base_lr=0.01" in msg and "base_lr=0.05" in msg, msg
    assert err.value.shard == 0
    # the same config is accepted
    tr1.register(1, "job", PROTOCOL_VERSION, 2, 0, 1, 4096, LAYOUT, "type=SGD base_lr=0.05")
    for t in (tr0, tr1):
        t.close()


def test_the_client_sends_its_job_config(cluster):
    stores, transports = cluster("tcp")
    c = PSClient(transports(), "job", 0, 2, LAYOUT, heartbeat_s=None, job_config="iter_size=2")
    c.connect()
    c.close()
    assert stores[0].job_config == "iter_size=2"


# ------------------------------------------------------------------ ClusterError fields
def reworded(monkeypatch):
    """Every ClusterError a store raises gets a message that names nobody: the fields must be
    all a caller needs to name the peer."""
    original = ShardStore._error

    def _error(self, message, hint=None, lost_workers=()):
        e = original(self, message, hint, lost_workers)
        return ClusterError("the job failed", lost_workers=e.lost_workers, shard=e.shard)

    monkeypatch.setattr(ShardStore, "_error", _error)


@pytest.mark.parametrize("reword", [False, True], ids=["as_worded", "reworded"])
@pytest.mark.parametrize("plane", PLANES)
def test_lost_workers_and_shard_reach_the_worker_over_every_transport(cluster, plane, reword,
                                                                       monkeypatch):
    if reword:
        reworded(monkeypatch)
    stores, transports = cluster(plane, S=2)
    c = PSClient(transports(), "job", 0, 3, LAYOUT, deadline_s=5, heartbeat_s=None, chunk_bytes=4096)
    c.connect()
    c.init_params({"w": np.zeros((3, 4), np.float32), "loss": np.zeros(2)})
    lay = c.layout
    shard_of_w = lay.by_param["w"][0].shard
    stores[shard_of_w].worker_lost(2, "test: process died")
    stores[shard_of_w].worker_lost(1, "test: process died")
    c.push("w", np.ones((3, 4), np.float32))
    c.clock()
    with pytest.raises(ClusterError) as err:
        c.pull("w").result(timeout=20)
    assert err.value.lost_workers == (1, 2)
    assert err.value.shard == shard_of_w
    if reword:
        assert str(err.value) == "the job failed"
    else:
        assert "lost worker(s) [1, 2]" in str(err.value)
    c.close()


@pytest.mark.parametrize("how", ["stopping", "gone"])
@pytest.mark.parametrize("plane", ["grpc", "tcp"])
def test_a_stopping_or_unreachable_shard_is_named_in_the_shard_field(cluster, plane, how):
    stores, transports = cluster(plane, S=2)
    c = PSClient(transports(), "job", 0, 1, LAYOUT, deadline_s=2, heartbeat_s=None, chunk_bytes=16)
    c.connect()
    c.init_params({"w": np.zeros((3, 4), np.float32), "loss": np.zeros(2)})
    assert {ck.shard for ck in c.layout.by_param["w"]} == {0, 1}
    if how == "stopping":
        stores[1].stop()              # the shard answers, with its own error
    else:
        cluster.servers[1].stop(0)    # nobody answers
    with pytest.raises(ClusterError) as err:
        c.pull("w").result(timeout=20)
    assert err.value.shard == 1, str(err.value)
    assert "shard 1" in str(err.value)
    c.close()


def test_a_pull_deadline_carries_the_shard_but_no_lost_worker(cluster):
    stores, transports = cluster("tcp")
    c = PSClient(transports(), "job", 0, 2, LAYOUT, deadline_s=0.5, heartbeat_s=None)
    c.connect()
    c.init_params({"w": np.zeros((3, 4), np.float32), "loss": np.zeros(2)})
    c.clock()
    with pytest.raises(ClusterError) as err:
        c.pull("w").result(timeout=10)   # worker 1 never registered, never clocks
    assert err.value.lost_workers == () and err.value.shard == 0
    assert "worker(s) [1]" in str(err.value)
    c.close()


def test_tcp_error_frame_roundtrip():
    head, body = W.error_frame(W.E_CLUSTER, "shard 3: lost worker(s) [0, 5] (ünïcode)", (5, 0), 3)
    kind, code, b, n = W.REPLY.unpack(head)
    assert (kind, code, n) == (W.R_ERROR, W.E_CLUSTER, len(body))
    assert W.parse_error(b, body) == ("shard 3: lost worker(s) [0, 5] (ünïcode)", (5, 0), 3)
    head, body = W.error_frame(W.E_INVALID, "bad", (), None)
    assert W.parse_error(W.REPLY.unpack(head)[2], body) == ("bad", (), None)


def test_cluster_error_fields_default_and_normalise():
    e = ClusterError("x", "do y", lost_workers={3, 1}, shard="2")
    assert (e.lost_workers, e.shard, e.hint, e.one_line()) == ((1, 3), 2, "do y", "x (do y)")
    e = ClusterError("x")
    assert (e.lost_workers, e.shard) == ((), None)


# ------------------------------------------------------------------ the transport interface
IMPLEMENTATIONS = [LocalTransport, GrpcTransport, TcpTransport]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_every_transport_implements_every_interface_method_with_its_parameters(impl):
    for name, fn in vars(ShardTransport).items():
        if name.startswith("_") or not callable(fn):
            continue
        mine = getattr(impl, name)
        assert mine is not fn or name == "pull_into", f"{impl.__name__} does not implement {name}"
        want = list(inspect.signature(fn).parameters)
        got = list(inspect.signature(mine).parameters)
        if got[1:] == ["args", "kwargs"]:
            continue  # a pure delegation (TcpTransport.register)
        assert got[:len(want)] == want, f"{impl.__name__}.{name}{got} vs interface {want}"


def test_default_pull_into_fills_the_destination_from_pull():
    class PullOnly(ShardTransport):
        def pull(self, worker_id, clock, keys, min_clock, deadline_s):
            for k in keys:
                yield k, 7, np.full(3, k, np.float32).tobytes()

    out = np.zeros(6, np.float32)
    view = out.view(np.uint8)
    got = list(PullOnly().pull_into(0, 0, [1, 2], 0, 1.0,
                                    lambda key, n: memoryview(view[(key - 1) * n:key * n])))
    assert got == [(1, 7), (2, 7)]
    np.testing.assert_array_equal(out, [1, 1, 1, 2, 2, 2])


def test_local_transport_has_no_pull_into_of_its_own_and_the_client_still_pulls():
    assert "pull_into" not in vars(LocalTransport)
    st = ShardStore(0, 1, "job", SGDUpdater(1.0))
    c = PSClient([LocalTransport(st)], "job", 0, 1, LAYOUT, heartbeat_s=None)
    c.connect()
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    c.init_params({"w": w, "loss": np.zeros(2)})
    np.testing.assert_array_equal(c.pull("w").result(timeout=5), w)
    c.close()


def test_ps_front_door_exports():
    import poseidon_cli.ps as ps
    assert sorted(ps.__all__) == ["PSClient", "ShardServer", "ShardStore", "make_transport"]
    from poseidon_cli.ps.client import PSClient as C, make_transport as m
    assert ps.PSClient is C and ps.make_transport is m
    with pytest.raises(AttributeError):
        ps.nothing_here  # noqa: B018
    with pytest.raises(ValueError, match="data_plane"):
        make_transport("127.0.0.1:1", 0, "job", "udp")


# ------------------------------------------------------------------ the stand-alone shard's updater
def test_make_updater_builds_the_caffe_solver():
    u = make_updater("sgd:lr=0.5,momentum=0.9,weight_decay=0.1")
    assert isinstance(u, SolverUpdater) and u.rule.type == "SGD"
    assert (u.param.base_lr, round(u.param.momentum, 6), round(u.param.weight_decay, 6)) == (0.5, 0.9, 0.1)
    assert make_updater("adam:base_lr=0.01").rule.type == "Adam"
    # one step by hand: v = 0.9 * 0 + 0.5 * (g + 0.1 w); w -= v
    st = ShardStore(0, 1, "job", u)
    st.register(0, "job", PROTOCOL_VERSION, 1, 0, 1, 4096, [("p", (2,), "float32")])
    st.set_value(0, np.array([1.0, -2.0], np.float32))
    st.push(0, 0, 0, np.array([0.4, 0.2], np.float32))
    np.testing.assert_allclose(st.values()[0], [1.0 - 0.5 * (0.4 + 0.1), -2.0 - 0.5 * (0.2 - 0.2)],
                               rtol=1e-6)
    for bad, what in [("frobnicate:lr=1", "unknown solver type"), ("sgd:nope=1", "nope=1"),
                      ("sgd:base_lr=fast", "base_lr")]:
        with pytest.raises(ValueError, match=what):
            make_updater(bad)


def test_shard_command_line_rejects_a_bad_updater_in_one_line():
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.ps.server", "--job-id", "j", "--shard-id", "0",
                        "--num-shards", "1", "--updater", "sgd:speed=3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["poseidon: error: --updater: 'speed=3' is not field=value "
                                             "of a SolverParameter"]


def test_values_pushed_as_value_kind_initialise_stat_tensors_too(cluster):
    stores, transports = cluster("local")
    tr = transports()[0]
    tr.register(0, "job", PROTOCOL_VERSION, 1, 0, 1, 4096, LAYOUT)
    lay = Layout(LAYOUT, 1, 4096)
    skey = lay.by_param["loss"][0].key
    tr.push(0, 0, [(skey, VALUE, np.array([4.0, 2.0]))], 1.0)
    np.testing.assert_array_equal(stores[0].values()[skey], [4.0, 2.0])
