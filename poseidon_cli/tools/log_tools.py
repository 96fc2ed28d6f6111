"""Training logs -> Caffe's CSV tables and curve plots (``poseidon parse-log``, ``poseidon plot``).

``parse_log(path) -> (train_rows, test_rows)`` reads a glog-format training log (ours or Caffe's)
the way Caffe's ``tools/extra/parse_log.py`` does, so the CSVs it writes are the ones existing
notebooks read:

- timing starts at the line containing ``Solving``; lines before it are not parsed, and nothing
  is parsed before the first ``Iteration N`` line; the year comes from the file's ctime (glog
  omits it) and advances when the month goes backwards;
- every row is an ``OrderedDict``: ``NumIters`` (float), ``Seconds`` (float, since ``Solving``),
  ``LearningRate`` (the last ``lr = X`` seen, NaN before the first; the first row takes the
  second row's), then one column per ``Train net output`` / ``Test net output`` name, in the
  order they first appear;
- a row is kept once it has as many columns as the first row; the first row is kept when the
  second iteration's outputs begin. An incomplete last row is dropped (so a log with outputs for
  one iteration only gives no rows) - Caffe's behaviour, kept so the files match.

``write_csv(path, rows)`` writes one table like Caffe (``csv.excel``: CRLF line ends, the header
from the first row's keys, floats as Python prints them) and writes nothing for no rows;
``save_csv_files(log, out_dir)`` writes ``<log basename>.train`` and ``.test`` there.

``plot(logs, out_png, x="iters"|"seconds", y="loss"|"accuracy"|"lr")`` draws one line per
matching column of every log (train and test loss; test accuracies; the learning rate) into a
PNG. matplotlib is optional (the ``[plot]`` extra): without it ``plot`` raises ``PlotUnavailable``,
a one-line ``PoseidonError``. ``write_run_curves(log)`` is the end-of-training variant: it
writes ``<log without .log>.curves.png`` beside the log and returns its path, or returns None
(never raises) when matplotlib is missing or the log has nothing to draw.

Errors (``LogError``): a log that does not exist or has no ``Solving`` line.
"""
from __future__ import annotations

import csv
import datetime
import math
import os
import re
from collections import OrderedDict

from ..errors import PoseidonError


class LogError(PoseidonError):
    """A file that cannot be read as a training log."""


class PlotUnavailable(PoseidonError):
    """matplotlib is not installed."""


_ITERATION = re.compile(r"Iteration (\d+)")
_TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
_TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
_LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")

X_AXES = ("iters", "seconds")
Y_AXES = ("loss", "accuracy", "lr")


def line_time(line: str, year: int) -> datetime.datetime:
    """The time in a glog prefix ``IMMDD HH:MM:SS.micro ...``; ValueError when there is none."""
    fields = line.strip().split()
    if len(fields) < 2 or len(fields[0]) < 5:
        raise ValueError("no glog prefix")
    month, day = int(fields[0][1:3]), int(fields[0][3:5])
    stamp = fields[1]
    dot = stamp.rfind(".")
    hour, minute, second = (int(v) for v in stamp[:dot].split(":"))
    return datetime.datetime(year, month, day, hour, minute, second, int(stamp[dot + 1:]))


def _start_time(lines, year):
    for line in lines:
        if "Solving" in line:
            return line_time(line, year)
    return None


def _add_output(regex, row, rows, line, iteration, seconds, rate):
    match = regex.search(line)
    if match:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds),
                               ("LearningRate", rate)])
        row[match.group(2)] = float(match.group(3))
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def parse_log(path):
    """(train rows, test rows) of the log at ``path``; see the module docstring."""
    if not os.path.isfile(path):
        raise LogError(f"{path}: no such log file")
    year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
    train, test = [], []
    train_row = test_row = None
    iteration = -1
    rate = float("nan")
    with open(path, errors="replace") as f:
        start = _start_time(f, year)
        if start is None:
            raise LogError(f"{path}: no 'Solving' line, so not a Caffe or poseidon training log",
                           "give the log that `poseidon train` wrote (<output dir>/<name>.log)")
        last = start
        for line in f:
            match = _ITERATION.search(line)
            if match:
                iteration = float(match.group(1))
            if iteration == -1:
                continue
            try:
                when = line_time(line, year)
            except ValueError:
                continue  # a line without a glog prefix (e.g. a resumed solver's banner)
            if when.month < last.month:
                year += 1
                when = line_time(line, year)
            last = when
            seconds = (when - start).total_seconds()
            match = _LEARNING_RATE.search(line)
            if match:
                rate = float(match.group(1))
            train_row = _add_output(_TRAIN_OUTPUT, train_row, train, line, iteration, seconds, rate)
            test_row = _add_output(_TEST_OUTPUT, test_row, test, line, iteration, seconds, rate)
    for rows in (train, test):
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def write_csv(path, rows, delimiter=","):
    """One table in Caffe's CSV form; returns False (writing nothing) when ``rows`` is empty."""
    if not rows:
        return False
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), dialect=csv.excel,
                                delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return True


def save_csv_files(log_path, output_dir, delimiter=","):
    """Write ``<output_dir>/<log basename>.train`` and ``.test``; returns the paths written."""
    train, test = parse_log(log_path)
    if not os.path.isdir(output_dir):
        raise LogError(f"{output_dir}: output folder does not exist")
    base = os.path.join(output_dir, os.path.basename(log_path))
    return [p for p, rows in ((base + ".train", train), (base + ".test", test))
            if write_csv(p, rows, delimiter)]


def _is_accuracy(name):
    return "accuracy" in name or "top-" in name


def series(log_path, x="iters", y="loss"):
    """[(label, xs, ys)] that ``plot`` draws for one log."""
    if x not in X_AXES:
        raise LogError(f"--x {x}: use one of {', '.join(X_AXES)}")
    if y not in Y_AXES:
        raise LogError(f"--y {y}: use one of {', '.join(Y_AXES)}")
    train, test = parse_log(log_path)
    xkey = "NumIters" if x == "iters" else "Seconds"
    name = os.path.basename(log_path)
    out = []
    if y == "lr":
        tables = [("train", train, ["LearningRate"])]
    else:
        pick = (lambda c: "loss" in c and not _is_accuracy(c)) if y == "loss" else _is_accuracy
        tables = [(kind, rows, [c for c in (rows[0] if rows else ()) if c not in
                                ("NumIters", "Seconds", "LearningRate") and pick(c)])
                  for kind, rows in (("train", train), ("test", test))]
    for kind, rows, columns in tables:
        for col in columns:
            pts = [(r[xkey], r[col]) for r in rows if col in r and not math.isnan(r[col])]
            if pts:
                label = f"{name}: {kind} {col}" if y != "lr" else f"{name}: learning rate"
                out.append((label, [p[0] for p in pts], [p[1] for p in pts]))
    return out


def _pyplot():
    try:
        import matplotlib  # noqa: PLC0415 (optional dependency)
        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise PlotUnavailable("plotting needs matplotlib, which is not installed",
                              "pip install 'poseidon-cli[plot]'") from None
    return plt


def plot(log_paths, out_png, x="iters", y="loss", width=8.0, height=5.0, dpi=100):
    """Draw ``y`` against ``x`` for every log into ``out_png``; returns the number of lines."""
    if isinstance(log_paths, str):
        log_paths = [log_paths]
    lines = [s for path in log_paths for s in series(path, x, y)]
    if not lines:
        raise LogError(f"{', '.join(log_paths)}: no {y} values to plot",
                       "the log needs 'Train net output' / 'Test net output' lines "
                       "(display > 0 and test_interval in the solver)")
    folder = os.path.dirname(os.path.abspath(out_png))
    if not os.path.isdir(folder):
        raise LogError(f"-o {out_png}: folder {folder} does not exist")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(width, height), dpi=dpi)
    try:
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=label)
        ax.set_xlabel("iterations" if x == "iters" else "seconds")
        ax.set_ylabel({"loss": "loss", "accuracy": "accuracy", "lr": "learning rate"}[y])
        if y == "lr" and all(v > 0 for _, _, ys in lines for v in ys):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out_png, format="png")
    finally:
        plt.close(fig)
    return len(lines)


def curves_path(log_path: str) -> str:
    stem = log_path[:-4] if log_path.endswith(".log") else log_path
    return stem + ".curves.png"


def write_run_curves(log_path, png_path=None):
    """End of ``poseidon train``: the run's loss curves beside its log, or None when matplotlib
    is missing or there is nothing to draw. Never raises for a plotting problem: a finished
    training run must not fail because of its picture."""
    png_path = png_path or curves_path(log_path)
    try:
        plot([log_path], png_path, x="iters", y="loss")
    except PoseidonError:
        return None
    except Exception:  # noqa: BLE001 (a matplotlib backend problem; the run itself succeeded)
        return None
    return png_path
