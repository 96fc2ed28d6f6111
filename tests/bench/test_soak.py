"""bench/soak.py: the growth figures from hand-made samples, and /proc sampling of this process."""
from __future__ import annotations

import os
import pathlib
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import soak  # noqa: E402


def _series(rss, threads, fds):
    return [{"rss_kib": r, "threads": t, "fds": f} for r, t, f in zip(rss, threads, fds)]


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
    assert rows["launcher"]["fd_growth"] == 2 and not rows["launcher"]["ok"]
    flat = soak.summarize({"launcher": _series([100] * 8, [2] * 8, [4] * 8)}, 0.25)
    assert flat["launcher"]["ok"] and flat["launcher"]["rss_growth"] == 0


def test_sample_reads_this_process():
    s = soak.sample(os.getpid())
    assert s["rss_kib"] > 0 and s["threads"] >= 1
    with open(__file__) as _fh:   # one more descriptor while it is open
        assert soak.sample(os.getpid())["fds"] == s["fds"] + 1
    assert os.getpid() in soak.process_tree(os.getppid())
