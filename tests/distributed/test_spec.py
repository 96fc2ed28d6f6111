"""ClusterSpec: the CLI options of a distributed run, checked once; child_argv round-trips."""
import sys

import pytest

from poseidon_cli.cli import main
from poseidon_cli.distributed.spec import DEFAULT_DEADLINE_S, ClusterSpec
from poseidon_cli.errors import ClusterError


def parse_train(argv):
    """``poseidon train`` options as click parses them (what cli.train hands on)."""
    return main.commands["train"].make_context("train", list(argv)).params


@pytest.fixture
def hosts(tmp_path):
    p = tmp_path / "hosts.txt"
    p.write_text("0 127.0.0.1 9100\n1 127.0.0.1 9101\n")
    return str(p)


def test_defaults_and_derived_positions(hosts):
    spec = ClusterSpec.from_cli(parse_train(["--solver", "s.prototxt", "--hosts", hosts,
                                             "--client-id", "1", "--gpu", "3,5", "--worker-index", "1"]))
    assert (spec.client_id, spec.num_clients, spec.workers_per_client, spec.worker_index) == (1, 2, 2, 1)
    assert spec.rank == 3 and spec.world_size == 4
    assert spec.gpu == 5                       # worker t gets the t-th id
    assert spec.deadline_s == DEFAULT_DEADLINE_S and spec.staleness == 0 and spec.svb == "auto"
    assert spec.overlap and spec.me.port == 9101
    assert spec.job_id.startswith("poseidon-")
    with pytest.raises(Exception):
        spec.staleness = 3                     # frozen


def test_no_client_id_on_loopback_is_the_launcher(hosts):
    spec = ClusterSpec.from_cli(parse_train(["--solver", "s.prototxt", "--hosts", hosts]))
    assert spec.client_id is None


@pytest.mark.parametrize("extra,match", [
    (["--staleness", "-1"], "--staleness must be >= 0, got -1"),
    (["--workers-per-client", "0"], "--workers-per-client must be >= 1, got 0"),
    (["--workers-per-client", "3", "--gpu", "0,1"], "--workers-per-client 3 but 2 GPU ids"),
    (["--worker-index", "2", "--workers-per-client", "2"], r"--worker-index 2 is not in 0\.\.1"),
    (["--gpu", "zero"], "--gpu zero: expected GPU ids"),
])
def test_bad_options_are_one_line_cluster_errors(hosts, extra, match):
    with pytest.raises(ClusterError, match=match):
        ClusterSpec.from_cli(parse_train(["--solver", "s.prototxt", "--hosts", hosts,
                                          "--client-id", "0", *extra]))


def test_child_argv_round_trips_and_forwards_only_what_children_use(hosts, tmp_path):
    opts = parse_train(["--solver", "s.prototxt", "--hosts", hosts, "--staleness", "2",
                        "--svb", "on", "--gpu", "0,1", "--deadline", "7.5", "--no-overlap",
                        "--weights", "w.caffemodel", "--sigint-effect", "snapshot",
                        "--sighup-effect", "stop"])
    launcher = ClusterSpec.from_cli(opts).replace(run_dir=str(tmp_path / "run"))
    argv = launcher.child_argv(1, 1)
    assert argv[:4] == [sys.executable, "-m", "poseidon_cli.cli", "train"]
    assert "--sigint-effect" not in argv and "--sighup-effect" not in argv
    child = ClusterSpec.from_cli(parse_train(argv[4:]))
    # the launcher acts on Ctrl-C itself (client 0 learns of a snapshot request by SIGUSR1)
    assert child == launcher.replace(client_id=1, worker_index=1, output_dir=str(tmp_path / "run"),
                                     run_dir=None, sigint_effect="stop")
    assert "--worker-index" not in launcher.child_argv(0, 0)


def test_launcher_depends_on_spec_and_procs_only():
    """launch -> spec <- client_main: the launcher knows nothing of workers or the engine."""
    import ast
    import pathlib

    import poseidon_cli.distributed.launch as launch

    tree = ast.parse(pathlib.Path(launch.__file__).read_text())
    local = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    absolute = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert local == {"spec", "procs"}
    assert not any(name.startswith("poseidon_cli") for name in absolute)


def test_emulation_options_reach_every_child(tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("0 127.0.0.1 9000\n1 127.0.0.1 9001\n")
    spec = ClusterSpec.from_cli({"hosts": str(hosts), "solver": "s.prototxt",
                                 "emulate_compute": "alexnet.json", "dilation": 4.0, "jitter": 0.2})
    argv = spec.child_argv(1)
    i = argv.index("--emulate-compute")
    assert argv[i + 1] == "alexnet.json"
    assert float(argv[argv.index("--dilation") + 1]) == 4.0
    assert float(argv[argv.index("--jitter") + 1]) == 0.2
    plain = ClusterSpec.from_cli({"hosts": str(hosts), "solver": "s.prototxt"}).child_argv(1)
    assert not {"--emulate-compute", "--dilation", "--jitter"} & set(plain)
