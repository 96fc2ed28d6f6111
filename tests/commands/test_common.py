"""commands/common.py: the one device rule and the one run-folder rule every command uses."""
import os

import numpy as np
import pytest
from click.testing import CliRunner

from poseidon_cli import backend
from poseidon_cli.cli import main
from poseidon_cli.commands.common import gpu_ids, run_dir, run_name, select_device
from poseidon_cli.errors import ConfigError


def test_cpu_and_gpu_together_are_refused():
    with pytest.raises(ConfigError, match="give either --cpu or --gpu, not both"):
        select_device("0", True)


def test_cpu_is_numpy():
    assert select_device(None, True) is np


@pytest.mark.parametrize("text,ids", [("0", [0]), ("0,1", [0, 1]), (" 2 , 3 ", [2, 3]), ("all", [0])])
def test_gpu_ids(text, ids):
    assert gpu_ids(text) == ids


@pytest.mark.parametrize("text", ["x", ",", "0,y"])
def test_bad_gpu_ids_are_one_line_errors(text):
    with pytest.raises(ConfigError, match=f"--gpu {text}: expected GPU ids like 0 or 0,1"):
        gpu_ids(text)


def test_unusable_gpu_is_a_config_error():
    if backend.gpu_available():
        pytest.skip("a GPU exists here")
    with pytest.raises(ConfigError):
        select_device("0", False)


@pytest.mark.parametrize("stem,name", [("lenet_solver.prototxt", "lenet"), ("a.pbtxt", "a"),
                                       ("_solver.prototxt", "_solver"), ("run.txt", "run"),
                                       ("plain", "plain")])
def test_run_name(stem, name):
    assert run_name(os.path.join("some", "dir", stem)) == name


def test_run_dir_rules(tmp_path):
    solver = str(tmp_path / "job" / "s.prototxt")
    # --output-dir wins, created
    assert run_dir(solver, str(tmp_path / "out"), snapshot_prefix=str(tmp_path / "snap/x")) == \
        str(tmp_path / "out")
    assert (tmp_path / "out").is_dir()
    # one machine without it: beside the snapshots
    assert run_dir(solver, None, snapshot_prefix=str(tmp_path / "snap" / "x")) == str(tmp_path / "snap")
    # else the solver's folder; a cluster name is a subfolder of the base
    assert run_dir(solver) == str(tmp_path / "job")
    assert run_dir(solver, name="net.S0.M2.T1") == str(tmp_path / "job" / "net.S0.M2.T1")
    assert (tmp_path / "job" / "net.S0.M2.T1").is_dir()


def test_run_dir_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="--output-dir .*file.*sub"):
        run_dir(str(tmp_path / "s.prototxt"), str(tmp_path / "file" / "sub"))


def test_unknown_machine_in_a_remote_hosts_file_is_one_line_exit_2(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0 10.255.0.1 9000\n1 10.255.0.2 9000\n")
    (tmp_path / "n.prototxt").write_text(
        'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n')
    solver = tmp_path / "s.prototxt"   # a valid solver: only the hosts file is wrong
    solver.write_text(f'net: "{tmp_path / "n.prototxt"}"\nbase_lr: 0.01\nlr_policy: "fixed"\n'
                      'max_iter: 1\n')
    r = CliRunner().invoke(main, ["train", "--solver", str(solver), "--hosts", str(hosts)])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poseidon: error: ")
    assert "hosts.txt: cannot tell which line is this machine" in lines[0] and "--client-id" in lines[0]
