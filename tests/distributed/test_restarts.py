"""The local launcher's life cycle: `--max-restarts` resumes a failed cluster from its latest
snapshot, `--snapshot latest` on one machine, SIGTERM to the launcher, and a launcher killed outright
(its clients must not train on unsupervised)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job
from test_cluster_processes import poseidon, write_hosts

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def children_of(pid):
    """Pids whose parent is ``pid`` (from /proc/<p>/stat)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(name))
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def launch(solver, hosts, *extra):
    return subprocess.Popen([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", solver,
                             "--hosts", str(hosts), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def end_all(proc, clients):
    """Whatever a trial left running: SIGKILL the clients (a SIGSTOPped one included) and the
    launcher, so that a failed trial does not leave processes behind for the next."""
    for c in clients:
        try:
            os.kill(c, signal.SIGKILL)
        except OSError:
            pass
    if proc.poll() is None:
        proc.kill()


def wait_for(pred, timeout_s, what):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def add_snapshots(solver, every):
    with open(solver, "a") as fh:
        fh.write(f"snapshot: {every}\n")


def test_max_restarts_resumes_a_killed_cluster_from_its_latest_snapshot(tmp_path):
    paths = make_digits(tmp_path)
    iters, every = 600, 50
    a = write_job(tmp_path / "a", paths, batch=4, iters=iters)
    add_snapshots(a, every)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    proc = launch(a, hosts, "--max-restarts", "1", "--deadline", "5")
    snap_dir = tmp_path / "a" / "snap"
    try:
        wait_for(lambda: (snap_dir / f"tiny_iter_{every}.solverstate").exists() or proc.poll() is not None,
                 120, "the first snapshot")
        assert proc.poll() is None, "the run ended before it could be interrupted"
        clients = children_of(proc.pid)
        assert len(clients) == 2
        victim = max(clients)   # the later-started child: client 1
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    m = re.search(r"restart 1 of 1: resuming from (\S+_iter_(\d+)\.solverstate)", err)
    assert m, err[-3000:]
    resumed_at = int(m.group(2))
    assert resumed_at >= every and resumed_at % every == 0 and resumed_at < iters
    final_a = read_caffemodel(snap_dir / f"tiny_iter_{iters}.caffemodel")

    # the reference: an uninterrupted run resumed by hand from that same snapshot
    b = write_job(tmp_path / "b", paths, batch=4, iters=iters)
    add_snapshots(b, every)
    hosts_b = write_hosts(tmp_path / "hosts_b.txt", 2)
    state = tmp_path / "ref_state" / os.path.basename(m.group(1))
    state.parent.mkdir()
    shutil.copy(m.group(1), state)
    shutil.copy(m.group(1).replace(".solverstate", ".caffemodel"), state.parent)
    r = poseidon("train", "--solver", b, "--hosts", str(hosts_b), "--snapshot", str(state),
                 "--deadline", "30", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    final_b = read_caffemodel(tmp_path / "b" / "snap" / f"tiny_iter_{iters}.caffemodel")
    for k in final_b:
        assert rel_diff(final_a[k], final_b[k]) < 1e-5, k


def test_without_restarts_the_failure_is_the_exit_code(tmp_path):
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=100000)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    proc = launch(a, hosts, "--deadline", "3")
    try:
        wait_for(lambda: len(children_of(proc.pid)) == 2, 30, "two clients")
        time.sleep(2)
        os.kill(max(children_of(proc.pid)), signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "restart 1 of" not in err


def test_snapshot_latest_on_one_machine(tmp_path):
    paths = make_digits(tmp_path)
    s = write_job(tmp_path / "one", paths, batch=4, iters=20)
    add_snapshots(s, 10)
    r = poseidon("train", "--solver", s, "--snapshot", "latest", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "no snapshot written yet; starting from iteration 0" in r.stderr
    with open(s) as fh:
        text = fh.read().replace("max_iter: 20", "max_iter: 30")
    with open(s, "w") as fh:
        fh.write(text)
    r = poseidon("train", "--solver", s, "--snapshot", "latest", timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"resuming from \S*tiny_iter_20\.solverstate", r.stderr), r.stderr[-2000:]
    assert "Iteration 20" in r.stderr and "Iteration 0," not in r.stderr
    assert (tmp_path / "one" / "snap" / "tiny_iter_30.caffemodel").exists()


def test_max_restarts_needs_a_cluster(tmp_path):
    paths = make_digits(tmp_path)
    s = write_job(tmp_path / "one", paths, batch=4, iters=5)
    r = poseidon("train", "--solver", s, "--max-restarts", "2", timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("poseidon: error: --max-restarts") and "Traceback" not in r.stderr


def test_sigterm_to_the_launcher_stops_every_client(tmp_path):
    """SIGTERM to the launcher alone (a scheduler's stop), 10 trials: the launcher exits 143 and
    every client is gone within 10 s."""
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=100000)
    for trial in range(10):
        hosts = write_hosts(tmp_path / f"hosts{trial}.txt", 2)
        proc = launch(a, hosts, "--deadline", "30")
        clients = []
        try:
            wait_for(lambda: len(children_of(proc.pid)) == 2, 60, "two clients")
            clients = children_of(proc.pid)
            log1 = tmp_path / "a" / "tiny.S0.M2.T1" / "client_1.log"
            wait_for(lambda: log1.exists() and "Iteration 10," in log1.read_text(), 60, "training")
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
            wait_for(lambda: not any(alive(c) for c in clients), max(0.1, 10 - (time.monotonic() - t0)),
                     "every client to end")
            took = time.monotonic() - t0
        finally:
            end_all(proc, clients)
        assert proc.returncode == 143, trial
        assert took < 10.0, (trial, took)


def test_a_launcher_killed_outright_takes_its_clients_along(tmp_path):
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=100000)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    deadline = 10
    proc = launch(a, hosts, "--deadline", str(deadline))
    try:
        wait_for(lambda: len(children_of(proc.pid)) == 2, 30, "two clients")
        clients = children_of(proc.pid)
        time.sleep(3)
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(c) for c in clients), deadline, "the clients to end")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_hung_client_ends_every_process_within_the_deadline(tmp_path):
    """SIGSTOP (a frozen machine) of either client, 10 trials: every process, the launcher
    included, is gone within --deadline + 5 s, and the survivor names the hung client."""
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=100000)
    deadline = 2.0
    for trial in range(10):
        hosts = write_hosts(tmp_path / f"hosts{trial}.txt", 2)
        proc = launch(a, hosts, "--deadline", str(deadline))
        clients = []
        try:
            wait_for(lambda: len(children_of(proc.pid)) == 2, 60, "two clients")
            clients = sorted(children_of(proc.pid))
            log1 = tmp_path / "a" / "tiny.S0.M2.T1" / "client_1.log"
            wait_for(lambda: log1.exists() and "Iteration 10," in log1.read_text(), 60, "training")
            victim = trial % 2
            t0 = time.monotonic()
            os.kill(clients[victim], signal.SIGSTOP)
            proc.wait(timeout=deadline + 5)
            wait_for(lambda: not any(alive(c) for c in clients), deadline + 5 - (time.monotonic() - t0),
                     "every client to end")
            took = time.monotonic() - t0
            err = proc.stderr.read()
        finally:
            end_all(proc, clients)
        assert took < deadline + 5, (trial, took)
        assert proc.returncode not in (0, None), trial
        survivor_says = err if victim == 1 else log1.read_text()
        assert f"client {victim} (127.0.0.1:" in survivor_says and "is gone" in survivor_says, \
            (trial, survivor_says[-1500:])


@pytest.mark.parametrize("effect", ["snapshot", "stop"])
def test_ctrl_c_to_the_group_stops_all_and_snapshots_when_asked(tmp_path, effect):
    """Ctrl-C at the terminal (SIGINT to the whole process group), 10 trials: every process is gone
    within 10 s; with --sigint-effect snapshot client 0 wrote a snapshot that loads, first."""
    paths = make_digits(tmp_path)
    a = write_job(tmp_path / "a", paths, batch=4, iters=100000)
    snap_dir = tmp_path / "a" / "snap"
    for trial in range(10 if effect == "snapshot" else 3):
        if snap_dir.exists():
            shutil.rmtree(snap_dir)
        hosts = write_hosts(tmp_path / f"hosts{trial}.txt", 2)
        proc = subprocess.Popen([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", a,
                                 "--hosts", str(hosts), "--deadline", "30", "--sigint-effect", effect],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        clients = []
        try:
            wait_for(lambda: len(children_of(proc.pid)) == 2, 60, "two clients")
            clients = children_of(proc.pid)
            log1 = tmp_path / "a" / "tiny.S0.M2.T1" / "client_1.log"
            wait_for(lambda: log1.exists() and "Iteration 10," in log1.read_text(), 60, "training")
            t0 = time.monotonic()
            os.killpg(proc.pid, signal.SIGINT)
            err = proc.communicate(timeout=20)[1]
            wait_for(lambda: not any(alive(c) for c in clients), max(0.1, 10 - (time.monotonic() - t0)),
                     "every client to end")
            took = time.monotonic() - t0
        finally:
            end_all(proc, clients)
        assert proc.returncode == 130, (trial, err[-2000:])
        assert took < 10, (trial, took)
        states = sorted(snap_dir.glob("tiny_iter_*.solverstate")) if snap_dir.exists() else []
        if effect == "snapshot":
            assert "client 0 wrote a snapshot" in err, (trial, err[-2000:])
            assert len(states) == 1, (trial, states)
            from poseidon_cli.solver import snapshot as snap
            state = snap.read_solverstate(str(states[0]))
            assert state.iter >= 10 and os.path.isfile(state.learned_net)
            assert read_caffemodel(state.learned_net)
        else:
            assert states == [], (trial, states)
