"""Array backend selection: the only module that imports CuPy.

Every op is written against ``xp = get_array_module(x)`` so one code body serves NumPy (CPU) and
CuPy (NVIDIA GPU). Importing this module never touches CUDA: CuPy is imported lazily, and a machine
without a GPU never needs CuPy installed.

Contract:
- ``gpu_available()`` -> bool: True iff CuPy imports and reports at least one device. Any exception
  (no CuPy, no driver, ``cudaErrorInsufficientDriver``) means False.
- ``use_gpu(device_id)`` selects the CuPy device and makes ``default_xp()`` return ``cupy``; raises
  ``BackendError`` (a one-line user-facing message) when no usable GPU exists.
- ``use_cpu()`` makes ``default_xp()`` return ``numpy`` (the default).
- ``get_array_module(*arrays)`` returns ``cupy`` if any argument is a CuPy array, else ``numpy``.
- ``to_host(a)`` returns a NumPy array (no copy for NumPy input).
- ``asarray(a, xp=None)`` moves ``a`` to the active (or given) backend.
- ``device_description(device_id=None)`` -> one line naming the active device (GPU name, memory,
  CuPy and CUDA versions; or the CPU model, core count and NumPy version) for reports and
  profiles. It never raises: what cannot be read is left out.
"""
from __future__ import annotations

import numpy as np

from .errors import PoseidonError


class BackendError(PoseidonError):
    """A user-facing problem selecting the compute device (e.g. ``--gpu`` without a GPU)."""


_cupy = None          # the cupy module once imported successfully
_cupy_checked = False
_xp = np              # the active array module
_device_id = None


def _import_cupy():
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy  # noqa: PLC0415  (the one place CuPy is imported)
            _cupy = cupy
        except Exception:  # ImportError, or a broken CUDA install raising at import
            _cupy = None
    return _cupy


def gpu_available() -> bool:
    """True iff CuPy is importable and at least one CUDA device answers."""
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cudaErrorInsufficientDriver and friends subclass RuntimeError
        return False


def gpu_count() -> int:
    cp = _import_cupy()
    if cp is None:
        return 0
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def use_gpu(device_id: int = 0):
    """Make CuPy on ``device_id`` the active backend; return the cupy module."""
    global _xp, _device_id
    n = gpu_count()
    if n == 0:
        raise BackendError(
            "no usable NVIDIA GPU: CuPy is not installed or no CUDA device answers "
            "(install the [gpu] extra on a CUDA machine, or run with --cpu)")
    if not 0 <= device_id < n:
        raise BackendError(f"GPU {device_id} does not exist: this machine has {n} GPU(s), ids 0..{n - 1}")
    cp = _import_cupy()
    cp.cuda.Device(device_id).use()
    _xp = cp
    _device_id = device_id
    return cp


def use_cpu():
    """Make NumPy the active backend; return the numpy module."""
    global _xp, _device_id
    _xp = np
    _device_id = None
    return np


def default_xp():
    """The active array module (numpy unless ``use_gpu`` was called)."""
    return _xp


def device_id():
    """The active CUDA device id, or None on the CPU."""
    return _device_id


def _notice_cupy(arrays):
    """Import CuPy when one of ``arrays`` has a type from the cupy package (the caller made CuPy
    arrays itself, so CuPy is importable); NumPy-only runs never touch it."""
    if _cupy is None and not _cupy_checked and any(
            type(a).__module__.partition(".")[0] == "cupy" for a in arrays):
        _import_cupy()


def is_cupy_array(a) -> bool:
    _notice_cupy((a,))
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def get_array_module(*arrays):
    """``cupy`` if any argument is a CuPy array, else ``numpy`` (see ``_notice_cupy``)."""
    _notice_cupy(arrays)
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def to_host(a) -> np.ndarray:
    """A NumPy view/copy of ``a`` (a CuPy array is copied to the host)."""
    if is_cupy_array(a):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def asarray(a, xp=None, dtype=None):
    """``a`` on backend ``xp`` (default: the active one)."""
    xp = xp or _xp
    if xp is np:
        return np.asarray(to_host(a), dtype=dtype)
    return xp.asarray(a, dtype=dtype)


def synchronize():
    """Wait for queued GPU work (no-op on the CPU); used by timers."""
    if _xp is not np and _cupy is not None:
        _cupy.cuda.Device().synchronize()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # noqa: PLC0415
    return platform.processor() or platform.machine() or "unknown CPU"


def _cuda_version(code):
    """CUDA's integer version (major*1000 + minor*10) as 'major.minor'."""
    return f"{code // 1000}.{(code % 1000) // 10}"


def device_description(device_id=None) -> str:
    """One line describing the active device, or GPU ``device_id`` when given."""
    import os  # noqa: PLC0415
    gpu = device_id if device_id is not None else (_device_id if _xp is not np else None)
    if gpu is None:
        return (f"CPU: {_cpu_model()}, {os.cpu_count() or 1} cores visible "
                f"(NumPy {np.__version__})")
    cp = _import_cupy()
    if cp is None:
        return f"GPU {gpu}: CuPy unavailable"
    parts = []
    try:
        props = cp.cuda.runtime.getDeviceProperties(int(gpu))
        name = props.get("name", b"")
        name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        parts.append(name.strip() or "unnamed CUDA device")
        if props.get("totalGlobalMem"):
            parts.append(f"{props['totalGlobalMem'] / 2 ** 30:.0f} GiB")
        if "major" in props:
            parts.append(f"compute capability {props['major']}.{props.get('minor', 0)}")
    except Exception:  # noqa: BLE001 - a description must not fail the report it belongs to
        parts.append("CUDA device (properties unreadable)")
    versions = [f"CuPy {getattr(cp, '__version__', '?')}"]
    for label, fn in (("CUDA runtime", "runtimeGetVersion"), ("driver", "driverGetVersion")):
        try:
            versions.append(f"{label} {_cuda_version(int(getattr(cp.cuda.runtime, fn)()))}")
        except Exception:  # noqa: BLE001
            pass
    return f"GPU {gpu}: {', '.join(parts)} ({', '.join(versions)})"
