"""Numerical gradient checking of a layer's backward.

The objective is a fixed random projection of every top, ``L = sum_i <R_i, top_i>``, so one
backward pass (top diffs = R_i) gives the analytic gradient of every bottom and parameter element,
and central differences ``(L(x + h) - L(x - h)) / 2h`` give the numeric one. An element passes iff
``|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1)`` (Caffe's rule). Elements
within ``kink_range`` of ``kink`` are skipped (non-differentiable points such as ReLU's 0).

The layer's rng is re-seeded before every forward so stochastic layers (Dropout) draw the same
mask each time. Use float64 blobs for margin.
"""
from __future__ import annotations

import numpy as np

from ..backend import to_host
from ..blob import Blob


class GradientChecker:
    def __init__(self, step=1e-2, threshold=1e-3, seed=1701, kink=0.0, kink_range=-1.0,
                 max_checks_per_blob=None):
        self.step = step
        self.threshold = threshold
        self.seed = seed
        self.kink = kink
        self.kink_range = kink_range
        self.max_checks = max_checks_per_blob

    def _forward(self, layer, bottom, top):
        layer.rng = np.random.default_rng(self.seed)
        layer.reshape(bottom, top)
        layer.forward(bottom, top)

    def _objective(self, top, proj):
        return sum(float((to_host(t.data).astype(np.float64) * r).sum()) for t, r in zip(top, proj))

    def check(self, layer, bottom, top, check_bottom=None, check_params=True):
        """Setup (if needed), then check. ``check_bottom``: None = every bottom, an int = that
        bottom only, an empty list = none. Raises AssertionError naming the first failures."""
        if not getattr(layer, "_poseidon_setup_done", False):
            layer.setup(bottom, top)
            layer._poseidon_setup_done = True
        if check_bottom is None:
            bottoms_to_check = list(range(len(bottom)))
        elif isinstance(check_bottom, int):
            bottoms_to_check = [check_bottom]
        else:
            bottoms_to_check = list(check_bottom)
        self._forward(layer, bottom, top)
        rng = np.random.default_rng(self.seed + 1)
        proj = [rng.uniform(-1, 1, size=t.shape) for t in top]
        xp = bottom[0].xp if bottom else np

        # analytic
        for blob in layer.blobs:
            blob.diff[...] = 0
        for t, r in zip(top, proj):
            t.diff[...] = xp.asarray(r.astype(t.dtype))
        propagate = [i in bottoms_to_check for i in range(len(bottom))]
        layer.backward(top, propagate, bottom)
        targets = [(f"bottom[{i}]", bottom[i]) for i in bottoms_to_check]
        if check_params:
            targets += [(f"param[{j}]", b) for j, b in enumerate(layer.blobs)
                        if j >= len(layer.param_propagate_down) or layer.param_propagate_down[j]]
        analytic = {name: to_host(b.diff).astype(np.float64).copy() for name, b in targets}

        failures = []
        for name, blob in targets:
            flat = blob.data.reshape(-1)
            idx = np.arange(flat.size)
            if self.max_checks and flat.size > self.max_checks:
                idx = np.random.default_rng(self.seed).choice(flat.size, self.max_checks,
                                                              replace=False)
            grad = analytic[name].reshape(-1)
            for k in idx:
                x0 = float(flat[k])
                if self.kink_range > 0 and abs(abs(x0) - self.kink) <= self.kink_range:
                    continue
                flat[k] = x0 + self.step
                self._forward(layer, bottom, top)
                plus = self._objective(top, proj)
                flat[k] = x0 - self.step
                self._forward(layer, bottom, top)
                minus = self._objective(top, proj)
                flat[k] = x0
                numeric = (plus - minus) / (2 * self.step)
                a = grad[k]
                scale = max(abs(a), abs(numeric), 1.0)
                if abs(a - numeric) > self.threshold * scale:
                    failures.append(f"{name}[{k}]: analytic {a:.6g} vs numeric {numeric:.6g}")
        self._forward(layer, bottom, top)
        if failures:
            raise AssertionError(f"{layer.describe()}: {len(failures)} gradient mismatch(es): "
                                 + "; ".join(failures[:8]))
        return True


def check_layer_gradients(layer, bottom, n_top=1, **kwargs):
    """Convenience: make ``n_top`` float64 tops and run ``GradientChecker(**kwargs).check``."""
    check_bottom = kwargs.pop("check_bottom", None)
    check_params = kwargs.pop("check_params", True)
    xp = bottom[0].xp if bottom else np
    dtype = bottom[0].dtype if bottom else np.float64
    top = [Blob((), xp=xp, dtype=dtype) for _ in range(n_top)]
    return GradientChecker(**kwargs).check(layer, bottom, top, check_bottom, check_params)
