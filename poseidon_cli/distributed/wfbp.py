"""Wait-free backpropagation: per-parameter communication attached to a Net from outside.

``WaitFreeBackprop(net, client, syncs, ...)`` (``syncs``: one :class:`~.param_sync.ParamSync` per
``net.learnable`` entry) registers two Net hooks:

- after layer ``i``'s backward, every learnable parameter in ``net.param_ready_after[i]`` (its
  gradient is final: the lowest layer that uses it, so shared weights work) is pushed at once.
  ``PSClient.push`` hands the chunks to the client's long-lived thread pool and returns, so the
  push overlaps the backward of the layers below (no thread per parameter per iteration);
- before layer ``i``'s forward, it waits for the fresh values of the parameters that layer reads
  (``net.layer_learnable_params[i]``) and copies them in place into the blobs (test nets share
  these arrays). The pulls are requested right after the clock ends, so the top layers'
  communication also overlaps the start of the next forward.

With ``overlap=False`` (``--no-overlap``) nothing is pushed from the hook: ``push_remaining`` sends
everything after the whole backward, for comparison.

Only parameters whose ParamSync scheme is "ps" travel; "local" ones (``lr_mult == 0``: BatchNorm
statistics, frozen layers) stay local, as in Caffe's multi-GPU training. Gradients are divided by
``iter_size`` before pushing (Caffe's Normalize); regularization and the update rule run on the
parameter server. Bytes pushed/pulled go to each ParamSync (``bytes_sent`` / ``bytes_received``);
the time spent blocked this iteration is ``wait_s``.

Sufficient-factor broadcasting (``sfb``: a :class:`~.sfb.FactorExchange`) runs in the same
pipeline: after an SFB layer's backward its factors are captured and sent to every peer (at
``push_remaining`` without overlap); before its forward the worker applies that layer's updates
of every clock ``<= c - s - 1`` (waiting for the peers' factors), c being the client's clock.
SFB weights have scheme "sfb" (they never reach the parameter server).
"""
from __future__ import annotations

import concurrent.futures as cf
import time

import numpy as np

from ..backend import get_array_module, to_host
from ..errors import ClusterError


class WaitFreeBackprop:
    def __init__(self, net, client, syncs, overlap: bool = True,
                 iter_size: int = 1, deadline_s: float = 60.0, sfb=None, staleness: int = 0):
        self.net = net
        self.client = client
        self.syncs = list(syncs)                  # per learnable index k
        if [s.param for s in self.syncs] != list(net.learnable):
            raise ValueError("syncs must hold one ParamSync per net.learnable entry, in order")
        self.ps = [k for k, s in enumerate(self.syncs) if s.scheme == "ps"]
        self.overlap = overlap
        self.iter_size = max(1, int(iter_size))
        self.deadline_s = deadline_s
        self.pending = {}                          # param index -> Future of fresh values
        self.pushed = set()
        self.push_enabled = False                  # only on the last of iter_size passes
        n = len(self.syncs)
        self.wait_s = 0.0                          # blocked waiting for parameters this iteration
        self._free = [[] for _ in range(n)]        # per param: host buffers of finished pushes
        self.sfb = sfb
        self.staleness = int(staleness)
        self.sfb_layers = sfb.layer_indices if sfb is not None else set()
        self.last_pass = True
        net.add_after_backward(self._after_backward)
        net.add_before_forward(self._before_forward)

    # -- backward side -------------------------------------------------------------------------------
    def begin_pass(self, last: bool):
        """Call before each forward/backward pass; pushes happen only on the last of iter_size."""
        self.push_enabled = last and self.overlap
        self.last_pass = last

    def _after_backward(self, li):
        if li in self.sfb_layers and self.last_pass:
            self.sfb.capture(li, self.client.clock_value, send=self.overlap)
        if not self.push_enabled:
            return
        for k in self.net.param_ready_after[li]:
            self._push(k)

    def _push(self, k):
        sync = self.syncs[k]
        if sync.scheme != "ps" or k in self.pushed:
            return
        diff = sync.param.blob.diff
        # A fresh host array: the push is asynchronous and the diff is zeroed next iteration.
        if self.iter_size != 1:
            grad = to_host(diff) * (1.0 / self.iter_size)
        elif get_array_module(diff) is np:
            # Reuse the buffer of an earlier, finished push: a fresh 64 MB array per push and
            # iteration costs its page faults on top of the copy.
            free = self._free[k]
            grad = free.pop() if free else np.empty_like(diff)
            np.copyto(grad, diff)
            fut = self.client.push(sync.ps_name, grad, copy=False)
            fut.add_done_callback(lambda f, k=k, grad=grad: self._recycle(k, grad))
            self.pushed.add(k)
            sync.bytes_sent += grad.nbytes
            return
        else:
            grad = to_host(diff)
        self.client.push(sync.ps_name, grad, copy=False)
        self.pushed.add(k)
        sync.bytes_sent += grad.nbytes

    def _recycle(self, k, grad):
        # list.append is atomic; at most two spare buffers per param
        if len(self._free[k]) < 2:
            self._free[k].append(grad)

    def push_remaining(self):
        """Push whatever the hooks did not (everything with --no-overlap)."""
        for k in self.ps:
            self._push(k)
        if self.sfb is not None:
            self.sfb.send_captured()

    def end_iteration(self):
        self.pushed = set()

    # -- forward side --------------------------------------------------------------------------------
    def request_pulls(self, min_clock: int = 0):
        """Ask for every "ps" parameter's values for the client's current clock."""
        for k in self.ps:
            self.pending[k] = self.client.pull(self.syncs[k].ps_name, min_clock)

    def _before_forward(self, li):
        for k in self.net.layer_learnable_params[li]:
            self._take(k)
        if li in self.sfb_layers:
            t0 = time.perf_counter()
            self.sfb.ensure(li, self.client.clock_value - self.staleness)
            self.wait_s += time.perf_counter() - t0

    def _take(self, k):
        fut = self.pending.pop(k, None)
        if fut is None:
            return
        t0 = time.perf_counter()
        try:
            values = fut.result(timeout=self.deadline_s + 5.0)
        except cf.TimeoutError:
            raise ClusterError(f"no fresh values of parameter '{self.syncs[k].ps_name}' from the "
                               f"parameter server within {self.deadline_s:.0f}s") from None
        self.wait_s += time.perf_counter() - t0
        blob = self.syncs[k].param.blob
        xp = get_array_module(blob.data)
        blob.data[...] = values if xp is np else xp.asarray(values)
        self.syncs[k].bytes_received += values.nbytes

    def wait_all(self):
        """Install every pending parameter now (before testing or snapshotting)."""
        for k in list(self.pending):
            self._take(k)
        if self.sfb is not None:
            self.sfb.ensure_all(self.client.clock_value - self.staleness)
