"""The cluster scripts in examples/cluster start a working cluster (ssh replaced by a local shell)."""
import os
import pathlib
import subprocess
import sys

from cluster_helpers import make_digits, write_job
from test_cluster_processes import write_hosts

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "cluster"


def test_train_cluster_sh_starts_every_client_with_its_id(tmp_path):
    paths = make_digits(tmp_path)
    solver = write_job(tmp_path / "job", paths, batch=4, iters=10)
    hosts = write_hosts(tmp_path / "hosts.txt", 2)
    fake_ssh = tmp_path / "fake_ssh"
    # drop ssh options and the host name, run the command locally
    fake_ssh.write_text('#!/usr/bin/env bash\nwhile [ "$1" = "-o" ]; do shift 2; done\nshift\nexec bash -c "$1"\n')
    fake_ssh.chmod(0o755)
    env = dict(os.environ, SSH=str(fake_ssh), POSEIDON=f"{sys.executable} -m poseidon_cli.cli",
               OUTPUT_DIR=str(tmp_path / "out"), DEADLINE="30")
    r = subprocess.run(["bash", str(EXAMPLES / "train_cluster.sh"), solver, str(hosts)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "client 0 on 127.0.0.1" in r.stdout and "client 1 on 127.0.0.1" in r.stdout
    assert "--client-id 1" in r.stdout
    assert "Optimization Done." in r.stdout + r.stderr
    assert (tmp_path / "out" / "stats.client1.json").exists()
    assert (tmp_path / "job" / "snap" / "tiny_iter_10.caffemodel").exists()


def test_cluster_scripts_parse():
    for script in ("train_cluster.sh", "slurm_train.sbatch", "mpirun_train.sh"):
        subprocess.run(["bash", "-n", str(EXAMPLES / script)], check=True)
