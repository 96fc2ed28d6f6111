"""The worker-port directory (distributed/directory.py): worker t >= 1 of a client announces its
port through worker 0's gRPC server; lookups wait for it, with a deadline that names the worker."""
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from poseidon_cli.distributed import directory
from poseidon_cli.errors import ClusterError
from test_sfb_grpc import free_ports


def test_worker_directory_registers_looks_up_and_names_what_is_missing():
    """Worker t >= 1 of a client announces its SFB port through worker 0's gRPC server; a lookup
    waits for the registration, fails at its deadline naming the worker, and another job's
    request is refused in one line."""
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((directory.WorkerDirectory("job-a").handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match=r"SFB port of worker 1 via 127\.0\.0\.1:\d+ did not "
                                               r"succeed within 1s \(not registered yet\)"):
            directory.lookup_worker(address, "10.0.0.7", "job-a", 1, deadline_s=1.0)
        assert time.monotonic() - t0 < 5
        directory.register_worker(address, "job-a", 1, 40123, deadline_s=5.0)
        found = directory.lookup_worker(address, "10.0.0.7", "job-a", 1, deadline_s=5.0)
        assert found == "10.0.0.7:40123"
        with pytest.raises(ClusterError, match="SFB directory of job 'job-a' got b'job-b"):
            directory.register_worker(address, "job-b", 2, 1, deadline_s=5.0)
    finally:
        server.stop(0)


def test_a_directory_that_never_answers_is_named():
    (port,) = free_ports(1)   # nothing listens there
    with pytest.raises(ClusterError, match=rf"registering worker 3's SFB port with its client's "
                                           rf"worker 0 via 127\.0\.0\.1:{port} did not succeed"):
        directory.register_worker(f"127.0.0.1:{port}", "job", 3, 5, deadline_s=1.0)
