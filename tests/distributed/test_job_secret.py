"""The job secret and TLS through the command line: a hand-started client needs the secret, clients
given different secrets say so, the local launcher makes one for its children, and a local cluster
trains with --secret-file and mutual TLS on both planes."""
import shutil
import subprocess
import sys

import pytest

from cluster_helpers import make_digits, read_caffemodel, rel_diff, write_job
from tls_helpers import make_pki
from test_cluster_processes import poseidon, write_hosts


def test_a_client_without_a_secret_is_told_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("POSEIDON_SECRET")
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=2)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    r = poseidon("train", "--solver", solver, "--hosts", str(hosts), "--client-id", "1", timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poseidon: error:"), r.stderr
    assert "no job secret" in lines[0] and "--secret-file" in lines[0] and "POSEIDON_SECRET" in lines[0]


def test_clients_with_different_secrets_name_the_secret_not_a_dead_peer(tmp_path, monkeypatch):
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=5)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    procs = []
    for k in range(2):
        (tmp_path / f"s{k}").write_text(f"secret-of-client-{k}-" + "x" * 20)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", solver, "--hosts",
             str(hosts), "--client-id", str(k), "--deadline", "8", "--secret-file",
             str(tmp_path / f"s{k}"), "--output-dir", str(tmp_path / f"out{k}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=90)[1] for p in procs]
    assert all(p.returncode == 2 for p in procs), errs
    lasts = [err.strip().splitlines()[-1] for err in errs]
    # the first to reach the other's shard is refused and says why; the other may only see it go
    assert any("refused our credentials" in x and "same job secret" in x for x in lasts), lasts
    assert not any("Traceback" in err for err in errs)


def test_local_launcher_makes_a_secret_and_tls_cluster_trains(tmp_path, monkeypatch):
    """The launcher's children get its fresh secret (none is set here); a second run with
    --secret-file and mutual TLS reaches the same weights."""
    monkeypatch.delenv("POSEIDON_SECRET")
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "plain", paths, batch=4, iters=6)
    r = poseidon("train", "--solver", solver, "--hosts", str(write_hosts(tmp_path / "h1.txt", 2)),
                 "--deadline", "30", timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    if shutil.which("openssl") is None:
        pytest.skip("the TLS half needs the openssl command to make certificates")
    tls = make_pki(tmp_path / "pki", "job")
    (tmp_path / "job.secret").write_text("a-shared-secret-for-this-job-0123456789\n")
    solver2 = write_job(tmp_path / "tls", paths, batch=4, iters=6)
    r = poseidon("train", "--solver", solver2, "--hosts", str(write_hosts(tmp_path / "h2.txt", 2)),
                 "--deadline", "30", "--secret-file", str(tmp_path / "job.secret"),
                 "--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    a = read_caffemodel(tmp_path / "plain/snap/tiny_iter_6.caffemodel")
    b = read_caffemodel(tmp_path / "tls/snap/tiny_iter_6.caffemodel")
    for k in a:
        assert rel_diff(a[k], b[k]) < 1e-5, k
