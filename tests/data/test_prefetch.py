import threading
import time

import pytest

from poseidon_cli.data.prefetch import Prefetcher
from poseidon_cli.errors import DataError


def test_results_in_order_and_bounded_queue():
    produced = []

    def produce():
        produced.append(len(produced))
        return produced[-1]

    p = Prefetcher(produce, depth=2, timeout=5)
    assert [p.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    time.sleep(0.2)
    assert len(produced) <= 5 + 2 + 1     # never more than depth ahead (+1 in hand)
    p.close()
    assert not p.alive


def test_producer_exception_reaches_the_consumer_after_earlier_results():
    it = iter([1, 2])

    def produce():
        try:
            return next(it)
        except StopIteration:
            raise DataError("key '7': record is not a Caffe Datum") from None

    p = Prefetcher(produce, depth=4, timeout=5)
    assert p.get() == 1 and p.get() == 2
    with pytest.raises(DataError, match="not a Caffe Datum"):
        p.get()
    with pytest.raises(DataError, match="stopped"):
        p.get()
    p.close()


def test_stuck_reader_raises_after_the_deadline():
    release = threading.Event()
    p = Prefetcher(lambda: release.wait(10), depth=1, timeout=0.3, name="Data layer 'x'")
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="Data layer 'x'.*within 0.3 s"):
        p.get()
    assert time.perf_counter() - t0 < 2
    release.set()
    p.close()


def test_close_unblocks_a_producer_waiting_on_a_full_queue():
    p = Prefetcher(lambda: 1, depth=1, timeout=5)
    time.sleep(0.1)
    p.close(join_timeout=2)
    assert not p.alive
