"""bench/convergence.py: reading the runs' test accuracy, the epoch / time-to-accuracy / projection
arithmetic and the target checks with hand-computed values, the prototxts it writes, and one
tiny real run (1 node and 2 clients, 20 iterations)."""
from __future__ import annotations

import json
import pathlib
import re
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import convergence as cv  # noqa: E402
import digits_cluster as dc  # noqa: E402

from poseidon_cli.solver.netoutputs import NetOutputs  # noqa: E402


def test_reads_test_accuracy_from_netoutputs(tmp_path):
    path = tmp_path / "run" / "A.S0.M2.T1" / "digits_net.netoutputs"
    out = NetOutputs(str(path), 1)
    out.add_train(0, 0.1, 2.3, ["loss"], [2.3])
    out.add_test(0, 0, 0.05, 2.31, ["accuracy", "loss"], [0.179054, 2.31])
    out.add_test(0, 50, 1.5, 0.3, ["accuracy", "loss"], [0.922297, 0.3])
    assert cv.read_test_curve(str(path)) == [(0, 0.05, 0.179054), (50, 1.5, 0.922297)]
    assert cv.find_curve(str(tmp_path / "run")) == [(0, 0.05, 0.179054), (50, 1.5, 0.922297)]


def test_parses_caffe_log_tests_of_net_0_only():
    log = """I1203 08:14:14.711354 3312 solver.py:387] Iteration 0, Testing net (#0)
I1203 08:14:14.794038 3312 solver.py:422]     Test net output #0: accuracy = 0.178451
I1203 08:14:14.794213 3312 solver.py:422]     Test net output #1: loss = 2.31086 (* 1 = 2.31086 loss)
I1203 08:14:14.836404 3312 solver.py:292] Iteration 0, loss = 2.3636
I1203 08:14:15.741962 3312 solver.py:387] Iteration 50, Testing net (#1)
I1203 08:14:15.786497 3312 solver.py:422]     Test net output #0: accuracy = 0.5
I1203 08:14:15.741962 3312 solver.py:387] Iteration 50, Testing net (#0)
I1203 08:14:15.786497 3312 solver.py:422]     Test net output #0: accuracy = 0.895623
"""
    assert cv.parse_log_tests(log) == [(0, 0.178451), (50, 0.895623)]
    assert cv.parse_log_tests(log, "loss") == [(0, 2.31086)]


def test_epochs_time_to_accuracy_and_projection_by_hand():
    # 1,501 training images at global batch 48: 1,200 iterations = 57,600 samples = 38.374 epochs
    assert cv.TRAIN_COUNT == 1501 and cv.TEST_COUNT == 296 == 8 * 37
    assert cv.epochs(1200, 48) == pytest.approx(57600 / 1501)
    curve = [(0, 0.0, 0.18), (50, 1.2, 0.96), (100, 2.4, 0.97), (150, 3.6, 0.99)]
    assert cv.first_reaching(curve, 0.97) == (100, 2.4)
    assert cv.first_reaching(curve, 0.995) is None
    rows = [{"nodes": 1, "staleness": 0, "svb": "off", "overlap": True, "iteration_s": 0.25},
            {"nodes": 4, "staleness": 0, "svb": "off", "overlap": False, "iteration_s": 0.09},
            {"nodes": 4, "staleness": 0, "svb": "off", "overlap": True, "iteration_s": 0.08},
            {"nodes": 4, "staleness": 2, "svb": "auto", "overlap": True, "iteration_s": 0.07}]
    assert cv.match_scaling(rows, 1, 2)["iteration_s"] == 0.25      # one node: no PS, any s
    assert cv.match_scaling(rows, 4, 0)["iteration_s"] == 0.08      # overlap on preferred
    assert cv.match_scaling(rows, 4, 1) is None                     # nothing measured
    assert cv.match_scaling(rows, 2, 0) is None
    # 100 iterations to 97% at 80 ms each = 8 s; without a row or without reaching it: None
    assert cv.projected_seconds(100, cv.match_scaling(rows, 4, 0)) == pytest.approx(8.0)
    assert cv.projected_seconds(100, None) is None and cv.projected_seconds(None, rows[0]) is None


def test_scaling_rows_missing_file_gives_none(tmp_path):
    assert cv.scaling_rows(str(tmp_path / "scaling.json")) == []
    (tmp_path / "scaling.json").write_text(json.dumps({"rows": [{"nodes": 2, "staleness": 0,
                                                                   "iteration_s": 0.1}]}))
    assert cv.scaling_rows(str(tmp_path / "scaling.json"))[0]["_source"] == "scaling.json"


def _run(n, s, acc, it=1200):
    return {"clients": n, "staleness": s, "final_accuracy": acc, "final_iteration": it}


def test_checks_pass_and_miss_by_hand():
    # 1 image of 296 = 0.338 points: one image off passes s=0 (limit 0.5), two images off miss
    # it; for s=2 (limit 1) two images off pass, three (1.014 points), either way, miss
    base = 290 / 296
    runs = [_run(1, None, base), _run(4, 0, 289 / 296), _run(4, 2, 288 / 296)]
    c = cv.check(runs)
    assert [x["result"] for x in c] == ["PASS", "PASS"]
    assert c[0]["diff_points"] == pytest.approx(-100 / 296, abs=1e-3)
    runs = [_run(1, None, base), _run(4, 0, 288 / 296), _run(4, 2, 293 / 296)]
    assert [x["result"] for x in cv.check(runs)] == ["MISS", "MISS"]   # +1.01 is not within 1
    assert cv.check([_run(1, None, base)])[0]["why"] == "not run"
    assert cv.check([_run(1, None, base), _run(4, 0, base, it=600)])[0]["result"] == "MISS"


def test_configure_splits_the_batches(tmp_path):
    d = dc.prepare(str(tmp_path), "n4", 12, True, 300)
    cv.configure(d, 48, 4, 300, 25)
    net = open(pathlib.Path(d) / "digits_net.prototxt").read()
    sol = open(pathlib.Path(d) / "digits_solver.prototxt").read()
    assert re.search(r"digits_train_lmdb\" batch_size: 12 ", net)
    assert re.search(r"digits_test_lmdb\" batch_size: 37 ", net)
    assert net.count("shared_file_system: true") == 2
    for line in ("test_iter: 8", "test_interval: 25", "max_iter: 300", "random_seed: 1701",
                 "snapshot_after_train: false"):
        assert re.search(rf"^{line}$", sol, re.M), line


def test_tiny_real_run(tmp_path):
    js, png = tmp_path / "c.json", tmp_path / "c.png"
    rc = cv.main(["--max-iter", "20", "--test-interval", "10", "--clients", "2", "--staleness", "0",
                  "--json", str(js), "--png", str(png), "--keep", str(tmp_path / "work"),
                  "--scaling-json", str(tmp_path / "none.json")])
    doc = json.loads(js.read_text())
    assert rc == 1                                    # the 4-client targets were not run
    assert [c["why"] for c in doc["checks"]] == ["not run", "not run"]
    one, two = doc["runs"]
    assert [p["iteration"] for p in one["curve"]] == [0, 10, 20]
    assert [p["iteration"] for p in two["curve"]] == [0, 10, 20]
    for r in (one, two):       # every test scores each of the 296 images once: whole counts
        for p in r["curve"]:
            assert p["accuracy"] * 296 == pytest.approx(round(p["accuracy"] * 296), abs=1e-3)
    assert one["curve"][0]["accuracy"] == pytest.approx(two["curve"][0]["accuracy"], abs=1e-6)
    assert two["curve"][-1]["epoch"] == pytest.approx(20 * 48 / 1501, abs=1e-4)
    assert png.stat().st_size > 10000


def test_reproject_uses_a_later_scaling_json(tmp_path, capsys):
    def curve(accs):
        return [{"iteration": 50 * i, "samples": 2400 * i, "epoch": cv.epochs(50 * i, 48),
                 "seconds": 1.0 * i, "accuracy": acc} for i, acc in enumerate(accs)]
    runs = [dict(_run(1, None, 0.98, it=100), name="1 node", curve=curve([0.2, 0.97, 0.98])),
            dict(_run(4, 0, 0.98, it=100), name="4 clients s=0", curve=curve([0.2, 0.96, 0.98])),
            dict(_run(4, 2, 0.975, it=100), name="4 clients s=2", curve=curve([0.2, 0.95, 0.975]))]
    old = {"global_batch": 48, "max_iter": 100, "tta": 0.97, "svb": "off", "cpu_count": 2,
           "runs": runs}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "scaling.json").write_text(json.dumps({"rows": [
        {"net": "alexnet", "nodes": 1, "staleness": 0, "svb": "off", "overlap": True, "iteration_s": 1.15},
        {"net": "alexnet", "nodes": 4, "staleness": 0, "svb": "off", "overlap": True, "iteration_s": 1.26}]}))
    rc = cv.main(["--reproject", str(tmp_path / "old.json"), "--scaling-json", str(tmp_path / "scaling.json"),
                  "--json", str(tmp_path / "new.json"), "--png", str(tmp_path / "new.png")])
    new = json.loads((tmp_path / "new.json").read_text())
    assert rc == 0 and [c["result"] for c in new["checks"]] == ["PASS", "PASS"]   # 0.0 and -0.5
    t = [r["tta"] for r in new["runs"]]
    assert [x["iterations"] for x in t] == [50, 100, 100]
    assert t[0]["projected_seconds"] == pytest.approx(50 * 1.15)
    assert t[1]["projected_seconds"] == pytest.approx(100 * 1.26)
    assert t[2]["projected_seconds"] is None                         # no 4-node s=2 row
    out = capsys.readouterr().out
    assert out.count(cv.NO_TIME) == 1 and "projected: 100 x 1260.0 ms, alexnet svb off" in out
