"""Client futures over an in-process cluster (poseidon_cli/ps/client.py + transport.LocalTransport):
P workers and S shards as threads of one process."""
import threading
import time

import numpy as np
import pytest

from poseidon_cli.errors import ClusterError
from poseidon_cli.ps.client import PSClient
from poseidon_cli.ps.local_transport import LocalTransport, local_cluster
from poseidon_cli.solver.step import history_slot
from toy_updaters import MomentumUpdater, SGDUpdater

PARAMS = [("conv.0", (4, 3, 3, 3)), ("conv.1", (4,)), ("fc.0", (10, 36)), ("fc.1", (10,))]


def cluster(P, S, s, updater_factory, deadline_s=10.0, **kw):
    stores = local_cluster(S, "job", updater_factory, deadline_s=deadline_s)
    clients = [PSClient([LocalTransport(st) for st in stores], "job", w, P, PARAMS, staleness=s,
                        chunk_bytes=64, deadline_s=deadline_s, heartbeat_s=None, **kw) for w in range(P)]
    return stores, clients


def run_workers(clients, body):
    errors = []

    def run(c):
        try:
            body(c)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(c,)) for c in clients]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "a worker hung"
    if errors:
        raise errors[0]


def grad(w, t, name, shape):
    rng = np.random.default_rng(1000 * w + 10 * t + len(name))
    return rng.standard_normal(shape).astype(np.float32)


def test_bsp_each_clock_equals_one_momentum_step_on_the_mean_gradient():
    P, S, T, lr, mom = 3, 2, 4, 0.1, 0.9
    stores, clients = cluster(P, S, 0, lambda: MomentumUpdater(lr, mom))
    init = {n: np.random.default_rng(7).standard_normal(s).astype(np.float32) for n, s in PARAMS}
    seen = {w: [] for w in range(P)}

    def body(c):
        c.connect()
        if c.worker_id == 0:
            c.init_params(init)
        for t in range(T):
            vals = c.pull_all()
            seen[c.worker_id].append(vals)
            for n, s in PARAMS:
                c.push(n, grad(c.worker_id, t, n, s))
            c.clock()
        seen[c.worker_id].append(c.pull_all())
        c.finish()

    run_workers(clients, body)
    # Independent reference: Caffe momentum SGD on the mean gradient, in float64 numpy.
    ref = {n: init[n].astype(np.float64) for n in init}
    hist = {n: np.zeros_like(ref[n]) for n in init}
    for t in range(T + 1):
        for w in range(P):
            for n in ref:
                np.testing.assert_allclose(seen[w][t][n], ref[n], rtol=1e-5, atol=1e-6)
        if t < T:
            for n, s in PARAMS:
                g = np.mean([grad(w, t, n, s) for w in range(P)], axis=0)
                hist[n] = mom * hist[n] + lr * g
                ref[n] = ref[n] - hist[n]


@pytest.mark.parametrize("s", [0, 1, 3])
def test_fast_worker_blocks_exactly_s_clocks_ahead_of_a_slowed_one(s):
    P, k = 2, 1  # the slow worker is held in iteration k
    stores, clients = cluster(P, 1, s, lambda: SGDUpdater(0.01))
    release = threading.Event()
    iterations_run = {0: 0, 1: 0}

    def body(c):
        c.connect()
        if c.worker_id == 0:
            c.init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
        for t in range(k + s + 4):
            c.pull_all()
            if c.worker_id == 1 and t == k:
                assert release.wait(30)
            iterations_run[c.worker_id] = t + 1
            for n, sh in PARAMS:
                c.push(n, np.ones(sh, np.float32))
            c.clock()
        c.finish()

    th = threading.Thread(target=run_workers, args=(clients, body))
    th.start()
    t_end = time.monotonic() + 10
    while clients[0].clock_value < k + s + 1 and time.monotonic() < t_end:
        time.sleep(0.01)
    time.sleep(0.3)  # give the fast worker the chance to run further if the bound were broken
    # The slow worker runs iteration k; the fast one has finished iterations 0..k+s and waits in
    # the pull for iteration k+s+1: exactly s iterations ahead.
    assert clients[1].clock_value == k
    assert clients[0].clock_value == k + s + 1
    assert iterations_run[0] == k + s + 1
    release.set()
    th.join(30)
    assert clients[0].clock_value == clients[1].clock_value == k + s + 4


@pytest.mark.parametrize("s", [1, 2])
def test_ssp_threads_end_with_sequential_application_of_every_update(s):
    P, S, T, lr = 3, 2, 6, 0.5
    stores, clients = cluster(P, S, s, lambda: SGDUpdater(lr))

    def body(c):
        c.connect()
        if c.worker_id == 0:
            c.init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
        rng = np.random.default_rng(c.worker_id)
        for t in range(T):
            c.pull_all()
            time.sleep(rng.random() * 0.01)
            for n, sh in PARAMS:
                c.push(n, np.full(sh, c.worker_id + t, np.float32))
            c.clock()
        c.flush()
        final = c.pull_all(min_clock=T)
        expect = -lr * sum(np.mean([w + t for w in range(P)]) for t in range(T))
        for n in final:
            np.testing.assert_allclose(final[n], expect, rtol=1e-6)
        c.finish()

    run_workers(clients, body)


def test_params_not_pushed_get_a_zero_gradient_at_clock_and_cache_serves_fresh_reads():
    stores, (c,) = cluster(1, 2, 2, lambda: SGDUpdater(1.0))
    c.connect()
    c.init_params({n: np.ones(sh, np.float32) for n, sh in PARAMS})
    c.push("fc.0", np.ones((10, 36), np.float32))
    c.clock()                                  # conv.* and fc.1 get zero gradients
    c.flush()
    vals = c.pull_all(min_clock=1)
    np.testing.assert_array_equal(vals["fc.0"], 0)
    np.testing.assert_array_equal(vals["conv.0"], 1)
    with pytest.raises(ValueError):
        vals["fc.0"][0, 0] = 3                 # pulled arrays are read-only (they are the cache)
    assert c.pull("fc.0").result() is vals["fc.0"]  # fresh enough at clock 1, s=2: from the cache
    c.finish()


def test_solver_state_snapshot_roundtrip_through_the_client():
    stores, (c,) = cluster(1, 3, 0, lambda: MomentumUpdater(0.1, 0.9))
    c.connect()
    c.init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
    for n, sh in PARAMS:
        c.push(n, np.arange(np.prod(sh), dtype=np.float32).reshape(sh))
    c.clock()
    c.flush()
    c.pull_all()
    state = c.get_solver_state()
    np.testing.assert_allclose(state["fc.0"][history_slot(0)], 0.1 * np.arange(360).reshape(10, 36), rtol=1e-6)
    c.set_solver_state({"fc.0": {history_slot(0): np.full((10, 36), 5.0, np.float32)}})
    assert (c.get_solver_state()["fc.0"][history_slot(0)] == 5).all()
    c.finish()


def test_pull_deadline_and_lost_worker_name_the_worker():
    stores, clients = cluster(2, 2, 0, lambda: SGDUpdater(0.1), deadline_s=0.3)
    for c in clients:
        c.connect()
    clients[0].init_params({n: np.zeros(sh, np.float32) for n, sh in PARAMS})
    clients[0].clock()
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"worker\(s\) \[1\]"):
        clients[0].pull("fc.0").result()
    assert time.monotonic() - t0 < 3
    clients[1].transports[0].kill(1)            # worker 1's process "dies"
    clients[0].deadline_s = 30
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=r"lost worker\(s\) \[1\]"):
        clients[0].pull("fc.0").result()
    assert time.monotonic() - t0 < 3
    for st in stores:
        st.stop()  # fail any wait still parked so no thread outlives the test
    for c in clients:
        c.close()


def test_stale_reads_still_return_the_freshest_values_the_shard_has():
    """Staleness is an upper bound on how old a read may be: with s=2 and workers in lockstep, a
    pull after clock t returns every update of clocks < t (not the cached value from 2 clocks
    ago, which the bound would also allow)."""
    P, S, s, T, lr = 2, 2, 2, 4, 0.5
    stores, clients = cluster(P, S, s, lambda: SGDUpdater(lr))
    init = {n: np.zeros(shape, np.float32) for n, shape in PARAMS}
    barrier = threading.Barrier(P)
    seen = {w: [] for w in range(P)}

    def body(c):
        c.connect()
        if c.worker_id == 0:
            c.init_params(init)
        c.barrier()
        for t in range(T):
            seen[c.worker_id].append(c.pull("fc.1").result().copy())
            c.push("fc.1", np.ones(10, np.float32))  # every other param gets a zero gradient
            c.clock()
            c.flush()
            barrier.wait()  # lockstep: both workers' clock-t updates are in before anyone reads
        c.finish()

    run_workers(clients, body)
    for w in range(P):
        for t, vals in enumerate(seen[w]):
            # after t clocks of mean gradient 1 at lr 0.5: -0.5 * t, i.e. nothing stale
            np.testing.assert_allclose(vals, -lr * t, err_msg=f"worker {w} at clock {t}")
