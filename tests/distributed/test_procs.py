"""Supervisor: the one spawner. Failures are reported once, with the child's name; every wait
has a deadline; stop() ends whatever still runs."""
import signal
import sys
import time

import pytest

from poseidon_cli.distributed.procs import Supervisor
from poseidon_cli.errors import ClusterError


def py(code):
    return [sys.executable, "-c", code]


def test_watch_returns_the_first_failure_after_the_grace_period_and_stop_ends_the_rest(tmp_path):
    with Supervisor() as sup:
        sup.start("client 0", py("import time; time.sleep(60)"))
        bad = sup.start("client 1", py("import sys; sys.exit(3)"), str(tmp_path / "c1.log"))
        t0 = time.monotonic()
        got = sup.watch(grace_s=0.5, poll_s=0.02)
        assert got is bad and got.returncode == 3
        assert 0.5 <= time.monotonic() - t0 < 30
        sup.stop(signal.SIGTERM, grace_s=5.0)
        assert all(c.returncode is not None for c in sup.children)


def test_watch_is_none_when_all_succeed(tmp_path):
    with Supervisor() as sup:
        for k in range(2):
            sup.start(f"client {k}", py("print('hi')"), str(tmp_path / f"c{k}.log"))
        assert sup.watch(grace_s=1.0, poll_s=0.02) is None
    assert (tmp_path / "c1.log").read_text().strip() == "hi"


def test_wait_all_names_the_failed_child_and_its_log(tmp_path):
    with Supervisor() as sup:
        sup.start("worker 1 of client 0", py("import sys; sys.exit(4)"),
                  str(tmp_path / "client_0.worker_1.log"))
        with pytest.raises(ClusterError) as e:
            sup.wait_all(30)
    assert e.value.one_line().startswith("worker 1 of client 0 exited with code 4")
    assert "client_0.worker_1.log" in e.value.one_line()


def test_wait_all_has_a_deadline_naming_who_it_waited_for():
    with Supervisor() as sup:
        sup.start("worker 2 of client 1", py("import time; time.sleep(60)"))
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="worker 2 of client 1 did not finish within 1s"):
            sup.wait_all(1.0)
        assert time.monotonic() - t0 < 20
    assert sup.children[0].returncode is not None   # leaving the block stopped it


def test_a_command_that_cannot_start_is_named(tmp_path):
    with Supervisor() as sup, pytest.raises(ClusterError, match="cannot start client 3"):
        sup.start("client 3", [str(tmp_path / "no-such-program")])
