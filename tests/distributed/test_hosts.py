import pytest

from poseidon_cli.distributed.hosts import (Host, all_loopback, discover_client_id, parse_hosts,
                                            run_dir_name)
from poseidon_cli.errors import ClusterError


def write(tmp_path, text):
    p = tmp_path / "hosts.txt"
    p.write_text(text)
    return p


def test_parse_with_comments_blank_lines_and_any_order(tmp_path):
    p = write(tmp_path, "# cluster\n\n1 10.0.0.2 9999  # second\n0 10.0.0.1 9999\n")
    hosts = parse_hosts(p)
    assert hosts == [Host(0, "10.0.0.1", 9999, 4), Host(1, "10.0.0.2", 9999, 3)]


def test_poseidon_localserver_machinefile(conformance_dir):
    hosts = parse_hosts(conformance_dir / "poseidon/machinefiles/localserver")
    assert [h.client_id for h in hosts] == list(range(len(hosts)))
    assert all_loopback(hosts)


@pytest.mark.parametrize("text,needle", [
    ("0 127.0.0.1\n", ":1: expected"),
    ("zero 127.0.0.1 9000\n", "not an integer"),
    ("0 127.0.0.1 99999\n", "outside"),
    ("0 127.0.0.1 9000\n0 127.0.0.1 9001\n", ":2: client id 0 already used on line 1"),
    ("0 127.0.0.1 9000\n1 127.0.0.1 9000\n", ":2: 127.0.0.1:9000 already used"),
    ("0 127.0.0.1 9000\n2 127.0.0.1 9001\n", "missing [1]"),
    ("# nothing\n", "no hosts"),
    ("0 no.such.host.invalid 9000\n", "neither an IP"),
])
def test_malformed_hosts_name_the_line(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ClusterError) as err:
        parse_hosts(p)
    assert needle in str(err.value)
    assert str(p) in str(err.value)


def test_client_id_from_flag_then_env(tmp_path):
    hosts = parse_hosts(write(tmp_path, "0 127.0.0.1 9000\n1 127.0.0.1 9001\n2 127.0.0.1 9002\n"))
    assert discover_client_id(hosts, explicit=2, env={}) == 2
    assert discover_client_id(hosts, env={"OMPI_COMM_WORLD_RANK": "1"}) == 1
    assert discover_client_id(hosts, env={"PMI_RANK": "2"}) == 2
    assert discover_client_id(hosts, env={"SLURM_PROCID": "0"}) == 0
    assert discover_client_id(hosts, env={"JOB_COMPLETION_INDEX": "1"}) == 1
    # the explicit flag wins over the environment
    assert discover_client_id(hosts, explicit=0, env={"SLURM_PROCID": "2"}) == 0
    # loopback lines never identify a machine
    assert discover_client_id(hosts, env={}) is None
    with pytest.raises(ClusterError, match="SLURM_PROCID=5"):
        discover_client_id(hosts, env={"SLURM_PROCID": "5"})
    with pytest.raises(ClusterError, match="--client-id 3"):
        discover_client_id(hosts, explicit=3, env={})


def test_run_dir_name_like_poseidon():
    assert run_dir_name("CIFAR10_quick", 0, 4, 1) == "CIFAR10_quick.S0.M4.T1"
    assert run_dir_name("a/b c", 2, 8) == "a_b_c.S2.M8.T1"
