"""Shared fixtures for the pure-op tests: ``xp`` runs each test on NumPy and, when a GPU answers,
on CuPy (marked ``gpu``, skipped cleanly otherwise); helpers for numerical gradients."""
import numpy as np
import pytest

from poseidon_cli import backend


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    if request.param == "numpy":
        return np
    if not backend.gpu_available():
        pytest.skip("no CuPy GPU available")
    return backend._import_cupy()


def host(a):
    return None if a is None else backend.to_host(a)


def numeric_grad(f, x, proj, h=1e-6):
    """Central-difference gradient of ``sum(f(x) * proj)`` w.r.t. float64 host array ``x``."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float((f(x) * proj).sum())
        flat[i] = old - h
        fm = float((f(x) * proj).sum())
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g
