"""Shard state (poseidon_cli/ps/store.py): exactly-once updates, averaging, SSP pulls, deadlines,
lost workers, registration checks. The property test drives S stores with random schedules of P
workers and checks every pull against an independent numpy model."""
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from poseidon_cli.errors import ClusterError
from poseidon_cli.ps.keys import Layout
from poseidon_cli.ps.protocol import PROTOCOL_VERSION
from poseidon_cli.ps.store import ShardStore
from poseidon_cli.solver.step import history_slot
from toy_updaters import MomentumUpdater, SGDUpdater

PARAMS = [("w", (3, 5), "float64"), ("b", (4,), "float64")]


def make(P=2, S=1, s=0, updater=None, chunk_bytes=16, **kw):
    stores = [ShardStore(i, S, "job", updater or SGDUpdater(0.5), **kw) for i in range(S)]
    for st_ in stores:
        for w in range(P):
            st_.register(w, "job", PROTOCOL_VERSION, P, s, S, chunk_bytes, PARAMS)
    return stores, Layout(PARAMS, S, chunk_bytes)


# ------------------------------------------------------------------ exactly once, averaging
def test_duplicate_push_is_ignored_and_update_uses_the_mean():
    (st_,), lay = make(P=2)
    ck = lay.chunks[0]
    st_.set_value(ck.key, np.ones(ck.size))
    g0, g1 = np.full(ck.size, 2.0), np.full(ck.size, 4.0)
    assert st_.push(0, 0, ck.key, g0)
    assert not st_.push(0, 0, ck.key, g0 * 100)       # duplicate (worker, clock, chunk): ignored
    assert st_.applied_clock(ck.key) == 0
    assert st_.push(1, 0, ck.key, g1)
    assert st_.applied_clock(ck.key) == 1
    np.testing.assert_array_equal(st_.values()[ck.key], 1 - 0.5 * 3.0)
    assert not st_.push(1, 0, ck.key, g1)             # a clock already applied: ignored
    assert st_.duplicates == 2


def test_early_clock_is_buffered_and_applied_in_order():
    (st_,), lay = make(P=2, s=1)
    k = lay.chunks[0].key
    st_.set_value(k, np.zeros(lay.chunks[0].size))
    for w in range(2):
        st_.push(w, 1, k, np.full(lay.chunks[0].size, 10.0))  # clock 1 before clock 0
    assert st_.applied_clock(k) == 0
    st_.push(0, 0, k, None)  # zero gradient: no data
    st_.push(1, 0, k, np.full(lay.chunks[0].size, 2.0))
    assert st_.applied_clock(k) == 2
    np.testing.assert_array_equal(st_.values()[k], -(0.5 * 1.0 + 0.5 * 10.0))


def test_updater_sees_name_offsets_and_clock():
    seen = []

    class Spy:
        def update(self, key, param, grad, state, clock):
            seen.append((key.name, key.start, key.stop, key.shape, clock, param.shape, grad.shape))

    (st_,), lay = make(P=1, updater=Spy())
    for ck in lay.chunks:
        st_.push(0, 0, ck.key, np.zeros(ck.size))
    assert ("w", 0, 2, (3, 5), 0, (2,), (2,)) in seen
    assert ("w", 14, 15, (3, 5), 0, (1,), (1,)) in seen


# ------------------------------------------------------------------ registration
@pytest.mark.parametrize("change, needle", [
    (dict(job_id="other"), "job 'other'"),
    (dict(protocol_version=PROTOCOL_VERSION + 1), "protocol version"),
    (dict(worker_id=1), "duplicate worker id"),
    (dict(params=[("w", (3, 6), "float64"), ("b", (4,), "float64")]), "'w' has shape [3, 6]"),
    (dict(params=[("w", (3, 5), "float64")]), "1 params given"),
    (dict(staleness=3), "staleness=3"),
    (dict(num_workers=5), "num_workers=5"),
    (dict(worker_id=7), "out of range"),
])
def test_register_rejects_mismatches_naming_them(change, needle):
    st_ = ShardStore(0, 1, "job", SGDUpdater())
    base = dict(worker_id=0, job_id="job", protocol_version=PROTOCOL_VERSION, num_workers=2, staleness=0,
                num_shards=1, chunk_bytes=16, params=PARAMS)
    st_.register(**{**base, "worker_id": 1})
    with pytest.raises(ClusterError, match=None) as e:
        st_.register(**{**base, **change})
    assert needle in str(e.value)


# ------------------------------------------------------------------ deadlines and lost workers
def test_pull_deadline_names_the_worker_waited_for():
    (st_,), lay = make(P=3, deadline_s=0.2)
    for ck in lay.chunks:
        st_.set_value(ck.key, np.zeros(ck.size))
        for w in (0, 2):
            st_.push(w, 0, ck.key, np.zeros(ck.size))
    st_.clock(0, 1)
    st_.clock(2, 1)
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as e:
        list(st_.pull(0, 1, [ck.key for ck in lay.chunks]))
    assert time.monotonic() - t0 < 2
    assert "worker(s) [1]" in str(e.value) and "worker 1=0" in str(e.value)


def test_lost_worker_fails_waits_at_once_and_missed_heartbeats_count():
    (st_,), lay = make(P=2, deadline_s=30, heartbeat_timeout_s=0.3)
    for ck in lay.chunks:
        st_.set_value(ck.key, np.zeros(ck.size))
    st_.heartbeat(0)
    t0 = time.monotonic()
    with pytest.raises(ClusterError) as e:
        st_.heartbeat(0)
        list(st_.pull(0, 1, [lay.chunks[0].key]))  # worker 1 never beats
    assert time.monotonic() - t0 < 2
    assert "lost worker(s) [1]" in str(e.value) and "no heartbeat" in str(e.value)

    (st2,), _ = make(P=2)
    st2.worker_lost(1, "its connection broke")
    with pytest.raises(ClusterError, match=r"worker 1: its connection broke"):
        st2.barrier(0, 0)


def test_left_worker_is_not_lost():
    (st_,), _ = make(P=2)
    st_.leave(1)
    st_.worker_lost(1, "stream closed")
    st_.barrier(0, 0, deadline_s=1)  # passes: worker 1 left cleanly


# ------------------------------------------------------------------ solver state
def test_solver_state_get_set_roundtrip():
    (st_,), lay = make(P=1, updater=MomentumUpdater(0.1, 0.9))
    for ck in lay.chunks:
        st_.push(0, 0, ck.key, np.ones(ck.size))
    state = st_.get_solver_state()
    assert {slot for _, slot, _ in state} == {history_slot(0)}
    k, slot, arr = state[0]
    st_.set_solver_state(k, slot, arr * 0 + 7)
    assert dict(((k2, s2), a2) for k2, s2, a2 in st_.get_solver_state())[(k, slot)][0] == 7


# ------------------------------------------------------------------ property: random schedules
@settings(max_examples=80, deadline=None)
@given(P=st.integers(1, 3), S=st.integers(1, 3), s=st.integers(0, 2), T=st.integers(1, 4),
       choices=st.lists(st.integers(0, 1000), min_size=0, max_size=120), data=st.data())
def test_random_schedules_obey_ssp_and_match_sequential_application(P, S, s, T, choices, data):
    chunk_bytes = 16
    lr = 0.25
    stores, lay = make(P=P, S=S, s=s, updater=SGDUpdater(lr), chunk_bytes=chunk_bytes)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    sizes = {n: int(np.prod(sh)) for n, sh, _ in PARAMS}
    init = {n: rng.standard_normal(sizes[n]) for n in sizes}
    grads = {(w, t, n): rng.integers(-8, 8, sizes[n]).astype(np.float64)
             for w in range(P) for t in range(T) for n in sizes}
    for ck in lay.chunks:
        stores[ck.shard].set_value(ck.key, init[ck.name][ck.start:ck.stop])

    def reference(name, applied):
        """Plain numpy: init minus lr times the mean gradient of every clock < applied."""
        v = init[name].copy()
        for t in range(applied):
            v -= lr * np.mean([grads[(w, t, name)] for w in range(P)], axis=0)
        return v

    # Each worker's program: for t: PULL(t), PUSH every chunk (random order), CLOCK.
    programs = []
    for w in range(P):
        prog = []
        for t in range(T):
            prog.append(("pull", t, None))
            order = data.draw(st.permutations(range(len(lay.chunks))))
            prog += [("push", t, k) for k in order]
            prog.append(("clock", t, None))
        programs.append(prog)
    pc = [0] * P
    wclock = [0] * P
    pushed = set()  # (w, t, key) the model knows reached the store

    def step(w):
        if pc[w] >= len(programs[w]):
            return
        op, t, k = programs[w][pc[w]]
        if op == "push":
            ck = lay.chunks[k]
            g = grads[(w, t, ck.name)][ck.start:ck.stop]
            assert stores[ck.shard].push(w, t, k, g)
            pushed.add((w, t, k))
            if rng.random() < 0.2:  # a retried push must change nothing
                assert not stores[ck.shard].push(w, t, k, g * 3)
        elif op == "clock":
            wclock[w] = t + 1
            for st_ in stores:
                st_.clock(w, t + 1)
        else:
            need = max(0, t - s)
            bound_holds = min(wclock) >= need and all(
                (v, c, ck.key) in pushed for v in range(P) for c in range(need) for ck in lay.chunks)
            got = {}
            try:
                for st_ in stores:
                    for key, applied, buf in st_.pull(w, t, [c.key for c in lay.by_shard[st_.shard_id]],
                                                      deadline_s=0):
                        got[key] = (applied, np.frombuffer(buf, np.float64))
            except ClusterError:
                assert not bound_holds, "pull refused although the SSP bound held"
                return  # blocked: retry later
            assert bound_holds, "pull returned before the SSP bound held"
            for ck in lay.chunks:
                applied, vals = got[ck.key]
                assert applied >= need  # every update of clocks <= t - s - 1 is in
                assert all((v, c, ck.key) in pushed for v in range(P) for c in range(applied))
                np.testing.assert_allclose(vals, reference(ck.name, applied)[ck.start:ck.stop], rtol=1e-12)
        pc[w] += 1

    for c in choices:
        step(c % P)
    for _ in range(10 * P * T * (len(lay.chunks) + 2)):
        if all(pc[w] >= len(programs[w]) for w in range(P)):
            break
        for w in range(P):
            step(w)
    assert all(pc[w] >= len(programs[w]) for w in range(P)), "schedule deadlocked"
    for ck in lay.chunks:
        assert stores[ck.shard].applied_clock(ck.key) == T
        np.testing.assert_allclose(stores[ck.shard].values()[ck.key],
                                   reference(ck.name, T)[ck.start:ck.stop], rtol=1e-12)
