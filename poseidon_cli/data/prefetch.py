"""A background thread that keeps the next few batches ready.

``Prefetcher(produce, depth, name, timeout)`` calls ``produce()`` repeatedly on a daemon thread and
keeps up to ``depth`` results in a bounded queue, so the consumer (the training loop) only waits
when the reader is genuinely slower than compute.

Contract:
- ``get()`` returns the next result in order. If ``produce`` raised, ``get`` re-raises that very
  exception in the consumer (once the batches produced before it are consumed) and the thread stops.
- A stuck reader never hangs the trainer silently: if no result arrives within ``timeout`` seconds
  (default ``POSEIDON_DATA_TIMEOUT`` or 600), ``get`` raises ``DataError`` naming the prefetcher.
- ``close()`` stops the thread and joins it (bounded); it is idempotent and also runs when the
  owner is garbage-collected (``weakref.finalize``-friendly: the thread holds no reference to it).
- ``ready``: results queued now; ``wait_seconds`` / ``batches``: time the consumer spent blocked in ``get`` and results delivered,
  for measuring whether prefetch hides I/O.
"""
from __future__ import annotations

import os
import queue
import threading
import time

from ..errors import DataError

_SENTINEL_ERROR = object()


def default_timeout() -> float:
    try:
        return float(os.environ.get("POSEIDON_DATA_TIMEOUT", "600"))
    except ValueError:
        return 600.0


class Prefetcher:
    def __init__(self, produce, depth: int = 4, name: str = "data prefetch",
                 timeout: float | None = None, start: bool = True):
        self._produce = produce
        self.name = name
        self.timeout = default_timeout() if timeout is None else float(timeout)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._queue, self._stop, produce),
                                        name=f"prefetch:{name}", daemon=True)
        self._finished = False
        self.wait_seconds = 0.0
        self.batches = 0
        if start:
            self.start()

    def start(self):
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    @staticmethod
    def _run(q, stop, produce):
        # A static method: the thread must not keep the Prefetcher (or its owner) alive.
        while not stop.is_set():
            try:
                item = (True, produce())
            except BaseException as exc:  # noqa: BLE001 (handed to the consumer, not swallowed)
                item = (_SENTINEL_ERROR, exc)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[0] is _SENTINEL_ERROR:
                return

    def get(self):
        if self._finished:
            raise DataError(f"{self.name}: the data reader has stopped (closed or failed earlier)")
        t0 = time.perf_counter()
        deadline = t0 + self.timeout
        while True:
            try:
                ok, value = self._queue.get(timeout=min(0.5, max(0.0, deadline - time.perf_counter())))
                break
            except queue.Empty:
                now = time.perf_counter()
                if not self._thread.is_alive() and self._queue.empty():
                    self._finished = True
                    raise DataError(f"{self.name}: the data reader thread is not running") from None
                if now >= deadline:
                    raise DataError(f"{self.name}: no batch from the data reader within "
                                    f"{self.timeout:g} s (slow or hung disk/network file system?)",
                                    "raise POSEIDON_DATA_TIMEOUT if the storage is just slow") from None
        self.wait_seconds += time.perf_counter() - t0
        if ok is _SENTINEL_ERROR:
            self._finished = True
            raise value
        self.batches += 1
        return value

    def close(self, join_timeout: float = 5.0):
        self._stop.set()
        # Unblock a producer stuck on a full queue.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(join_timeout)
        self._finished = True

    @property
    def ready(self) -> int:
        """How many results are waiting in the queue right now."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
