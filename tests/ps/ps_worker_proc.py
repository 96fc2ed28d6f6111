"""A training-loop worker process for test_server.py (run as a script, not collected by pytest).

usage: ps_worker_proc.py JOB WORKER_ID NUM_WORKERS ITERS DEADLINE_S PROGRESS_FILE ADDR [ADDR...]
The data plane is $PS_DATA_PLANE ("grpc" when unset; "tcp" for test_tcp_transport.py).
Exits 0 when done, 3 with ``poseidon: error: <message>`` on stderr on a ClusterError.
"""
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from poseidon_cli.errors import ClusterError  # noqa: E402
from poseidon_cli.ps.client import PSClient  # noqa: E402
from poseidon_cli.ps.client import make_transport  # noqa: E402

PARAMS = [("fc.0", (64, 100)), ("fc.1", (64,))]


def main():
    job, w, P, iters, deadline, progress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
    addrs = sys.argv[7:]
    plane = os.environ.get("PS_DATA_PLANE", "grpc")
    client = PSClient([make_transport(a, i, job, plane) for i, a in enumerate(addrs)], job, w, P, PARAMS,
                      chunk_bytes=4096, deadline_s=deadline, connect_timeout_s=20, heartbeat_s=0.2)
    try:
        client.connect()
        if w == 0:
            client.init_params({n: np.zeros(s, np.float32) for n, s in PARAMS})
        for t in range(iters):
            client.pull_all()
            for n, s in PARAMS:
                client.push(n, np.ones(s, np.float32))
            client.clock()
            # Written beside and renamed so a reader never sees a half-written (empty) file.
            tmp = pathlib.Path(progress + ".tmp")
            tmp.write_text(str(t + 1))
            os.replace(tmp, progress)
            time.sleep(0.02)
        client.finish()
    except ClusterError as e:
        print(f"poseidon: error: {e.one_line()}", file=sys.stderr, flush=True)
        client.close()
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
