"""Faults a person can act on: port in use, unreachable peer, mismatched solver, Ctrl-C, a dead
peer named whatever the error's wording."""
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

import inprocess
from cluster_helpers import make_digits, write_job
from poseidon_cli.errors import ClusterError
from poseidon_cli.ps.store import ShardStore
from test_cluster_processes import free_ports, poseidon, write_hosts


def test_port_in_use_is_named(tmp_path):
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=5)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    (tmp_path / "hosts.txt").write_text(f"0 127.0.0.1 {port}\n1 127.0.0.1 {free_ports(1)[0]}\n")
    try:
        r = poseidon("train", "--solver", solver, "--hosts", str(tmp_path / "hosts.txt"),
                     "--client-id", "0", "--deadline", "5", timeout=60)
    finally:
        busy.close()
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{port}" in last and "in use" in last, last
    assert "Traceback" not in r.stderr


def test_port_in_use_under_the_local_launcher_is_said_at_start_on_the_terminal(tmp_path):
    """The cause (host, port, in use) reaches the user's terminal as soon as the client fails,
    not only the log of the client whose port it was, and not after the deadline."""
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=5)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    (tmp_path / "hosts.txt").write_text(f"0 127.0.0.1 {free_ports(1)[0]}\n1 127.0.0.1 {port}\n")
    t0 = time.monotonic()
    try:
        r = poseidon("train", "--solver", solver, "--hosts", str(tmp_path / "hosts.txt"),
                     "--deadline", "30", timeout=120)
    finally:
        busy.close()
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    said = [ln for ln in r.stderr.splitlines() if "client 1" in ln and "exited with code 2" in ln]
    assert said and f"127.0.0.1:{port}" in said[0] and "in use" in said[0], r.stderr[-2000:]
    assert took < 25, took   # well before the 30 s deadline
    assert "Traceback" not in r.stderr


def test_unreachable_peer_is_named_after_retrying(tmp_path):
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=5)
    p0, p1 = free_ports(2)
    (tmp_path / "hosts.txt").write_text(f"0 127.0.0.1 {p0}\n1 127.0.0.1 {p1}\n")
    t0 = time.monotonic()
    r = poseidon("train", "--solver", solver, "--hosts", str(tmp_path / "hosts.txt"),
                 "--client-id", "0", "--deadline", "3", timeout=60)
    took = time.monotonic() - t0
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert f"127.0.0.1:{p1}" in last and "client 1" in last, last
    assert took >= 3  # it retried for the deadline before giving up


def test_mismatched_solver_is_rejected_naming_the_field(tmp_path):
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=5, lr=0.05)
    b = write_job(tmp_path / "b", paths, batch=4, iters=5, lr=0.01)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    procs = [subprocess.Popen([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", s, "--hosts",
                               str(hosts), "--client-id", str(k), "--deadline", "10",
                               "--output-dir", str(tmp_path / f"out{k}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, s in enumerate((a, b))]
    errs = [p.communicate(timeout=60)[1] for p in procs]
    assert any(p.returncode != 0 for p in procs)
    text = "\n".join(errs)
    assert "base_lr=0.05" in text and "base_lr=0.01" in text, text[-2000:]


def test_ctrl_c_stops_every_local_client(tmp_path):
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=100000)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    launcher = subprocess.Popen([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", solver,
                                 "--hosts", str(hosts), "--deadline", "20"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    time.sleep(8)
    children = subprocess.run(["pgrep", "-f", "--", f"--hosts {hosts}"], capture_output=True, text=True).stdout.split()
    children = [int(c) for c in children if int(c) != launcher.pid]
    assert len(children) >= 2, children
    launcher.send_signal(signal.SIGINT)
    launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    time.sleep(0.5)
    for pid in children:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, f"client process {pid} survived Ctrl-C"


class _Died(Exception):
    pass


@pytest.mark.parametrize("per_client,dead", [(1, 1), (2, 3)])
def test_dead_peer_is_named_from_the_error_fields_whatever_the_wording(tmp_path, monkeypatch,
                                                                       per_client, dead):
    """Every shard error gets a wording that mentions no worker, shard or client; worker 0 still
    names the client of the dead worker (rank r lives on client r // T) with its address."""
    reworded = "the parameter server gave up (wording changed by the test)"
    original = ShardStore._error
    monkeypatch.setattr(ShardStore, "_error", lambda self, message, hint=None, lost_workers=():
                        original(self, reworded, hint, lost_workers=lost_workers))
    paths = make_digits(tmp_path)
    job = write_job(tmp_path / "job", paths, batch=4, iters=20)
    workers = inprocess.build_cluster(job, 2 * per_client, shards=2, deadline_s=10.0)
    hosts = [SimpleNamespace(address=f"10.0.0.{k + 1}:7000") for k in range(2)]
    for w in workers:
        w.spec = SimpleNamespace(client_id=w.rank // per_client, workers_per_client=per_client,
                                 worker_index=w.rank % per_client, hosts=hosts)
    victim = workers[dead]

    def die():
        if victim.solver.iter == 3:
            for tr in victim.client.transports:
                tr.kill(dead)
            raise _Died()

    victim.solver.add_callback(die, lambda: None)
    errors = {}

    def run(w):
        try:
            w.run()
        except BaseException as e:  # noqa: BLE001 - inspected below
            errors[w.rank] = e

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in workers:
        w.close()
    assert isinstance(errors.get(dead), _Died)
    err = errors[0]
    assert isinstance(err, ClusterError), err
    text = err.one_line()
    assert reworded in text                      # the shard's message really was reworded
    assert text.startswith("client 0" + (" worker 0" if per_client > 1 else "") + ": ")
    assert "-> client 1 (10.0.0.2:7000) is gone" in text, text
    assert err.lost_workers == (dead,)
