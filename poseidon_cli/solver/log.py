"""Caffe's training log, line for line, with glog's prefix so Caffe's log tools parse it.

Every line is ``IMMDD HH:MM:SS.micro PID file.py:LINE] message`` (exactly four tokens before the
message: ``parse_log.sh`` reads awk fields by position, ``extract_seconds.py`` reads the time).
Numbers are printed like C++ ``ostream`` defaults (6 significant digits, ``%g``), so
``Iteration 100, loss = 0.693147`` looks as in Caffe (the older form, the one ``parse_log.sh``
reads by field position; the speed follows on its own line ``Iteration 100, 12.3 iter/s,
8.1s/100 iters``).

``TrainLog(streams)`` writes to every stream in ``streams`` (e.g. stderr and the run's log file).
When one of them is a terminal, :meth:`TrainLog.progress` keeps a one-line progress indicator
(iterations/second and ETA) at the bottom; it is cleared before each log line and never written
to files.
"""
from __future__ import annotations

import os
import sys
import time


def fmt(value) -> str:
    """A number as C++ ``ostream << value`` prints it (6 significant digits)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return "%g" % value


def glog_prefix(level: str = "I", when: float | None = None, where: str = "solver.py:0",
                pid: int | None = None) -> str:
    when = time.time() if when is None else when
    lt = time.localtime(when)
    micro = int((when - int(when)) * 1e6)
    return (f"{level}{lt.tm_mon:02d}{lt.tm_mday:02d} {lt.tm_hour:02d}:{lt.tm_min:02d}:{lt.tm_sec:02d}"
            f".{micro:06d} {os.getpid() if pid is None else pid} {where}]")


class TrainLog:
    """Writes glog-formatted lines to several streams; optional terminal progress line."""

    def __init__(self, streams=None, progress: bool | None = None):
        self.streams = list(streams) if streams is not None else [sys.stderr]
        tty = [s for s in self.streams if _isatty(s)]
        self._tty = tty[0] if tty else None
        self.show_progress = bool(self._tty) if progress is None else (progress and bool(self._tty))
        self._progress_shown = False
        self.lines = []  # kept when ``keep`` is set, for tests
        self.keep = False

    def _emit(self, level, msg, depth):
        frame = sys._getframe(depth + 1)
        where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
        line = f"{glog_prefix(level, where=where)} {msg}"
        self._clear_progress()
        for s in self.streams:
            s.write(line + "\n")
            s.flush()
        if self.keep:
            self.lines.append(line)
        return line

    def info(self, msg: str, depth: int = 1):
        return self._emit("I", msg, depth)

    def warning(self, msg: str, depth: int = 1):
        return self._emit("W", msg, depth)

    def error(self, msg: str, depth: int = 1):
        return self._emit("E", msg, depth)

    def progress(self, it: int, start_it: int, stop_it: int, started: float):
        """Redraw ``[it/stop] X it/s, ETA m:ss`` on the terminal (no-op without one)."""
        if not self.show_progress:
            return
        elapsed = max(time.time() - started, 1e-9)
        done = it - start_it
        rate = done / elapsed
        left = (stop_it - it) / rate if rate > 0 else float("inf")
        eta = "?" if left == float("inf") else _clock(left)
        self._tty.write(f"\r\x1b[K[{it}/{stop_it}] {rate:.2f} it/s, elapsed {_clock(elapsed)}, ETA {eta}")
        self._tty.flush()
        self._progress_shown = True

    def _clear_progress(self):
        if self._progress_shown:
            self._tty.write("\r\x1b[K")
            self._tty.flush()
            self._progress_shown = False

    def close_progress(self):
        self._clear_progress()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except Exception:
        return False
