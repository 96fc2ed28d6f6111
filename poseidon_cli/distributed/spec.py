"""``ClusterSpec``: everything a distributed run was told, parsed and checked once.

``ClusterSpec.from_cli(opts)`` turns ``poseidon train --hosts ...``'s options into a frozen value
(user mistakes are one-line ``ClusterError``/``ConfigError``); the launcher, the client and the
Worker read fields instead of an options dict. ``child_argv(k, t)`` is the command line that runs
worker ``t`` of client ``k`` with the same spec: it forwards only what a child uses.

Positions: client ``client_id`` of ``num_clients`` (hosts-file lines), worker ``worker_index`` of
``workers_per_client`` (T, one per GPU id) inside it; PS worker ``rank = client_id * T +
worker_index`` of ``world_size``. ``client_id`` is None for a process that is no client (the local
launcher of a loopback hosts file).

Words: a *client* is one hosts-file line, the machine it names and the worker processes that run
there (worker 0 also serves the client's PS shard); a ``PSClient`` is one worker's connection to
every shard; ``client_main.run_client`` runs one worker process of a client.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
from dataclasses import dataclass, field

from ..context import RunContext
from ..errors import ClusterError
from ..ps.auth import TlsFiles, load_secret
from .hosts import Host, discover_client_id, parse_hosts

DEFAULT_DEADLINE_S = 60.0
SVB_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ClusterSpec:
    solver: str                       # solver prototxt path
    hosts_path: str
    hosts: tuple[Host, ...]
    job_id: str                       # the same for every process of one hosts file
    client_id: int | None = None
    workers_per_client: int = 1
    worker_index: int = 0
    gpus: tuple[int, ...] = ()
    cpu: bool = False
    staleness: int = 0
    deadline_s: float = DEFAULT_DEADLINE_S
    svb: str = "auto"
    overlap: bool = True
    output_dir: str | None = None     # the user's --output-dir
    run_dir: str | None = None        # resolved by the command (commands/common.run_dir)
    snapshot: str | None = None
    weights: str | None = None
    emulate_compute: str | None = None  # --emulate-compute PROFILE (emulate.py), with:
    dilation: float | None = None
    jitter: float | None = None
    max_restarts: int = 0             # --max-restarts: the local launcher's restarts of a failed run
    sigint_effect: str = "stop"       # the local launcher's Ctrl-C: "snapshot" has client 0 write one
    # the job secret (ps/auth.py) from --secret-file or $POSEIDON_SECRET; never printed, never on
    # a command line (children inherit it through the environment or read the same file)
    secret: bytes | None = field(default=None, repr=False, compare=False)
    secret_file: str | None = None
    tls: TlsFiles | None = None       # --tls-cert/--tls-key/--tls-ca

    # -- derived -----------------------------------------------------------------------------
    @property
    def num_clients(self) -> int:
        return len(self.hosts)

    @property
    def me(self) -> Host:
        return self.hosts[self.client_id]

    @property
    def context(self) -> RunContext:
        return RunContext(client_id=self.client_id or 0, num_clients=self.num_clients,
                          worker_id=self.worker_index, workers_per_client=self.workers_per_client)

    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def gpu(self) -> int | None:
        """This worker's GPU id (``--gpu 0,1``: worker t gets the t-th), None on the CPU."""
        if self.cpu or not self.gpus:
            return None
        return self.gpus[self.worker_index] if len(self.gpus) > 1 else self.gpus[0]

    def replace(self, **changes) -> "ClusterSpec":
        return dataclasses.replace(self, **changes)

    # -- from the command line ---------------------------------------------------------------
    @classmethod
    def from_cli(cls, opts: dict) -> "ClusterSpec":
        """From ``train``'s click options (``hosts``, ``solver``, ``client_id``, ``staleness``,
        ``svb``, ``gpu``, ``cpu``, ``deadline``, ``workers_per_client``, ``worker_index``,
        ``no_overlap``, ``output_dir``, ``snapshot``, ``weights``, ``emulate_compute``,
        ``dilation``, ``jitter``, ``max_restarts``, ``sigint_effect``, ``secret_file``,
        ``tls_cert``, ``tls_key``, ``tls_ca``)."""
        hosts = tuple(parse_hosts(opts["hosts"]))
        staleness = int(opts.get("staleness") or 0)
        if staleness < 0:
            raise ClusterError(f"--staleness must be >= 0, got {staleness}")
        deadline = DEFAULT_DEADLINE_S if opts.get("deadline") is None else float(opts["deadline"])
        if not deadline > 0:
            raise ClusterError(f"--deadline must be > 0 seconds, got {deadline:g}")
        svb = opts.get("svb") or "auto"
        if svb not in SVB_MODES:
            raise ClusterError(f"--svb must be one of {', '.join(SVB_MODES)}, got {svb!r}")
        max_restarts = int(opts.get("max_restarts") or 0)
        if max_restarts < 0:
            raise ClusterError(f"--max-restarts must be >= 0, got {max_restarts}")
        gpus = _gpu_ids(opts.get("gpu"))
        T = _workers_per_client(opts.get("workers_per_client"), gpus, opts.get("gpu"))
        t = int(opts.get("worker_index") or 0)
        if not 0 <= t < T:
            raise ClusterError(f"--worker-index {t} is not in 0..{T - 1}")
        return cls(solver=opts["solver"], hosts_path=opts["hosts"], hosts=hosts,
                   job_id=_job_id(opts["hosts"]),
                   client_id=discover_client_id(list(hosts), opts.get("client_id")),
                   workers_per_client=T, worker_index=t, gpus=tuple(gpus),
                   cpu=bool(opts.get("cpu")), staleness=staleness, deadline_s=deadline, svb=svb,
                   overlap=not opts.get("no_overlap"), output_dir=opts.get("output_dir"),
                   snapshot=opts.get("snapshot"), weights=opts.get("weights"),
                   emulate_compute=opts.get("emulate_compute"), dilation=opts.get("dilation"),
                   jitter=opts.get("jitter"), max_restarts=max_restarts,
                   sigint_effect=opts.get("sigint_effect") or "stop",
                   secret=load_secret(opts.get("secret_file")), secret_file=opts.get("secret_file"),
                   tls=TlsFiles.from_options(opts.get("tls_cert"), opts.get("tls_key"),
                                             opts.get("tls_ca")))

    def child_argv(self, k: int, t: int = 0) -> list[str]:
        """The command line of worker ``t`` of client ``k``, writing to this spec's run folder.
        Signal effects are not forwarded: a client installs no signal handlers (its launcher
        stops it)."""
        argv = [sys.executable, "-m", "poseidon_cli.cli", "train", "--solver", self.solver,
                "--hosts", self.hosts_path, "--client-id", str(k),
                "--output-dir", self.run_dir or self.output_dir or ".",
                "--staleness", str(self.staleness), "--svb", self.svb,
                "--deadline", repr(float(self.deadline_s)),
                "--workers-per-client", str(self.workers_per_client)]
        if self.gpus:
            argv += ["--gpu", ",".join(str(g) for g in self.gpus)]
        if self.cpu:
            argv.append("--cpu")
        if not self.overlap:
            argv.append("--no-overlap")
        if self.snapshot:
            argv += ["--snapshot", self.snapshot]
        if self.weights:
            argv += ["--weights", self.weights]
        if self.emulate_compute:
            argv += ["--emulate-compute", self.emulate_compute]
            if self.dilation is not None:
                argv += ["--dilation", repr(float(self.dilation))]
            if self.jitter is not None:
                argv += ["--jitter", repr(float(self.jitter))]
        if self.secret_file:   # else the secret travels in the environment ($POSEIDON_SECRET)
            argv += ["--secret-file", self.secret_file]
        if self.tls is not None:
            argv += ["--tls-cert", self.tls.cert, "--tls-key", self.tls.key, "--tls-ca", self.tls.ca]
        if t:
            argv += ["--worker-index", str(t)]
        return argv


def _gpu_ids(gpu) -> list[int]:
    ids = [g.strip() for g in str(gpu or "").split(",") if g.strip()]
    try:
        return [int(g) for g in ids]
    except ValueError:
        raise ClusterError(f"--gpu {gpu}: expected GPU ids like 0 or 0,1") from None


def _workers_per_client(t, gpus, gpu_opt) -> int:
    """T: ``--workers-per-client``, else one worker per ``--gpu`` id, else 1."""
    if t is None:
        return max(1, len(gpus))
    if t < 1:
        raise ClusterError(f"--workers-per-client must be >= 1, got {t}")
    if len(gpus) > 1 and t != len(gpus):
        raise ClusterError(f"--workers-per-client {t} but {len(gpus)} GPU ids in --gpu {gpu_opt}",
                           "give one GPU id per worker")
    return t


def _job_id(hosts_path) -> str:
    """Every process of one run reads the same hosts file: its hash names the job."""
    with open(hosts_path, "rb") as fh:
        return "poseidon-" + hashlib.sha1(fh.read()).hexdigest()[:12]
