"""bench/soak.py: the growth figures from hand-made samples, and /proc sampling of this process."""
from __future__ import annotations

import os
import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402


def _series(rss, threads, fds):
    """Samples every 2 s, as soak.py takes them."""
    return [{"rss_kib": r, "threads": t, "fds": f, "t": 2.0 * i}
            for i, (r, t, f) in enumerate(zip(rss, threads, fds))]


def test_growth_after_warmup_uses_medians_of_three():
    # 8 samples, warm-up 25% -> index 2; warm = median(s1, s2, s3), end = median(last three)
    rss = [50, 90, 100, 104, 101, 103, 107, 106]
    rows = soak.summarize({"client_0": _series(rss, [5, 9, 9, 9, 9, 9, 9, 9], [3] * 8)}, 0.25)
    r = rows["client_0"]
    assert r["rss_kib"]["warm"] == 100 and r["rss_kib"]["end"] == 106
    assert abs(r["rss_growth"] - 0.06) < 1e-12
    assert r["thread_growth"] == 0 and r["fd_growth"] == 0
    assert not r["ok"]            # 6% > the 5% target


def test_descriptor_growth_fails_the_target():
    rows = soak.summarize({"launcher": _series([100] * 8, [2] * 8, [4, 4, 4, 4, 5, 5, 6, 6])}, 0.25)
    # after warm-up (index 2): fds 4 4 5 5 6 6 at t = 4..14 s; least squares by hand:
    # slope = sum(dx*dy) / sum(dx^2) = 16 / 70 per second, over a 10 s span
    assert abs(rows["launcher"]["fd_growth"] - 16 / 70 * 10) < 1e-9
    assert not rows["launcher"]["ok"]
    flat = soak.summarize({"launcher": _series([100] * 8, [2] * 8, [4] * 8)}, 0.25)
    assert flat["launcher"]["ok"] and flat["launcher"]["rss_growth"] == 0
    assert flat["launcher"]["fd_growth"] == 0


def test_a_pool_that_opens_and_closes_around_a_level_is_not_growth():
    # a connection opened and closed around 5: the last sample is one above the warm-up one, but
    # nothing accumulates, so the trend stays under one descriptor
    fds = [3, 5, 5, 6, 5, 6, 5, 6, 5, 6, 5, 6]
    r = soak.summarize({"client_0": _series([100] * 12, [9] * 12, fds)}, 0.25)["client_0"]
    assert r["fds"]["low"] == 5 and r["fds"]["peak"] == 6
    assert abs(r["fd_growth"]) < 1 and r["ok"]
    # one more descriptor kept every few samples is a leak, whatever the noise
    leak = [3, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10]
    r = soak.summarize({"client_0": _series([100] * 12, [9] * 12, leak)}, 0.25)["client_0"]
    assert r["fd_growth"] > 3 and not r["ok"]


def test_sample_reads_this_process():
    s = soak.sample(os.getpid())
    assert s["rss_kib"] > 0 and s["threads"] >= 1
    with open(__file__) as _fh:   # one more descriptor while it is open
        assert soak.sample(os.getpid())["fds"] == s["fds"] + 1
    assert os.getpid() in soak.process_tree(os.getppid())
