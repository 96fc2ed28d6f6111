"""``poseidon train --hosts``: decide what this process is, then launch or run one client.

- With a client id (``--client-id``, a launcher's rank variable, or the one local address in the
  hosts file) this process runs that client's worker (``distributed/client_main.run_client``),
  writing to ``--output-dir`` (else the solver file's folder).
- Without one, when every hosts-file line is a loopback address, this process is the local
  launcher (``distributed/launch.run_local``): every client runs as a child, all writing to
  ``<output-dir or solver folder>/<net>.S<s>.M<clients>.T<workers per client>``; it resolves
  ``--snapshot latest`` once for every client and restarts a failed run (``--max-restarts``)
  from the newest snapshot.
"""
from __future__ import annotations

import os
import sys

from .. import config
from ..distributed.hosts import all_loopback, run_dir_name
from ..distributed.spec import ClusterSpec
from ..errors import ClusterError
from .common import run_dir, select_device


def net_name(solver_path: str) -> str:
    """The net's name for the run folder: its ``name:``, else its file name, else "net"."""
    solver = config.load_solver_param(solver_path)
    net_path = solver.net or solver.train_net
    if net_path:
        try:
            return config.load_net_param(net_path, resolve=False).name or os.path.splitext(
                os.path.basename(net_path))[0]
        except Exception:  # noqa: BLE001 - the client reports a bad net itself, in full
            return os.path.splitext(os.path.basename(net_path))[0]
    if solver.HasField("net_param") or solver.HasField("train_net_param"):
        return (solver.net_param.name or solver.train_net_param.name) or "net"
    return "net"


def run(opts: dict) -> int:
    """``train``'s options with ``hosts`` set -> exit code."""
    spec = ClusterSpec.from_cli(opts)
    if spec.client_id is None:
        if not all_loopback(spec.hosts):
            raise ClusterError(
                f"{spec.hosts_path}: cannot tell which line is this machine",
                "pass --client-id K, or start through mpirun/srun/a Kubernetes indexed job")
        from ..distributed.launch import run_local
        from ..ps import auth
        from ..solver import snapshot as snap
        if spec.secret is None:   # every client is a child of this process: it makes the secret
            secret = auth.new_secret()
            os.environ[auth.SECRET_ENV] = secret
            spec = spec.replace(secret=secret.encode())
        name = run_dir_name(net_name(spec.solver), spec.staleness, spec.num_clients,
                            spec.workers_per_client)
        if spec.snapshot == snap.LATEST:   # once here, so that every client resumes the same state
            spec = spec.replace(snapshot=snap.resolve_snapshot(spec.snapshot, spec.solver))
            print(f"poseidon: --snapshot latest: resuming from {spec.snapshot}" if spec.snapshot
                  else "poseidon: --snapshot latest: no snapshot written yet; starting from "
                       "iteration 0", file=sys.stderr, flush=True)
        return run_local(spec.replace(run_dir=run_dir(spec.solver, spec.output_dir, name=name)),
                         latest_snapshot=lambda: snap.latest_for_solver(spec.solver))
    from ..distributed.client_main import run_client  # imported late: needs grpc and the engine
    xp = select_device(spec.gpu, False)
    return run_client(spec.replace(run_dir=run_dir(spec.solver, spec.output_dir)), xp=xp)
