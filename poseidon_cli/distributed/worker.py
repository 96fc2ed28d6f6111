"""A training worker's life cycle (:class:`Worker`), and one client of a distributed run.

:class:`Worker` ``(solver, client, *, factors=None, spec=None)`` owns the sequence every worker
follows -- connect, attach, publish/install the initial state, barrier, prime the pulls, solve,
drain, flush the factors, finish -- and its clean-up (:meth:`Worker.close`); the real client and
every in-process test (``tests/distributed/inprocess.py``) build their workers through it. The
solver carries a ``PSSync`` (``ps_sync.py``): wait-free backprop pushes, per-layer waits for fresh
parameters, one clock per iteration; display/test values averaged over workers; worker 0 logs,
writes ``.netoutputs`` and snapshots (weights and history read back from the PS, so the files
resume on one node or on any number of clients).

The real client is wired around a Worker by ``client_main.run_client(spec)`` (its PS shard, the SFB
server and transports, a ``PSClient`` over every shard, ``stats.client<k>.json``).

Staleness s: a worker's pull at clock c returns every worker's updates of clocks <= c - s - 1, so a
worker runs at most s clocks ahead of the slowest. Display and test iterations average over all
workers and therefore wait for all of them at that clock.

Hybrid communication (``--svb auto|on|off``, ``sfb/``): the weights of InnerProduct layers
chosen by the cost model are synchronised by sufficient-factor broadcasting, peer to peer over the
same gRPC server (hosts-file port) as the PS shard, with the solver step applied locally once per
clock under the same SSP bound; the decision table is logged by client 0 and written to the stats file
together with the bytes each layer moved.
"""
from __future__ import annotations

import json
import os
import time

from ..errors import ClusterError


class Worker:
    """One training worker's life cycle, the same in a real client and in in-process tests.

    ``solver``: a Solver built with ``sync=PSSync(...)``; ``client``: its ``PSClient`` (not yet
    connected; layout ``solver.sync.ps_layout()``); ``factors``: the ``FactorExchange`` from
    ``solver.sync.setup_sfb`` when the plan has SFB layers; ``spec``: where this worker sits in
    the cluster (``client_id``, ``workers_per_client``, ``worker_index``, ``hosts``: anything with
    those attributes, e.g. a ``ClusterSpec``), used to name this worker and the lost peer in
    errors; without it errors name PS worker ranks.

    :meth:`run`: connect -> attach -> publish (worker 0) -> barrier -> install (the others) ->
    prime the first pulls -> ``solver.solve()`` -> drain the pending pulls -> flush the factors
    (every peer has our last ones before anyone leaves) -> finish (flush, barrier, leave). A
    ``ClusterError`` on the way is re-raised naming this worker and, from the error's
    ``lost_workers`` / ``shard`` fields, the client that is gone. :meth:`close` always releases
    the client and the factor exchange (also after an unexpected exception); call it in a
    ``finally`` or use the Worker as a context manager.
    """

    def __init__(self, solver, client, *, factors=None, spec=None):
        self.solver = solver
        self.sync = solver.sync
        self.client = client
        self.factors = factors
        self.spec = spec
        if factors is not None and factors is not self.sync.sfb:
            raise ValueError("factors must be the exchange made by solver.sync.setup_sfb")
        self.rank = solver.context.rank
        self.wall_s = 0.0
        self._finished = False
        self._lost_shards = set()

    def run(self) -> None:
        t0 = time.time()
        try:
            self._run()
        except ClusterError as exc:
            lost = self.lost_client(exc)
            if lost is not None:   # client k serves shard k: do not wait on it while leaving
                self._lost_shards.add(lost)
            raise self.named(exc) from None
        finally:
            self.wall_s = time.time() - t0

    def _run(self):
        client, sync = self.client, self.sync
        client.connect()
        sync.attach(client)
        if self.rank == 0:
            sync.publish_initial_state()
        client.barrier()
        if self.rank != 0:
            sync.install_initial_state()
        sync.wfbp.request_pulls()
        self.solver.solve()
        sync.wfbp.wait_all()
        if self.factors is not None:
            self.factors.flush()
            self.factors.ensure_all(client.clock_value)
        client.finish()
        self._finished = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        if not self._finished:
            self.client.close(skip_shards=self._lost_shards)
        if self.factors is not None:
            self.factors.close()

    # -- errors ----------------------------------------------------------------------------------------
    def _where(self):
        spec = self.spec
        if spec is None:
            return f"worker {self.rank}"
        T = int(getattr(spec, "workers_per_client", 1) or 1)
        return f"client {spec.client_id}" + (f" worker {spec.worker_index}" if T > 1 else "")

    def lost_client(self, exc):
        """The other client an error names (a lost worker rank r lives on client r // T; shard k
        on client k), or None."""
        spec = self.spec
        if spec is None:
            return None
        T = int(getattr(spec, "workers_per_client", 1) or 1)
        me, n = spec.client_id, len(spec.hosts)
        candidates = [int(r) // T for r in getattr(exc, "lost_workers", ()) or ()]
        shard = getattr(exc, "shard", None)
        if shard is not None:
            candidates.append(int(shard))
        return next((k for k in candidates if k != me and k < n), None)

    def named(self, exc):
        """``exc`` re-worded to name this worker and the lost client (fields carried over)."""
        lost = self.lost_client(exc)
        gone = f" -> client {lost} ({self.spec.hosts[lost].address}) is gone" if lost is not None else ""
        out = ClusterError(f"{self._where()}: {exc.one_line()}{gone}",
                           "the last snapshot stays valid: rerun with --snapshot latest (or --max-restarts N)")
        for field in ("lost_workers", "shard"):
            if hasattr(exc, field):
                setattr(out, field, getattr(exc, field))
        return out

    # -- reporting ---------------------------------------------------------------------------------
    def stats(self) -> dict:
        spec = self.spec
        doc = {"client": getattr(spec, "client_id", self.rank),
               "clients": len(spec.hosts) if spec is not None else self.solver.context.num_clients,
               "staleness": self.client.staleness, "wall_s": round(self.wall_s, 3)}
        doc.update(self.sync.stats())
        return doc

    def write_stats(self, path) -> None:
        """``stats.client<k>.json``, written by rename (a reader never sees half a file)."""
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.stats(), fh, indent=1)
        os.replace(tmp, path)
