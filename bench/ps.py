"""Benchmark: parameter-server push+pull of an AlexNet-sized parameter set vs a raw TCP socket.

Everything runs on 127.0.0.1 in separate processes: S shard servers (``python -m
poseidon_cli.ps.server``) and one worker (this process). One round = push every gradient for clock t,
``clock()``, then pull every parameter at clock t+1 with staleness 0 (so the pull waits for the
shards to apply the update): 2 x the parameter bytes cross the loopback. The raw-socket baseline moves
the same bytes in the same pattern: N bytes to a server process, N bytes back.

Both data planes are measured side by side: ``tcp`` (payloads on plain sockets, control over gRPC)
and ``grpc`` (everything over gRPC). The machine is shared and noisy, so every PS round is paired with
a raw-socket round taken just before it (the raw server process stays up for the whole run); a
setting's ratio is the median over its rounds (after ``--warmup``) of raw time / PS time, and its
GB/s the median PS rate. ``--runs`` repeats everything (fresh processes); the summary gives each
run's ratio and the median over runs.

    python bench/ps.py                          # 61M float32 (~244 MB), 1/2/4 shards, both planes
    python bench/ps.py --mb 64 --rounds 3 --runs 1 --planes tcp

Prints a table and writes JSON to --json (default bench/results/ps.json).
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
from poseidon_cli.ps.auth import Security, TlsFiles  # noqa: E402
from poseidon_cli.ps.client import make_transport  # noqa: E402

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
def raw_server(port_file: str, nbytes: int) -> None:
    """Echo rounds of ``nbytes`` until the client closes the connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pathlib.Path(port_file + ".tmp").write_text(str(srv.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = srv.accept()
    buf = bytearray(nbytes)
    mv = memoryview(buf)
    while True:
        got = 0
        while got < nbytes:
            k = conn.recv_into(mv[got:], min(nbytes - got, 1 << 22))
            if k == 0:
                conn.close()
                return
            got += k
        conn.sendall(mv)


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


class RawLink:
    """A raw TCP socket to an echo server process; ``round()`` times N bytes there and back."""

    def __init__(self, nbytes: int, tmp: str):
        self.nbytes = nbytes
        pf = os.path.join(tmp, f"raw{time.monotonic_ns()}.port")
        self.proc = subprocess.Popen([sys.executable, __file__, "--raw-server", pf, "--raw-bytes", str(nbytes)])
        self.sock = socket.create_connection(("127.0.0.1", wait_port(pf, self.proc)))
        self.out = np.ones(nbytes, np.uint8)
        self.back = memoryview(bytearray(nbytes))

    def round(self) -> float:
        t0 = time.perf_counter()
        self.sock.sendall(memoryview(self.out))
        got = 0
        while got < self.nbytes:
            got += self.sock.recv_into(self.back[got:], min(self.nbytes - got, 1 << 22))
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(30)


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

    pf = os.path.join(tmp, f"bare{time.monotonic_ns()}.port")  # unique: a stale file would be read
    proc = subprocess.Popen([sys.executable, __file__, "--grpc-server", pf, "--raw-bytes", str(nbytes),
                             "--chunk-kb", str(chunk // 1024)])
    try:
        port = wait_port(pf, proc)
        ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1),
                                                                 ("grpc.max_receive_message_length", -1)])
        grpc.channel_ready_future(ch).result(timeout=30)
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
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- parameter server
class PSLink:
    """S shard processes and a PSClient (worker 0 of 1) using ``data_plane``; ``round()`` times one
    push + clock + pull of every parameter."""

    def __init__(self, params, shards: int, tmp: str, streams: int, channels: int, chunk_bytes: int,
                 data_plane: str, security: str = "none"):
        job = f"bench-{os.getpid()}-{shards}-{data_plane}-{time.monotonic_ns()}"
        self.procs, pfs = [], []
        extra, secret, tls = [], None, None
        if security in ("secret", "tls"):
            secret = os.urandom(32).hex()
            sf = os.path.join(tmp, f"{job}.secret")
            with open(sf, "w") as f:
                f.write(secret)
            extra += ["--secret-file", sf]
        if security == "tls":
            tls = make_tls(tmp)
            extra += ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]
        sec = Security.for_job(secret.encode() if secret else None, job, tls)
        try:
            for i in range(shards):
                pf = os.path.join(tmp, f"{job}_{i}.port")
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "poseidon_cli.ps.server", "--job-id", job, "--shard-id", str(i),
                     "--num-shards", str(shards), "--port-file", pf, "--updater", "sgd:lr=0.001",
                     "--data-plane", data_plane, *extra], cwd=ROOT))
                pfs.append(pf)
            ports = [wait_port(pf, p) for pf, p in zip(pfs, self.procs)]
            trs = [make_transport(f"127.0.0.1:{p}", i, job, data_plane, channels=channels, security=sec)
                   for i, p in enumerate(ports)]
            self.client = PSClient(trs, job, 0, 1, params, staleness=0, chunk_bytes=chunk_bytes, deadline_s=120,
                                   streams_per_shard=streams)
            self.client.connect()
            self.grads = {n: np.full(s, 1e-3, np.float32) for n, s in params}
            self.client.init_params({n: np.zeros(s, np.float32) for n, s in params})
        except BaseException:
            self.close()
            raise

    def round(self) -> float:
        t0 = time.perf_counter()
        futs = [self.client.push(n, g, copy=False) for n, g in self.grads.items()]
        for f in futs:
            f.result()
        self.client.clock()
        self.client.pull_all()
        return time.perf_counter() - t0

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close(stop_servers=True)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def make_tls(tmp: str) -> TlsFiles:
    """A CA and a certificate it signed for 127.0.0.1 (openssl), made once per run folder."""
    folder = pathlib.Path(tmp) / "tls"
    if not (folder / "node.pem").exists():
        folder.mkdir(exist_ok=True)

        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                "-days", "2", "-subj", "/CN=bench-ca")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
                "-subj", "/CN=bench-node")
        (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "node.pem", "-days", "2", "-extfile", "ext.cnf")
    return TlsFiles(str(folder / "node.pem"), str(folder / "node.key"), str(folder / "ca.pem"))


def paired(link, raw: RawLink, rounds: int, warmup: int) -> dict:
    """``rounds`` (raw round, link round) pairs; medians over the pairs after ``warmup``."""
    pairs = [(raw.round(), link.round()) for _ in range(rounds)]
    use = pairs[warmup:] or pairs
    return {"seconds": float(np.median([t for _, t in use])),
            "raw_seconds": float(np.median([r for r, _ in use])),
            "ratio": float(np.median([r / t for r, t in use])),
            "pairs": [[round(r, 4), round(t, 4)] for r, t in pairs]}


def one_run(params, nbytes: int, a, tmp: str) -> list[dict]:
    moved = 2 * nbytes
    rows = []
    raw = RawLink(nbytes, tmp)
    try:
        ts = [raw.round() for _ in range(a.rounds)]
        r = {"raw_seconds": float(np.median(ts[a.warmup:] or ts))}
        rows.append({"setting": "raw TCP socket", "plane": "raw", "shards": 1, "seconds": r["raw_seconds"],
                     "GB/s": moved / r["raw_seconds"] / 1e9, "ratio": 1.0})
        if a.bare_grpc:
            bare = bench_bare_grpc(nbytes, a.rounds, tmp, a.chunk_kb * 1024)
            t = float(np.median(bare[a.warmup:] or bare))
            rows.append({"setting": "bare gRPC stream", "plane": "bare-grpc", "shards": 1, "seconds": t,
                         "GB/s": moved / t / 1e9, "ratio": r["raw_seconds"] / t})
        for s in [int(x) for x in a.shards.split(",")]:
            for plane, sec in [(p, c) for p in a.planes.split(",") for c in a.security.split(",")]:
                link = PSLink(params, s, tmp, a.streams, a.channels, a.chunk_kb * 1024, plane, sec)
                try:
                    p = paired(link, raw, a.rounds, a.warmup)
                finally:
                    link.close()
                rows.append({"setting": f"PS {plane}, {s} shard(s), {sec}", "plane": plane, "shards": s,
                             "security": sec,
                             "seconds": p["seconds"], "GB/s": moved / p["seconds"] / 1e9, "ratio": p["ratio"],
                             "raw_GB/s": moved / p["raw_seconds"] / 1e9, "pairs_raw_ps_s": p["pairs"]})
    finally:
        raw.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=None, help="shrink the parameter set to about this many MB")
    ap.add_argument("--shards", default="1,2,4")
    ap.add_argument("--planes", default="tcp,grpc", help="data planes to measure (tcp, grpc)")
    ap.add_argument("--runs", type=int, default=3, help="independent repetitions of everything")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per setting (see --warmup)")
    ap.add_argument("--warmup", type=int, default=2, help="first rounds of each setting not counted")
    ap.add_argument("--streams", type=int, default=4, help="concurrent streams per tensor per shard")
    ap.add_argument("--channels", type=int, default=1, help="gRPC connections per shard")
    ap.add_argument("--chunk-kb", type=int, default=1024)
    ap.add_argument("--security", default="none,secret",
                    help="comma-separated: none, secret (the job secret: HMAC per gRPC call and per "
                         "data connection), tls (mutual TLS on both planes, with the secret)")
    ap.add_argument("--bare-grpc", action="store_true", help="also time a bare gRPC stream (no PS logic)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "ps.json"))
    ap.add_argument("--raw-server", help=argparse.SUPPRESS)
    ap.add_argument("--raw-bytes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--grpc-server", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.raw_server:
        raw_server(a.raw_server, a.raw_bytes)
        return 0
    if a.grpc_server:
        grpc_server(a.grpc_server, a.raw_bytes, a.chunk_kb * 1024)
        return 0
    params = alexnet_params(a.mb)
    nbytes = sum(int(np.prod(s)) for _, s in params) * 4
    runs = []
    print(f"push+pull of {nbytes / 1e6:.0f} MB of float32 parameters ({len(params)} tensors); {a.rounds} rounds "
          f"per setting, first {a.warmup} not counted, each paired with a raw-socket round; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(a.runs):
            rows = one_run(params, nbytes, a, tmp)
            runs.append({"run": run, "loadavg": os.getloadavg()[0], "rows": rows})
            print(f"\nrun {run + 1}/{a.runs} (load average {os.getloadavg()[0]:.1f})")
            print(f"{'setting':<34}{'s/round':>10}{'GB/s':>8}{'raw GB/s':>10}{'vs raw':>8}")
            for r in rows:
                print(f"{r['setting']:<34}{r['seconds']:>10.3f}{r['GB/s']:>8.2f}"
                      f"{r.get('raw_GB/s', r['GB/s'] if r['plane'] == 'raw' else float('nan')):>10.2f}{r['ratio']:>8.2f}")
    summary = []
    for i, r0 in enumerate(runs[0]["rows"]):
        ratios = [run["rows"][i]["ratio"] for run in runs]
        rates = [run["rows"][i]["GB/s"] for run in runs]
        summary.append({"setting": r0["setting"], "plane": r0["plane"], "shards": r0["shards"],
                        "ratio_per_run": [round(x, 3) for x in ratios], "median_ratio": float(np.median(ratios)),
                        "GB/s_per_run": [round(x, 3) for x in rates], "median_GB/s": float(np.median(rates))})
    print(f"\nsummary over {a.runs} run(s): ratio to the raw socket per run, median")
    for r in summary:
        per = " ".join(f"{x:.2f}" for x in r["ratio_per_run"])
        print(f"{r['setting']:<34} {per:<24} median {r['median_ratio']:.2f}  ({r['median_GB/s']:.2f} GB/s)")
    result = {"params": len(params), "param_bytes": nbytes, "bytes_moved_per_round": 2 * nbytes,
              "rounds": a.rounds, "warmup": a.warmup, "streams_per_shard": a.streams,
              "channels_per_shard": a.channels, "chunk_bytes": a.chunk_kb * 1024, "cpus": os.cpu_count(),
              "summary": summary, "runs": runs}
    path = pathlib.Path(a.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    import blas_env  # noqa: E402 - bench/ is the script folder
    blas_env.run_natively()
    print(blas_env.describe(), flush=True)
    sys.exit(main())
