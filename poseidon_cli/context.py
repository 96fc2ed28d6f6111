"""Where a run happens: the phase constants and a net replica's place in the cluster.

One definition, imported by ``layers/`` (data layers pick their partition from the context), the
Net, the Solver and the distributed wing. Nothing here imports the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Caffe's ``Phase`` enum values (``caffe.proto``: TRAIN = 0, TEST = 1)
TRAIN, TEST = 0, 1


@dataclass(frozen=True)
class RunContext:
    """Where this net replica runs in the cluster; data layers use it to pick their partition.

    ``client_id`` of ``num_clients`` machines (hosts-file lines), ``worker_id`` of
    ``workers_per_client`` workers (GPUs) inside that client. A single-process run is all zeros/ones.
    """
    client_id: int = 0
    num_clients: int = 1
    worker_id: int = 0
    workers_per_client: int = 1

    @property
    def rank(self) -> int:
        """Global worker index: client_id * workers_per_client + worker_id."""
        return self.client_id * self.workers_per_client + self.worker_id

    @property
    def world_size(self) -> int:
        return self.num_clients * self.workers_per_client
