"""Benchmark: parameter-server push+pull of an AlexNet-sized parameter set vs a raw TCP socket.

Everything runs on 127.0.0.1 in separate processes: S shard servers (``python -m
poseidon_cli.ps.server``) and one worker (this process). One round = push every gradient for clock t,
``clock()``, then pull every parameter at clock t+1 with staleness 0 (so the pull waits for the
shards to apply the update): 2 x the parameter bytes cross the loopback. The raw-socket baseline moves
the same bytes in the same pattern in the same run: N bytes to a server process, N bytes back.

    python bench/ps.py                 # 61M float32 (~244 MB), 1/2/4 shards
    python bench/ps.py --mb 64 --rounds 3

Prints a table (GB/s, ratio to raw socket) and writes JSON to --json (default bench/results/ps.json).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poseidon_cli.ps.client import PSClient  # noqa: E402
from poseidon_cli.ps.grpc_transport import GrpcTransport  # noqa: E402

ALEXNET = [("conv1.0", (96, 3, 11, 11)), ("conv1.1", (96,)), ("conv2.0", (256, 48, 5, 5)), ("conv2.1", (256,)),
           ("conv3.0", (384, 256, 3, 3)), ("conv3.1", (384,)), ("conv4.0", (384, 192, 3, 3)), ("conv4.1", (384,)),
           ("conv5.0", (256, 192, 3, 3)), ("conv5.1", (256,)), ("fc6.0", (4096, 9216)), ("fc6.1", (4096,)),
           ("fc7.0", (4096, 4096)), ("fc7.1", (4096,)), ("fc8.0", (1000, 4096)), ("fc8.1", (1000,))]


def alexnet_params(mb: float | None):
    full = sum(int(np.prod(s)) for _, s in ALEXNET) * 4
    if mb is None:
        return ALEXNET
    f = mb * 1e6 / full
    return [(n, (max(1, int(round(s[0] * f))),) + tuple(s[1:])) for n, s in ALEXNET]


# ---------------------------------------------------------------------------- raw socket
def raw_server(port_file: str, nbytes: int, rounds: int) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pathlib.Path(port_file + ".tmp").write_text(str(srv.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = srv.accept()
    buf = bytearray(nbytes)
    mv = memoryview(buf)
    for _ in range(rounds):
        got = 0
        while got < nbytes:
            got += conn.recv_into(mv[got:], min(nbytes - got, 1 << 22))
        conn.sendall(mv)
    conn.close()


def wait_port(path: str, proc: subprocess.Popen, timeout: float = 30.0) -> int:
    t_end, delay = time.monotonic() + timeout, 0.01
    while time.monotonic() < t_end:
        if os.path.exists(path):
            return int(pathlib.Path(path).read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    raise RuntimeError(f"no port file {path} after {timeout}s")


def bench_raw(nbytes: int, rounds: int, tmp: str) -> list[float]:
    pf = os.path.join(tmp, "raw.port")
    proc = subprocess.Popen([sys.executable, __file__, "--raw-server", pf, "--raw-bytes", str(nbytes),
                             "--rounds", str(rounds)])
    try:
        port = wait_port(pf, proc)
        s = socket.create_connection(("127.0.0.1", port))
        out = np.ones(nbytes, np.uint8)
        back = bytearray(nbytes)
        mv = memoryview(back)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            s.sendall(memoryview(out))
            got = 0
            while got < nbytes:
                got += s.recv_into(mv[got:], min(nbytes - got, 1 << 22))
            times.append(time.perf_counter() - t0)
        s.close()
        return times
    finally:
        proc.wait(30)


# ---------------------------------------------------------------------------- bare gRPC
def grpc_server(port_file: str, nbytes: int, chunk: int) -> None:
    """Bare gRPC streaming with no PS logic: the ceiling gRPC Python itself sets on this machine."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    blob = b"x" * chunk
    done = threading.Event()

    def push(it, ctx):
        for _ in it:
            pass
        return b""

    def pull(req, ctx):
        left = nbytes
        while left > 0:
            yield blob[:min(chunk, left)]
            left -= chunk

    def stop(req, ctx):
        done.set()
        return b""

    srv = grpc.server(ThreadPoolExecutor(8), options=opts)
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bare", {
        "Push": grpc.stream_unary_rpc_method_handler(push), "Pull": grpc.unary_stream_rpc_method_handler(pull),
        "Stop": grpc.unary_unary_rpc_method_handler(stop)}),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    pathlib.Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)
    done.wait()
    srv.stop(0.2)


def bench_bare_grpc(nbytes: int, rounds: int, tmp: str, chunk: int) -> list[float]:
    import grpc

    pf = os.path.join(tmp, "bare.port")
    proc = subprocess.Popen([sys.executable, __file__, "--grpc-server", pf, "--raw-bytes", str(nbytes),
                             "--chunk-kb", str(chunk // 1024)])
    try:
        port = wait_port(pf, proc)
        ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1),
                                                                 ("grpc.max_receive_message_length", -1)])
        push, pull = ch.stream_unary("/bare/Push"), ch.unary_stream("/bare/Pull")
        data = np.ones(nbytes, np.uint8)
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            push(bytes(data[i:i + chunk]) for i in range(0, nbytes, chunk))
            for _m in pull(b""):
                pass
            times.append(time.perf_counter() - t0)
        ch.unary_unary("/bare/Stop")(b"")
        ch.close()
        return times
    finally:
        proc.wait(30)


# ---------------------------------------------------------------------------- parameter server
def bench_ps(params, shards: int, rounds: int, tmp: str, streams: int, channels: int,
             chunk_bytes: int) -> list[float]:
    job = f"bench-{os.getpid()}-{shards}"
    procs, ports = [], []
    try:
        for i in range(shards):
            pf = os.path.join(tmp, f"shard{shards}_{i}.port")
            procs.append(subprocess.Popen([sys.executable, "-m", "poseidon_cli.ps.server", "--job-id", job,
                                           "--shard-id", str(i), "--num-shards", str(shards),
                                           "--port-file", pf, "--updater", "sgd:lr=0.001"], cwd=ROOT))
            ports.append(pf)
        ports = [wait_port(pf, p) for pf, p in zip(ports, procs)]
        trs = [GrpcTransport(f"127.0.0.1:{p}", i, job, channels=channels) for i, p in enumerate(ports)]
        client = PSClient(trs, job, 0, 1, params, staleness=0, chunk_bytes=chunk_bytes, deadline_s=120,
                          streams_per_shard=streams)
        client.connect()
        grads = {n: np.full(s, 1e-3, np.float32) for n, s in params}
        client.init_params({n: np.zeros(s, np.float32) for n, s in params})
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            futs = [client.push(n, g, copy=False) for n, g in grads.items()]
            for f in futs:
                f.result()
            client.clock()
            client.pull_all()
            times.append(time.perf_counter() - t0)
        client.close(stop_servers=True)
        return times
    finally:
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=None, help="shrink the parameter set to about this many MB")
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per setting (the first is a warm-up)")
    ap.add_argument("--streams", type=int, default=4, help="concurrent streams per tensor per shard")
    ap.add_argument("--channels", type=int, default=1, help="TCP connections per shard")
    ap.add_argument("--chunk-kb", type=int, default=1024)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "ps.json"))
    ap.add_argument("--raw-server", help=argparse.SUPPRESS)
    ap.add_argument("--raw-bytes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-server", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.raw_server:
        raw_server(a.raw_server, a.raw_bytes, a.rounds)
        return 0
    if a.grpc_server:
        grpc_server(a.grpc_server, a.raw_bytes, a.chunk_kb * 1024)
        return 0
    params = alexnet_params(a.mb)
    nbytes = sum(int(np.prod(s)) for _, s in params) * 4
    moved = 2 * nbytes
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = bench_raw(nbytes, a.rounds, tmp)
        raw_t = float(np.median(raw[1:] or raw))
        raw_gbs = moved / raw_t / 1e9
        rows.append({"setting": "raw TCP socket", "shards": 1, "seconds": raw_t, "GB/s": raw_gbs, "ratio": 1.0})
        bare = bench_bare_grpc(nbytes, a.rounds, tmp, a.chunk_kb * 1024)
        t = float(np.median(bare[1:] or bare))
        rows.append({"setting": "bare gRPC stream", "shards": 1, "seconds": t, "GB/s": moved / t / 1e9,
                     "ratio": moved / t / 1e9 / raw_gbs})
        for s in [int(x) for x in a.shards.split(",")]:
            ts = bench_ps(params, s, a.rounds, tmp, a.streams, a.channels, a.chunk_kb * 1024)
            t = float(np.median(ts[1:] or ts))
            rows.append({"setting": f"PS gRPC, {s} shard(s)", "shards": s, "seconds": t,
                         "GB/s": moved / t / 1e9, "ratio": moved / t / 1e9 / raw_gbs})
    result = {"params": len(params), "param_bytes": nbytes, "bytes_moved_per_round": moved,
              "rounds": a.rounds, "streams_per_shard": a.streams, "channels_per_shard": a.channels,
              "chunk_bytes": a.chunk_kb * 1024, "cpus": os.cpu_count(), "rows": rows}
    print(f"push+pull of {nbytes / 1e6:.0f} MB of float32 parameters ({len(params)} tensors), "
          f"{a.rounds} rounds, median after warm-up; {os.cpu_count()} CPUs")
    print(f"{'setting':<24}{'s/round':>10}{'GB/s':>8}{'vs raw':>8}")
    for r in rows:
        print(f"{r['setting']:<24}{r['seconds']:>10.3f}{r['GB/s']:>8.2f}{r['ratio']:>8.2f}")
    path = pathlib.Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
