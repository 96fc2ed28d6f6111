"""parse-log gives the CSV files Caffe's tools/extra/parse_log.py gives on the same lines (the
expected files are written out by hand below, from parse_log.py's documented rules); plot writes
a PNG with the curves in it."""
import datetime
import os
import sys
import time

import pytest
from click.testing import CliRunner

from poseidon_cli.cli import main
from poseidon_cli.solver.log import glog_prefix
from poseidon_cli.tools import log_tools

T0 = time.mktime((2026, 12, 2, 10, 0, 0, 0, 0, -1))


def line(dt, msg, where="solver.py:294"):
    # our own log prefix (solver/log.py), at a fixed time and pid
    return f"{glog_prefix('I', T0 + dt, where, pid=4242)} {msg}\n"


# A lenet-style run: test at 0 and 200, display every 100, lr printed after each display (as
# our solver and Caffe's do, so a train row carries the lr of the previous display).
LOG = "".join([
    line(0.0, "Creating training net specified in net file."),
    line(0.0, "Iteration 7 comes before the solver starts: ignored, with this lr = 5"),
    line(0.25, "Solving lenet"),
    line(0.25, "Learning Rate Policy: inv"),
    line(0.5, "Iteration 0, Testing net (#0)"),
    line(1.25, "    Test net output #0: accuracy = 0.0975"),
    line(1.25, "    Test net output #1: loss = 2.30259 (* 1 = 2.30259 loss)"),
    line(1.5, "Iteration 0, loss = 2.31"),
    line(1.5, "    Train net output #0: loss = 2.31 (* 1 = 2.31 loss)"),
    line(1.5, "Iteration 0, lr = 0.01"),
    line(3.0, "Iteration 100, loss = 0.5"),
    line(3.0, "Iteration 100, 66.7 iter/s, 1.5s/100 iters"),
    line(3.0, "    Train net output #0: loss = 0.5 (* 1 = 0.5 loss)"),
    line(3.0, "Iteration 100, lr = 0.00992565"),
    "this line has no glog prefix (a resumed solver's banner)\n",
    line(4.5, "Iteration 200, Testing net (#0)"),
    line(5.0, "    Test net output #0: accuracy = 0.9125"),
    line(5.0, "    Test net output #1: loss = 0.281 (* 1 = 0.281 loss)"),
    line(5.25, "Iteration 200, loss = 0.25"),
    line(5.25, "    Train net output #0: loss = 0.25 (* 1 = 0.25 loss)"),
    line(5.25, "Iteration 200, lr = 0.00985258"),
    line(6.0, "Snapshotting to binary proto file lenet_iter_200.caffemodel"),
    line(6.0, "Optimization Done."),
])

# What parse_log.py writes for LOG (csv.excel: CRLF; floats as Python's str())
EXPECTED_TRAIN = ("NumIters,Seconds,LearningRate,loss\r\n"
                  "0.0,1.25,0.01,2.31\r\n"          # first row: LearningRate of the second row
                  "100.0,2.75,0.01,0.5\r\n"
                  "200.0,5.0,0.00992565,0.25\r\n")
EXPECTED_TEST = ("NumIters,Seconds,LearningRate,accuracy,loss\r\n"
                 "0.0,1.0,0.00992565,0.0975,2.30259\r\n"  # NaN (no lr yet) -> the second row's
                 "200.0,4.75,0.00992565,0.9125,0.281\r\n")


@pytest.fixture
def log_file(tmp_path):
    p = tmp_path / "lenet.log"
    p.write_text(LOG)
    return p


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read().decode()


def test_parse_log_writes_caffes_train_and_test_csv(log_file, tmp_path):
    out = tmp_path / "csv"
    out.mkdir()
    written = log_tools.save_csv_files(str(log_file), str(out))
    assert written == [str(out / "lenet.log.train"), str(out / "lenet.log.test")]
    assert read_bytes(out / "lenet.log.train") == EXPECTED_TRAIN
    assert read_bytes(out / "lenet.log.test") == EXPECTED_TEST


def test_parse_log_cli_defaults_to_the_logs_folder(log_file):
    r = CliRunner().invoke(main, ["parse-log", str(log_file)])
    assert r.exit_code == 0, r.output
    assert read_bytes(str(log_file) + ".train") == EXPECTED_TRAIN
    assert read_bytes(str(log_file) + ".test") == EXPECTED_TEST


def test_tab_delimiter(log_file, tmp_path):
    log_tools.save_csv_files(str(log_file), str(tmp_path), delimiter="\t")
    assert read_bytes(tmp_path / "lenet.log.train") == EXPECTED_TRAIN.replace(",", "\t")


def test_one_iteration_of_outputs_gives_no_rows_as_in_caffe(tmp_path):
    # parse_log.py keeps a row only once a second one starts or it is as long as the first
    p = tmp_path / "short.log"
    p.write_text(line(0, "Solving x") + line(1, "Iteration 0, loss = 1")
                 + line(1, "    Train net output #0: loss = 1"))
    assert log_tools.parse_log(str(p)) == ([], [])
    assert log_tools.save_csv_files(str(p), str(tmp_path)) == []
    assert not (tmp_path / "short.log.train").exists()


def test_new_year_in_the_middle_of_a_run(tmp_path):
    def at(mon, day, hh, mm, ss, msg):
        return f"I{mon:02d}{day:02d} {hh:02d}:{mm:02d}:{ss:02d}.000000 1 solver.py:1] {msg}\n"
    p = tmp_path / "ny.log"
    p.write_text(at(12, 31, 23, 59, 58, "Solving x")
                 + at(12, 31, 23, 59, 59, "Iteration 0, loss = 3")
                 + at(12, 31, 23, 59, 59, "    Train net output #0: loss = 3")
                 + at(1, 1, 0, 0, 2, "Iteration 10, loss = 2")
                 + at(1, 1, 0, 0, 2, "    Train net output #0: loss = 2"))
    train, _ = log_tools.parse_log(str(p))
    assert [(r["NumIters"], r["Seconds"]) for r in train] == [(0.0, 1.0), (10.0, 4.0)]


def test_not_a_training_log(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("hello\n")
    r = CliRunner().invoke(main, ["parse-log", str(p)])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "poseidon: error:" in r.output and "Solving" in r.output
    r = CliRunner().invoke(main, ["parse-log", str(tmp_path / "missing.log")])
    assert r.exit_code == 2 and "no such log file" in r.output


# ---- plot ------------------------------------------------------------------------------------

def colour_pixels(png, rgb, tol=40):
    import numpy as np
    from PIL import Image
    px = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    return int((np.abs(px - np.array(rgb)) <= tol).all(axis=-1).sum())


C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two line colours


def test_plot_writes_a_png_with_the_curves(log_file, tmp_path):
    from PIL import Image
    out = tmp_path / "curves.png"
    r = CliRunner().invoke(main, ["plot", str(log_file), "--y", "loss", "-o", str(out)])
    assert r.exit_code == 0, r.output
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (800, 500)
    # two curves (train loss, test loss): both colours drawn, and much of the image not white
    assert colour_pixels(out, C0) > 200 and colour_pixels(out, C1) > 200
    import numpy as np
    grey = np.asarray(img.convert("L"))
    assert (grey < 250).sum() > 0.01 * 800 * 500


def test_plot_accuracy_seconds_and_lr(log_file, tmp_path):
    acc = log_tools.series(str(log_file), "seconds", "accuracy")
    assert acc == [("lenet.log: test accuracy", [1.0, 4.75], [0.0975, 0.9125])]
    lr = log_tools.series(str(log_file), "iters", "lr")
    assert lr == [("lenet.log: learning rate", [0.0, 100.0, 200.0], [0.01, 0.01, 0.00992565])]
    out = tmp_path / "lr.png"
    assert log_tools.plot([str(log_file)], str(out), y="lr") == 1
    assert colour_pixels(out, C0) > 100 and colour_pixels(out, C1) == 0


def test_plot_several_logs_in_one_picture(log_file, tmp_path):
    other = tmp_path / "other.log"
    other.write_text(LOG.replace("accuracy = 0.9125", "accuracy = 0.5"))
    out = tmp_path / "acc.png"
    assert log_tools.plot([str(log_file), str(other)], str(out), y="accuracy") == 2
    assert colour_pixels(out, C0) > 100 and colour_pixels(out, C1) > 100


def test_plot_without_matplotlib_is_one_line(log_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "c.png"
    r = CliRunner().invoke(main, ["plot", str(log_file), "-o", str(out)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "matplotlib" in r.output and "[plot]" in r.output
    assert not out.exists()
    assert log_tools.write_run_curves(str(log_file)) is None


def test_write_run_curves_beside_the_log(log_file):
    png = log_tools.write_run_curves(str(log_file))
    assert png == str(log_file)[:-4] + ".curves.png" and os.path.getsize(png) > 1000
    empty = log_file.with_name("empty.log")
    empty.write_text(line(0, "Solving x"))
    assert log_tools.write_run_curves(str(empty)) is None


def test_line_time_reads_our_prefix():
    when = log_tools.line_time(line(1.5, "x"), 2026)
    assert when == datetime.datetime(2026, 12, 2, 10, 0, 1, 500000)
