"""bench/netns.py: namespaces on a bridge with a tbf cap, and that nothing is left behind."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import netns  # noqa: E402

# Receiver: accept one connection, read until EOF, print bytes and seconds from first to last byte.
RECEIVER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); buf = bytearray(1 << 20); n = 0; t0 = None
    while True:
        k = c.recv_into(buf)
        if not k: break
        if t0 is None: t0 = time.perf_counter()
        n += k
    print(n, time.perf_counter() - t0, flush=True)
""")
SENDER = textwrap.dedent("""
    import socket, sys, time
    for _ in range(100):
        try:
            c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); break
        except OSError:
            time.sleep(0.05)
    data = b"x" * (1 << 20)
    for _ in range(int(sys.argv[3])): c.sendall(data)
    c.close()
""")


def listed_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines() if line.strip()}


def open_or_skip(*args, **kw):
    try:
        netns.check_available()
        return netns.NetnsCluster(*args, **kw).open()
    except netns.NetnsUnavailable as e:
        pytest.skip(f"network namespaces unavailable: {e}")


def transfer_mbit(cl, src, dst, mbytes, port):
    rx = cl.run_in(dst, [sys.executable, "-c", RECEIVER, cl.addresses[dst], port],
                   stdout=subprocess.PIPE, text=True)
    assert rx.stdout.readline().strip() == "ready"
    tx = cl.run_in(src, [sys.executable, "-c", SENDER, cl.addresses[dst], port, mbytes])
    assert tx.wait(30) == 0
    n, secs = rx.stdout.readline().split()
    rx.wait(10)
    assert int(n) == mbytes << 20
    return int(n) * 8 / float(secs) / 1e6


def test_parse_rate():
    assert netns.parse_rate("1gbit") == 10**9
    assert netns.parse_rate("100mbit") == 10**8
    assert netns.parse_rate("800kbit") == 800_000
    assert netns.parse_rate("10mbps") == 80_000_000  # tc: bps = bytes per second
    assert netns.parse_rate(12345) == 12345
    with pytest.raises(ValueError):
        netns.parse_rate("fast")


def test_refuses_clearly_when_not_root(monkeypatch):
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsUnavailable, match="root"):
        with netns.NetnsCluster(2):
            pass


@pytest.mark.netns
def test_two_hosts_with_100mbit_cap_and_nothing_left_behind():
    before_links = host_links()
    cl = open_or_skip(2, rate="100mbit")
    names = [cl.bridge_ns, *cl.names]
    try:
        assert set(names) <= listed_namespaces()
        # The host's own interfaces are untouched: no veth or bridge appeared next to them.
        assert host_links() == before_links
        # Each direction is shaped (sender's eth0 and the receiver's bridge port): ~12 MB at
        # 100 Mbit/s is ~1 s each way.
        for src, dst, port in ((0, 1, 5601), (1, 0, 5602)):
            before = cl.link_bytes(src)
            mbit = transfer_mbit(cl, src, dst, 12, port)
            assert 60 <= mbit <= 110, f"{src}->{dst}: {mbit:.1f} Mbit/s under a 100 Mbit/s cap"
            sent = cl.link_bytes(src)["tx"] - before["tx"]
            assert 12 << 20 <= sent <= 1.1 * (12 << 20), "the counters must see the transfer on eth0"
        straggler = cl.run_in(0, [sys.executable, "-c", "import time; time.sleep(60)"])
    finally:
        cl.close()
    assert straggler.poll() is not None, "a process started in a namespace survived close()"
    assert not set(names) & listed_namespaces()
    assert cl.remaining() == []
    assert host_links() == before_links


@pytest.mark.netns
def test_exception_inside_the_block_still_removes_everything():
    try:
        netns.check_available()
    except netns.NetnsUnavailable as e:
        pytest.skip(f"network namespaces unavailable: {e}")
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="boom"):
        with netns.NetnsCluster(3, rate="1gbit") as cl:
            assert len(cl.remaining()) == 4
            assert cl.run(2, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], capture_output=True,
                          text=True).stdout.split()[3] == "10.77.0.3/24"
            raise RuntimeError("boom")
    assert cl.remaining() == []
    assert time.perf_counter() - t0 < 10
