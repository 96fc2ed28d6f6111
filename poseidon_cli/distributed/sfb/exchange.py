"""``FactorExchange``: one worker's sufficient-factor state, from capture to the local solver step.

**Factors.** An InnerProduct layer's weight W is (N_out, K_in); over a batch of B rows its gradient
is ``dW = top_diffᵀ · bottom_data`` with top_diff (B, N_out) and bottom_data (B, K_in): two thin
matrices, the layer's sufficient factors (``InnerProductLayer.sufficient_factors``). Instead of
pushing dW to the parameter server and pulling W back, every worker sends its two factors to every
peer, and every worker rebuilds the averaged gradient and applies the solver step to its own
replica. The layer's own weight-gradient GEMM is switched off (``Net.set_external_gradient``).

**Semantics** (the same as the PS path; the original Poseidon did not honour them):

* clocks: the factors a worker makes during iteration ``c`` carry clock ``c``. Update ``c`` of a
  layer is ``(1/P) Σ_p top_diff_pᵀ · bottom_p`` over every worker p, one GEMM over the factors
  stacked in worker-id order, so every replica computes the same values (the PS path adds
  per-worker gradients instead: the sums differ in rounding only, see :meth:`_rebuild`); then the
  one Caffe update step (``solver/step.py``) with ``lr(start_iter + c) · lr_mult``: once per
  clock, in clock order, with the solver history kept locally (``Solver.history``, so snapshots
  include it and resume on one node or many).
* SSP: before the forward of an SFB layer at clock ``c`` a worker has applied the updates of every
  clock ``<= c - s - 1``, waiting for the factors of every peer (with s = 0: of the previous clock).
  Later complete clocks are applied when already there.
* start-up: worker 0 sends its weights and history of every SFB layer to every peer (replicas start
  equal whatever each worker's random filler did).
* every wait has a deadline; on expiry a ClusterError names the peers whose factors are missing; a
  failed send names the peer and its address.

Bytes counted per layer: payload bytes sent and received (``4·K·(M+N)`` per peer and direction).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time

import numpy as np

from ..._proto import sfb_pb2
from ...backend import get_array_module, to_host
from ...errors import ClusterError
from ...solver.lr_policy import learning_rate
from ...solver.step import apply_step
from ...solver.updates import make_rule
from .transport import DEFAULT_CHUNK_BYTES, FactorTransport

STEP_BLOCK_ELEMENTS = 64 * 1024   # float32 elements per block of the host solver step (256 KiB)


class _Assembly:
    """One matrix being reassembled from chunks."""

    def __init__(self, rows, cols, dtype):
        self.array = np.empty((int(rows), int(cols)), dtype=np.dtype(dtype))
        self.filled = 0

    def add(self, offset, data) -> bool:
        flat = self.array.reshape(-1)
        part = np.frombuffer(data, dtype=flat.dtype)
        if offset < 0 or offset + part.size > flat.size:
            raise ValueError(f"chunk at {offset} of {part.size} elements outside a matrix of {flat.size}")
        flat[offset:offset + part.size] = part
        self.filled += part.size
        return self.filled >= flat.size


def _host_copy(a):
    """A host array this exchange owns: ``to_host`` already copies a device array; a NumPy
    blob's array is the blob's own memory and must be copied."""
    if isinstance(a, np.ndarray):
        return np.array(a, copy=True)
    return to_host(a)


class FactorExchange:
    """SFB state of one worker (see module docstring).

    ``net``: the train Net; ``plans``: :func:`plan_layers` output (only ``scheme == "sfb"`` entries
    are used); ``history_of(k)``: the solver's history list of learnable param k (read at each
    step, so ``Solver.restore`` may replace it); ``solver_param``: the SolverParameter (rule, lr
    policy, weight decay); ``start_iter``: the iteration clock 0 is.

    Main-thread calls: :meth:`capture` (after an SFB layer's backward), :meth:`send_captured`,
    :meth:`ensure` (before its forward), :meth:`ensure_all`, :meth:`flush`,
    :meth:`publish_initial` / :meth:`install_initial`. :meth:`receive` runs on transport threads.
    """

    def __init__(self, net, plans, history_of, solver_param, worker_id: int, num_workers: int,
                 job_id: str, transport: FactorTransport, start_iter: int = 0,
                 deadline_s: float = 60.0, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.net = net
        self.plans = [p for p in plans if p.scheme == "sfb"]
        self.by_layer = {p.layer_index: j for j, p in enumerate(self.plans)}
        self.param_indices = {p.param_index for p in self.plans}
        self.history_of = history_of
        self.param = solver_param
        self.rule = make_rule(solver_param)
        self.weight_decay = float(solver_param.weight_decay)
        self.reg_type = solver_param.regularization_type or "L2"
        self.worker_id, self.num_workers, self.job_id = worker_id, num_workers, job_id
        self.transport = transport
        self.start_iter = int(start_iter)
        self.deadline_s = deadline_s
        self.chunk_bytes = int(chunk_bytes)
        n = len(self.plans)
        self.applied = [0] * n                   # clocks applied per layer
        self.bytes_sent = [0] * n
        self.bytes_received = [0] * n
        self.rebuild_cpu_s = [0.0] * n           # CPU seconds (host) of the gradient GEMMs
        self.step_cpu_s = [0.0] * n              # ... and of the local solver steps
        self.wait_s = 0.0
        self._cv = threading.Condition()
        self._parts: dict = {}                   # (j, clock, sender, kind) -> _Assembly
        self._factors: dict = {}                 # (j, clock) -> {sender: {kind: array}}
        self._grads: dict = {}                   # (j, clock) -> summed gradient (weight's xp)
        self._free: list = [[] for _ in range(n)]  # per layer: gradient buffers to reuse
        self._initial: dict = {}                 # (j, kind, slot) -> array (from worker 0)
        self._captured: dict = {}                # j -> (clock, top_diff, bottom) not yet sent
        self._sends: list = []
        self._failure: BaseException | None = None
        self._send_pool = cf.ThreadPoolExecutor(max(2, 2 * (num_workers - 1)),
                                                thread_name_prefix=f"sfb-send-w{worker_id}")
        self._compute_pool = cf.ThreadPoolExecutor(1, thread_name_prefix=f"sfb-gemm-w{worker_id}")
        # The layer's own weight-gradient GEMM would be thrown away: skip it.
        for p in self.plans:
            net.set_external_gradient(p.param_index)

    @property
    def layer_indices(self):
        return set(self.by_layer)

    # -- sending -------------------------------------------------------------------------------
    def _frames(self, j, clock, kind, array, slot=0):
        flat = np.ascontiguousarray(array).reshape(-1)
        rows, cols = (array.shape[0], int(np.prod(array.shape[1:], dtype=np.int64))) if array.ndim else (1, 1)
        per = max(1, self.chunk_bytes // flat.itemsize)
        out = []
        for off in range(0, max(flat.size, 1), per):
            out.append(sfb_pb2.FactorChunk(
                job_id=self.job_id, worker_id=self.worker_id, clock=clock, layer=j, kind=kind, slot=slot,
                rows=rows, cols=cols, dtype=flat.dtype.name, offset=off,
                data=flat[off:off + per].tobytes()).SerializeToString())
        return out

    def _broadcast(self, frames, what):
        for peer in range(self.num_workers):
            if peer == self.worker_id:
                continue
            fut = self._send_pool.submit(self.transport.send, peer, frames, self.deadline_s)
            fut.add_done_callback(lambda f, peer=peer: self._send_done(f, peer, what))
            with self._cv:
                # only sends still in flight: a finished one's failure is already in _failure,
                # and keeping every future until flush() would grow by P-1 per layer and clock
                self._sends = [f for f in self._sends if not f.done()]
                self._sends.append(fut)

    def _send_done(self, fut, peer, what):
        exc = fut.exception()
        if exc is not None:
            if not isinstance(exc, ClusterError):
                exc = ClusterError(f"sending {what} to {self.transport.address(peer)} failed: {exc}")
            with self._cv:
                if self._failure is None:
                    self._failure = exc
                self._cv.notify_all()

    def _check(self):
        if self._failure is not None:
            raise ClusterError(f"worker {self.worker_id}: {self._failure.one_line()}")

    def capture(self, li: int, clock: int, send: bool = True) -> None:
        """Copy layer ``li``'s factors of ``clock`` (call right after its backward); keep them for
        this worker's own update and send them to every peer now (``send``) or at
        :meth:`send_captured`."""
        j = self.by_layer[li]
        dy, x = self.net.layers[li].sufficient_factors(self.net.bottom_vecs[li], self.net.top_vecs[li])
        dy, x = _host_copy(dy), _host_copy(x)
        self._add_factors(j, clock, self.worker_id, {sfb_pb2.TOP_DIFF: dy, sfb_pb2.BOTTOM_DATA: x})
        if send:
            self._send_factors(j, clock, dy, x)
        else:
            self._captured[j] = (clock, dy, x)

    def _send_factors(self, j, clock, dy, x):
        self._check()
        frames = self._frames(j, clock, sfb_pb2.TOP_DIFF, dy) + self._frames(j, clock, sfb_pb2.BOTTOM_DATA, x)
        self.bytes_sent[j] += (dy.nbytes + x.nbytes) * (self.num_workers - 1)
        self._broadcast(frames, f"sufficient factors of layer '{self.plans[j].layer}' (clock {clock})")

    def send_captured(self) -> None:
        """Send the factors :meth:`capture` kept (``send=False``: no overlap)."""
        captured, self._captured = self._captured, {}
        for j, (clock, dy, x) in sorted(captured.items()):
            self._send_factors(j, clock, dy, x)

    def flush(self) -> None:
        """Block until every send finished; raise the first failure."""
        with self._cv:
            sends, self._sends = self._sends, []
        for f in sends:
            try:
                f.result(timeout=self.deadline_s + 5.0)
            except cf.TimeoutError:
                raise ClusterError(f"worker {self.worker_id}: sending sufficient factors did not finish "
                                   f"within {self.deadline_s:.0f}s") from None
            except ClusterError:
                pass  # recorded by _send_done
        self._check()

    # -- receiving -----------------------------------------------------------------------------
    def receive(self, msg) -> None:
        """Take one ``FactorChunk`` (any thread)."""
        if msg.job_id != self.job_id:
            raise ClusterError(f"worker {self.worker_id} runs job {self.job_id!r}; worker {msg.worker_id} "
                               f"sent sufficient factors of job {msg.job_id!r}")
        if not 0 <= msg.layer < len(self.plans):
            raise ValueError(f"SFB layer index {msg.layer} out of range (this worker has {len(self.plans)})")
        if not 0 <= msg.worker_id < self.num_workers:
            raise ValueError(f"sender worker id {msg.worker_id} out of range")
        key = (msg.layer, msg.clock, msg.worker_id, msg.kind, msg.slot)
        with self._cv:
            asm = self._parts.get(key)
            if asm is None:
                asm = self._parts[key] = _Assembly(msg.rows, msg.cols, msg.dtype)
        # Chunks of one matrix are disjoint: fill outside the lock.
        done = asm.add(msg.offset, msg.data)
        if not done:
            return
        with self._cv:
            if self._parts.pop(key, None) is None:
                return
            if msg.kind in (sfb_pb2.WEIGHTS, sfb_pb2.HISTORY):
                self._initial[(msg.layer, msg.kind, msg.slot)] = asm.array
                self._cv.notify_all()
                return
            self.bytes_received[msg.layer] += asm.array.nbytes
        self._add_factors(msg.layer, msg.clock, msg.worker_id, {msg.kind: asm.array})

    def _add_factors(self, j, clock, sender, parts):
        with self._cv:
            if clock < self.applied[j]:
                return  # a repeat of an applied clock
            entry = self._factors.setdefault((j, clock), {})
            entry.setdefault(sender, {}).update(parts)
            ready = (len(entry) == self.num_workers and all(len(v) == 2 for v in entry.values()))
            if ready:
                del self._factors[(j, clock)]
        if ready:
            self._compute_pool.submit(self._rebuild, j, clock, entry)

    def _buffer(self, j, shape, dtype, xp):
        """A gradient buffer for layer ``j`` from its free list (a fresh weight-sized array per
        clock costs about as much in page faults as the solver step itself)."""
        with self._cv:
            free = self._free[j]
            while free:
                buf = free.pop()
                if buf.shape == shape and buf.dtype == dtype and get_array_module(buf) is xp:
                    return buf
        return xp.empty(shape, dtype=dtype)

    def _release(self, j, buf):
        with self._cv:
            if len(self._free[j]) < 2:
                self._free[j].append(buf)

    def _rebuild(self, j, clock, entry):
        """The summed gradient of clock ``clock``, ``Σ_p top_diff_pᵀ · bottom_p``, as ONE GEMM
        over the P·K rows of every worker's factors stacked in worker-id order, into a reused
        buffer. Every replica stacks the same rows in the same order, so every replica computes
        the same values. :meth:`_step` divides by P.

        Why one GEMM: a K-row GEMM per worker (K = the batch) is a thin GEMM that BLAS runs well
        below its peak; the stacked one has P times the rows and runs faster, and this rebuild is
        the largest CPU cost of an SFB worker (README, Performance, has the measurement). The sum
        is rounded in another order than the PS adds per-worker gradients, so ``--svb on`` and
        ``--svb off`` agree to rounding, not bit for bit (the tests bound the difference)."""
        t0 = time.thread_time()
        try:
            w = self.net.learnable_params[self.plans[j].param_index].data
            xp = get_array_module(w)
            ctx = w.device if xp is not np else contextlib.nullcontext()
            with ctx:
                dys, xs = [], []
                for p in range(self.num_workers):
                    dy = xp.asarray(entry[p][sfb_pb2.TOP_DIFF], dtype=w.dtype)
                    x = xp.asarray(entry[p][sfb_pb2.BOTTOM_DATA], dtype=w.dtype)
                    shape = (dy.shape[1], x.shape[1])
                    if shape != tuple(w.shape) or dy.shape[0] != x.shape[0]:
                        raise ValueError(
                            f"factors of layer '{self.plans[j].layer}' from worker {p} "
                            f"({dy.shape[0]} x {dy.shape[1]} top diff, {x.shape[0]} x "
                            f"{x.shape[1]} bottom) do not give the {tuple(w.shape)} "
                            f"weight's gradient")
                    dys.append(dy)
                    xs.append(x)
                g = self._buffer(j, shape, w.dtype, xp)
                stacked_dy = dys[0] if len(dys) == 1 else xp.concatenate(dys, axis=0)
                stacked_x = xs[0] if len(xs) == 1 else xp.concatenate(xs, axis=0)
                xp.matmul(stacked_dy.T, stacked_x, out=g)
                if xp is not np:
                    # _step runs on the main thread: with a per-thread default stream its kernels
                    # would not be ordered after this GEMM, so finish it before publishing g
                    xp.cuda.get_current_stream().synchronize()
            with self._cv:
                self._grads[(j, clock)] = g
                self.rebuild_cpu_s[j] += time.thread_time() - t0
                self._cv.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported to the waiting main thread
            with self._cv:
                if self._failure is None:
                    self._failure = ClusterError(f"rebuilding the gradient of layer "
                                                 f"'{self.plans[j].layer}' failed: {e}")
                self._cv.notify_all()

    # -- applying ------------------------------------------------------------------------------
    def _missing(self, j, clock):
        entry = self._factors.get((j, clock), {})
        return [p for p in range(self.num_workers)
                if p != self.worker_id and len(entry.get(p, {})) < 2]

    def ensure(self, li: int, need: int) -> None:
        """Before layer ``li``'s forward: apply its updates of every clock ``< need`` (waiting for
        them), and any later one already rebuilt."""
        self._ensure_layer(self.by_layer[li], need)

    def ensure_all(self, need: int) -> None:
        for j in range(len(self.plans)):
            self._ensure_layer(j, need)

    def _ensure_layer(self, j, need):
        t0 = time.perf_counter()
        while True:
            with self._cv:
                clock = self.applied[j]
                g = self._grads.pop((j, clock), None)
                if g is None:
                    if clock >= need:
                        break
                    end = time.monotonic() + self.deadline_s
                    while (j, clock) not in self._grads and self._failure is None:
                        left = end - time.monotonic()
                        if left <= 0:
                            missing = self._missing(j, clock)
                            who = ("from " + ", ".join(f"worker {m}" for m in missing) if missing else
                                   "(all factors arrived; the gradient was not rebuilt in time)")
                            raise ClusterError(
                                f"worker {self.worker_id}: no sufficient factors of layer "
                                f"'{self.plans[j].layer}' for clock {clock} {who} within "
                                f"{self.deadline_s:.0f}s")
                        self._cv.wait(min(left, 1.0))
                    self._check()
                    g = self._grads.pop((j, clock))
            self._step(j, clock, g)
            with self._cv:
                self.applied[j] = clock + 1
        self.wait_s += time.perf_counter() - t0

    def _step(self, j, clock, g):
        """Caffe's update for one clock (``solver/step.apply_step``, as the PS's SolverUpdater
        runs it), on ``g`` = the SUM over workers, divided by P first.

        On the host it runs over blocks of ``STEP_BLOCK_ELEMENTS`` of rows: every rule is
        element-wise, so this is exact, and each block's temporaries and its rows of w, g and
        history stay in cache instead of several passes over the whole arrays."""
        t0 = time.thread_time()
        p = self.plans[j]
        k = p.param_index
        w = self.net.learnable_params[k].data
        xp = get_array_module(w)
        history = self.history_of(k)
        it = self.start_iter + clock
        kw = dict(it=it, lr=learning_rate(self.param, it), lr_mult=self.net.params_lr[k],
                  decay=self.weight_decay, decay_mult=self.net.params_weight_decay[k],
                  reg_type=self.reg_type)
        rows = w.shape[0]
        cols = max(1, w.size // max(1, rows))
        block = rows if xp is not np else max(1, STEP_BLOCK_ELEMENTS // cols)
        for r in range(0, rows, block):
            s = slice(r, r + block)
            gb = g[s]
            if self.num_workers > 1:
                gb /= self.num_workers   # the mean over workers, rounded as the PS store rounds it
            apply_step(self.rule, w[s], gb, [h[s] for h in history], **kw)
        self._release(j, g)
        self.step_cpu_s[j] += time.thread_time() - t0

    # -- start-up ------------------------------------------------------------------------------
    def publish_initial(self) -> None:
        """Worker 0: send every SFB weight and its solver history to every peer; blocks."""
        for j, p in enumerate(self.plans):
            w = to_host(self.net.learnable_params[p.param_index].data)
            frames = self._frames(j, -1, sfb_pb2.WEIGHTS, w)
            for s, h in enumerate(self.history_of(p.param_index)):
                frames += self._frames(j, -1, sfb_pb2.HISTORY, to_host(h), slot=s)
            self._broadcast(frames, f"initial weights of layer '{p.layer}'")
        self.flush()

    def install_initial(self) -> None:
        """Workers != 0: wait for worker 0's initial values and install them."""
        num_hist = self.rule.num_history
        need = [(j, sfb_pb2.WEIGHTS, 0) for j in range(len(self.plans))]
        need += [(j, sfb_pb2.HISTORY, s) for j in range(len(self.plans)) for s in range(num_hist)]
        end = time.monotonic() + self.deadline_s
        with self._cv:
            while not all(k in self._initial for k in need):
                self._check()
                left = end - time.monotonic()
                if left <= 0:
                    names = sorted({self.plans[key[0]].layer for key in need if key not in self._initial})
                    raise ClusterError(f"worker {self.worker_id}: no initial weights of SFB layer(s) "
                                       f"{names} from worker 0 within {self.deadline_s:.0f}s")
                self._cv.wait(min(left, 1.0))
            initial = dict(self._initial)
            self._initial.clear()
        for j, p in enumerate(self.plans):
            blob = self.net.learnable_params[p.param_index]
            xp = get_array_module(blob.data)
            blob.data[...] = xp.asarray(initial[(j, sfb_pb2.WEIGHTS, 0)].reshape(blob.shape))
            for s, h in enumerate(self.history_of(p.param_index)):
                h[...] = xp.asarray(initial[(j, sfb_pb2.HISTORY, s)].reshape(h.shape))

    # -- reporting -----------------------------------------------------------------------------
    def layer_stats(self, iterations: int) -> list[dict]:
        """Per SFB layer: bytes sent/received in total and per iteration, next to the model."""
        out = []
        for j, p in enumerate(self.plans):
            it = max(1, iterations)
            out.append({"layer": p.layer, "param": p.param_name, "iterations": iterations,
                        "bytes_sent": int(self.bytes_sent[j]), "bytes_received": int(self.bytes_received[j]),
                        "bytes_per_iteration": (self.bytes_sent[j] + self.bytes_received[j]) / it,
                        "model_bytes_per_iteration": p.sfb_bytes,
                        "rebuild_cpu_s": round(self.rebuild_cpu_s[j], 6),
                        "step_cpu_s": round(self.step_cpu_s[j], 6)})
        return out

    def close(self) -> None:
        self._send_pool.shutdown(wait=False, cancel_futures=True)
        self._compute_pool.shutdown(wait=False, cancel_futures=True)
        self.transport.close()
