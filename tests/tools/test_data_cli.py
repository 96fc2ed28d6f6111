"""``poseidon data`` end to end through the CLI: exit codes and one-line errors."""
import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from poseidon_cli.cli import main

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def run(*args):
    return CliRunner().invoke(main, ["data", *map(str, args)])


def test_convert_partition_inspect_mean(tmp_path):
    imgs = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    (tmp_path / "i").write_bytes(struct.pack(">IIII", 2051, 6, 4, 4) + imgs.tobytes())
    (tmp_path / "l").write_bytes(struct.pack(">II", 2049, 6) + bytes([1, 1, 2, 3, 3, 3]))
    r = run("convert-mnist", tmp_path / "i", tmp_path / "l", tmp_path / "db")
    assert r.exit_code == 0, r.output
    r = run("inspect", tmp_path / "db", "--json")
    info = json.loads(r.stdout)
    assert info["count"] == 6 and info["shape"] == [1, 4, 4] and info["storage"] == "uint8"
    assert info["labels"] == {"1": 2, "2": 1, "3": 3}
    assert info["first_keys"][:2] == ["00000000", "00000001"]
    assert "6 records" in run("inspect", tmp_path / "db").stdout
    assert run("partition", tmp_path / "db", "--parts", 2).exit_code == 0
    assert json.loads(run("inspect", tmp_path / "db_1", "--json").stdout)["labels"] == {"1": 1, "3": 2}
    r = run("compute-mean", tmp_path / "db", tmp_path / "mean.binaryproto")
    assert r.exit_code == 0 and "mean per channel" in r.output


@pytest.mark.parametrize("args,match", [
    (("inspect", "{t}/nope"), "LMDB '{t}/nope' does not exist"),
    (("partition", "{t}/nope", "--parts", "2"), "does not exist"),
    (("convert-mnist", "{t}/x", "{t}/y", "{t}/db"), "'{t}/x': no such file"),
    (("convert-cifar10", "{t}", "{t}"), "data_batch_1.bin': no such file"),
])
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, match):
    r = run(*(a.format(t=tmp_path) for a in args))
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poseidon: error: ")
    assert match.format(t=tmp_path) in lines[0]


def test_help_lists_every_command():
    out = run("--help").output
    for cmd in ["convert-mnist", "convert-cifar10", "convert-imageset", "digits", "partition",
                "compute-mean", "inspect"]:
        assert cmd in out
