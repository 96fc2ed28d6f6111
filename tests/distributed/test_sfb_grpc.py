"""SFB between real processes over gRPC: `poseidon train --hosts --svb on` equals `--svb off`."""
import json
import socket
import subprocess
import sys

from cluster_helpers import read_caffemodel, rel_diff
from test_sfb_inprocess import digits, write_job  # noqa: F401 - the fixture is used by name


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def train(tmp_path, name, digits, svb):
    job = write_job(tmp_path / name, digits, iters=10)
    hosts = tmp_path / f"hosts_{name}.txt"
    hosts.write_text("".join(f"{i} 127.0.0.1 {p}\n" for i, p in enumerate(free_ports(2))))
    r = subprocess.run([sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", job, "--hosts",
                        str(hosts), "--svb", svb, "--deadline", "30"], capture_output=True, text=True,
                       timeout=180)
    run_dir = tmp_path / name / "mlp.S0.M2.T1"
    other = (run_dir / "client_1.log").read_text()[-3000:] if (run_dir / "client_1.log").exists() else ""
    assert r.returncode == 0, r.stderr[-3000:] + "\n--- client 1 ---\n" + other
    return r.stdout + r.stderr, run_dir


def test_two_processes_svb_on_equal_svb_off_and_report_bytes(tmp_path, digits):  # noqa: F811
    out_on, run_on = train(tmp_path, "on", digits, "on")
    train(tmp_path, "off", digits, "off")
    ref = read_caffemodel(tmp_path / "off/snap/mlp_iter_10.caffemodel")
    got = read_caffemodel(tmp_path / "on/snap/mlp_iter_10.caffemodel")
    for k in ref:
        assert rel_diff(got[k], ref[k]) < 1e-4, k
    # client 0 prints the decision table
    assert "Communication per InnerProduct weight (--svb on; P1=2 workers, P2=2 shards" in out_on
    assert any(l.split("]")[-1].split()[:1] == ["ip2"] and "SFB" in l for l in out_on.splitlines())
    for c in (0, 1):
        stats = json.loads((run_on / f"stats.client{c}.json").read_text())
        assert stats["svb"] == "on"
        assert [d["layer"] for d in stats["sfb_decisions"]] == ["ip1", "ip2", "ip3"]
        assert all(d["scheme"] == "sfb" for d in stats["sfb_decisions"])
        layers = {r["layer"]: r for r in stats["sfb_layers"]}
        for name, (m, n) in {"ip1": (512, 256), "ip2": (512, 512), "ip3": (10, 512)}.items():
            # 10 clocks x 4 rows x (M + N) float32 to the one peer, and the same back
            assert layers[name]["bytes_sent"] == layers[name]["bytes_received"] == 10 * 4 * (m + n) * 4
            assert layers[name]["bytes_per_iteration"] == layers[name]["model_bytes_per_iteration"]
        params = {p["param"]: p for p in stats["params"]}
        assert params["ip2/0"]["scheme"] == "sfb" and params["ip2/1"]["scheme"] == "ps"
        assert params["ip2/1"]["bytes_sent"] == 10 * 512 * 4
