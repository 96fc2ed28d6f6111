"""The BLAS a benchmark measures: the processor's own OpenBLAS kernel, and which one it was.

Some machines set ``OPENBLAS_CORETYPE`` / ``OPENBLAS_L2_SIZE`` machine-wide, forcing slower kernels
than the processor has; a user's machine does not. OpenBLAS reads them once, when numpy loads, so a
benchmark cannot drop them after its imports: :func:`run_natively` re-executes the script without
them (call it first in the ``__main__`` block, never from a test), and every process the benchmark
starts inherits the clean environment. :func:`describe` names the kernel for the output.
"""
from __future__ import annotations

import os
import sys

FORCED = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def run_natively() -> None:
    """Re-execute this script without the variables in FORCED (returns when none is set)."""
    if any(v in os.environ for v in FORCED):
        env = {k: v for k, v in os.environ.items() if k not in FORCED}
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def keeps_forced(argv) -> bool:
    """Whether ``argv`` asks to keep the machine's settings (``--blas-env forced`` or
    ``--blas-env=forced``), for a comparison run; the script's own parser accepts the option."""
    for a, b in zip(argv, list(argv[1:]) + [""]):
        if a == "--blas-env" and b == "forced" or a == "--blas-env=forced":
            return True
    return False


def describe() -> str:
    """One line: the BLAS numpy loaded (e.g. ``OpenBLAS 0.3.27, SkylakeX kernel``) and whether the
    environment forces a kernel."""
    forced = [f"{v}={os.environ[v]}" for v in FORCED if v in os.environ]
    try:
        from threadpoolctl import threadpool_info
        import numpy  # noqa: F401 - loads the BLAS threadpoolctl reports
        libs = [f"{i.get('internal_api')} {i.get('version')}, {i.get('architecture')} kernel"
                for i in threadpool_info() if i.get("user_api") == "blas"]
        what = "; ".join(libs) or "no BLAS loaded"
    except ImportError:
        what = "kernel unknown (install threadpoolctl to see it)"
    return f"BLAS: {what}" + (f" (forced by {', '.join(forced)})" if forced else " (native)")
