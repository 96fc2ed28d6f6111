"""SSP rules (poseidon_cli/ps/consistency.py): the clock arithmetic of ps/README.md."""
import pytest

from poseidon_cli.ps import consistency as C


def test_required_clock_is_c_minus_s_clamped_at_zero():
    assert C.required_clock(5, 0) == 5
    assert C.required_clock(5, 2) == 3
    assert C.required_clock(1, 3) == 0
    assert C.required_clock(1, 3, min_clock=2) == 2
    with pytest.raises(ValueError):
        C.required_clock(1, -1)


@pytest.mark.parametrize("s", [0, 1, 3])
def test_pull_ready_needs_applied_and_every_worker_at_c_minus_s(s):
    for c in range(8):
        need = max(0, c - s)
        assert C.pull_ready(c, s, need, need)
        if need > 0:
            assert not C.pull_ready(c, s, need - 1, need)   # an update of clock c-s-1 missing
            assert not C.pull_ready(c, s, need, need - 1)   # a worker more than s clocks behind


def test_bsp_pull_for_next_iteration_needs_all_updates_of_this_one():
    # After iteration t the worker's clock is t+1; with s=0 its pull needs applied clock t+1.
    t = 4
    assert not C.pull_ready(t + 1, 0, t, t + 1)
    assert C.pull_ready(t + 1, 0, t + 1, t + 1)


def test_may_proceed_bounds_the_gap_by_s():
    assert C.may_proceed(5, 3, 2)
    assert not C.may_proceed(6, 3, 2)
    assert C.may_proceed(3, 3, 0)
    assert not C.may_proceed(4, 3, 0)


def test_laggards_and_duplicates():
    assert C.laggards({0: 3, 1: 1, 2: 2}, 2) == [1]
    assert C.is_duplicate(2, 3, set(), 0)          # clock already applied
    assert C.is_duplicate(3, 3, {0}, 0)            # already in the pending sum
    assert not C.is_duplicate(3, 3, {1}, 0)
    assert C.update_complete({0, 1}, 2) and not C.update_complete({0}, 2)
