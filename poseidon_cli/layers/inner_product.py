"""InnerProduct (fully connected): y = x W^T + b.

Fields (``inner_product_param``): ``num_output`` N (required), ``bias_term`` (true),
``weight_filler`` / ``bias_filler`` (missing => zeros), ``axis`` (1; negative counts from the end),
``transpose`` (false).

Shapes: bottom (d0, ..., d_{axis-1}, d_axis, ...) is viewed as M x K with M = prod(dims[:axis]),
K = prod(dims[axis:]) (C,H,W flatten order). Top = dims[:axis] + (N,). Blobs: W (N, K) -- (K, N)
when ``transpose`` -- and b (N,). A later reshape with a different K raises NetError.
"""
from __future__ import annotations

import numpy as np

from .. import fillers
from ..ops import threads
from . import register
from .base import Layer


def _prod(dims):
    return int(np.prod(dims, dtype=np.int64)) if len(dims) else 1


# Elements of the scratch block one weight-gradient product is written to (see backward).
_SCRATCH_ELEMS = 1 << 21

@register("InnerProduct")
class InnerProductLayer(Layer):
    exact_num_bottom = 1
    exact_num_top = 1

    def _axis(self, bottom):
        nd = len(bottom[0].shape)
        axis = self.param.inner_product_param.axis
        if not -nd <= axis < nd:
            raise self.error(f"axis {axis} out of range for bottom shape {bottom[0].shape}")
        return axis % nd

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("inner_product_param.num_output must be set (> 0)")
        self.N = int(p.num_output)
        self.bias_term = p.bias_term
        self.transpose = p.transpose
        axis = self._axis(bottom)
        self.K = _prod(bottom[0].shape[axis:])
        wshape = (self.K, self.N) if self.transpose else (self.N, self.K)
        w = self.new_blob(wshape)
        fillers.fill(w, fillers.filler_of(p, "weight_filler"), self.rng, f"{self.describe()} weights")
        self.blobs = [w]
        if self.bias_term:
            b = self.new_blob((self.N,))
            fillers.fill(b, fillers.filler_of(p, "bias_filler"), self.rng, f"{self.describe()} bias")
            self.blobs.append(b)
        self.param_propagate_down = [True] * len(self.blobs)

    def reshape(self, bottom, top):
        axis = self._axis(bottom)
        shape = bottom[0].shape
        k = _prod(shape[axis:])
        if k != self.K:
            raise self.error(f"bottom shape {shape} flattens to K={k} from axis {axis}, but the "
                             f"weights were made for K={self.K}")
        self.M = _prod(shape[:axis])
        top[0].reshape(tuple(shape[:axis]) + (self.N,))

    def _w_nk(self):
        w = self.blobs[0].data
        return w.T if self.transpose else w      # (N, K) view

    def forward(self, bottom, top):
        xp = bottom[0].xp
        x = bottom[0].data.reshape(self.M, self.K)
        y = top[0].data.reshape(self.M, self.N)
        w = self.blobs[0].data
        wt = w if self.transpose else w.T
        b = self.blobs[1].data if self.bias_term else None

        def rows(m0, m1):   # one GEMM per thread over a slice of the batch rows
            xp.matmul(x[m0:m1], wt, out=y[m0:m1])
            if b is not None:
                y[m0:m1] += b
        threads.parallel_for(self.M, rows, xp, cost=self.M * self.K * self.N // 64)

    def sufficient_factors(self, bottom, top):
        """``(dy, x)``: the top diff as M x N and the bottom data as M x K, views of the blobs
        (copy them before the next forward/backward). The weight gradient of this batch is
        ``dy.T @ x`` (N x K), or ``x.T @ dy`` with ``transpose``: a rank-M product, which is what
        sufficient-factor broadcasting sends instead of the gradient."""
        return top[0].diff.reshape(self.M, self.N), bottom[0].data.reshape(self.M, self.K)

    def backward(self, top, propagate_down, bottom):
        xp = bottom[0].xp
        dy = top[0].diff.reshape(self.M, self.N)
        x = bottom[0].data.reshape(self.M, self.K)
        cost = self.M * self.K * self.N // 64
        if self.param_propagate_down[0]:
            wd = self.blobs[0].diff

            def wgrad(n0, n1):   # each thread owns a block of output units (disjoint rows of dW)
                # dW accumulates (Caffe's diffs add up), so the product goes to a scratch block
                # first: a few MB reused over the rows rather than a fresh dW-sized temporary,
                # whose allocation and page faults cost more than the GEMM on large layers
                step = max(1, min(n1 - n0, _SCRATCH_ELEMS // max(1, self.K)))
                tmp = xp.empty((step, self.K) if not self.transpose else (self.K, step),
                               dtype=wd.dtype)
                for r0 in range(n0, n1, step):
                    r1 = min(n1, r0 + step)
                    if self.transpose:
                        t = tmp[:, :r1 - r0]
                        xp.matmul(x.T, dy[:, r0:r1], out=t)
                        wd[:, r0:r1] += t
                    else:
                        t = tmp[:r1 - r0]
                        xp.matmul(dy[:, r0:r1].T, x, out=t)
                        wd[r0:r1] += t
            threads.parallel_for(self.N, wgrad, xp, cost=cost)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff[...] += dy.sum(axis=0)
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(self.M, self.K)
            w_nk = self._w_nk()
            threads.parallel_for(self.M, lambda m0, m1: xp.matmul(dy[m0:m1], w_nk, out=dx[m0:m1]),
                                 xp, cost=cost)
