"""Number formatting like C++ ostream and the glog prefix that Caffe's log tools split on."""
import io
import re

from poseidon_cli.solver.log import TrainLog, fmt


def test_fmt_matches_ostream_defaults():
    assert fmt(0.01) == "0.01"
    assert fmt(1e-05) == "1e-05"
    assert fmt(0.0059460355750136) == "0.00594604"
    assert fmt(2.302585093) == "2.30259"
    assert fmt(1234567.0) == "1.23457e+06"
    assert fmt(100) == "100" and fmt(float("nan")) == "nan" and fmt(float("inf")) == "inf"


def test_glog_prefix_has_four_tokens_and_caller_location():
    buf = io.StringIO()
    TrainLog([buf], progress=False).info("Iteration 5, lr = 0.01")
    line = buf.getvalue().rstrip("\n")
    assert re.fullmatch(r"I\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ test_log\.py:\d+\] Iteration 5, lr = 0\.01", line)
    assert line.split()[8] == "0.01"  # parse_log.sh's awk field for the lr


def test_progress_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, plain = Tty(), io.StringIO()
    log = TrainLog([tty, plain])
    log.progress(50, 0, 100, started=0.0)
    log.info("next")
    assert "[50/100]" in tty.getvalue() and "ETA" in tty.getvalue()
    assert "[50/100]" not in plain.getvalue() and plain.getvalue().endswith("next\n")
