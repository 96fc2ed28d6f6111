"""The command line: help, version, upgrade-net, and one-line errors with exit code 2."""
import subprocess
import sys

from click.testing import CliRunner
from google.protobuf import text_format

from poseidon_cli import __version__
from poseidon_cli._proto import caffe_pb2
from poseidon_cli.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_help_on_every_command():
    top = run("--help")
    assert top.exit_code == 0
    for cmd in ("train", "test", "time", "upgrade-net"):
        r = run(cmd, "--help")
        assert r.exit_code == 0, cmd
        assert "Usage" in r.output


def test_upgrade_net_writes_current_format(tmp_path):
    src = tmp_path / "v1.prototxt"
    src.write_text('name: "n" input: "data" input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4 '
                   'layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 blobs_lr: 2 '
                   'convolution_param { num_output: 2 kernel_size: 3 } }')
    dst = tmp_path / "v2.prototxt"
    r = run("upgrade-net", str(src), str(dst))
    assert r.exit_code == 0, r.output
    net = caffe_pb2.NetParameter()
    text_format.Parse(dst.read_text(), net)
    assert [l.type for l in net.layer] == ["Input", "Convolution"]
    assert [p.lr_mult for p in net.layer[1].param] == [1, 2]
    assert "layers {" not in dst.read_text()


def test_conformance_upgrade_is_a_fixed_point(tmp_path, conformance_dir):
    src = conformance_dir / "poseidon/models/bvlc_alexnet/train_val.prototxt"
    once, twice = tmp_path / "once.prototxt", tmp_path / "twice.prototxt"
    assert run("upgrade-net", str(src), str(once)).exit_code == 0
    assert run("upgrade-net", str(once), str(twice)).exit_code == 0
    assert once.read_text() == twice.read_text()


def test_bad_prototxt_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('layer {\n  name: "a"\n  kernel: 3\n}\n')
    proc = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "upgrade-net", str(bad), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{bad}:3:" in lines[0] and "kernel" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_shows_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "--debug", "upgrade-net",
                           str(tmp_path / "missing.prototxt"), str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_snapshot_and_weights_are_exclusive(tmp_path):
    r = run("train", "--solver", str(tmp_path / "s.prototxt"), "--snapshot", "a.solverstate", "--weights", "b.caffemodel")
    assert r.exit_code == 2
    assert "not both" in r.output
