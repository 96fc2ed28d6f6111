"""``poseidon device-query`` (Caffe's ``caffe device_query``): the GPUs CuPy sees.

``query(device_id=None) -> list[dict]``: one dict per device (all, or the one asked for) with
``id``, ``name``, ``compute_capability`` ("9.0"), ``total_memory`` and ``free_memory`` (bytes),
``multiprocessors``, ``clock_rate_khz`` (0 where the runtime does not report it).
``describe(infos)`` formats them as Caffe's ``Device id: ...`` lines.
``why_none()`` is the one line saying why no GPU is usable.

CuPy is imported by ``backend`` only: this module gets the module object from
``backend.use_gpu`` and restores the caller's active device afterwards.
"""
from __future__ import annotations

import importlib.util

from .. import backend
from ..errors import PoseidonError


class NoDevice(PoseidonError):
    """No usable GPU (exit code 1: a fact about the machine, not a usage mistake)."""

    exit_code = 1


def why_none() -> str:
    if importlib.util.find_spec("cupy") is None:  # looks for the package without importing it
        return "no GPU: CuPy is not installed (pip install 'poseidon-cli[gpu]' on a CUDA machine)"
    return "no GPU: CuPy is installed but no CUDA device answers (check the driver with nvidia-smi)"


def _one(cp, i):
    props = cp.cuda.runtime.getDeviceProperties(i)
    name = props.get("name", b"?")
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    free, total = cp.cuda.runtime.memGetInfo()  # of the current device, i
    return {
        "id": i, "name": name,
        "compute_capability": f"{props.get('major', 0)}.{props.get('minor', 0)}",
        "total_memory": int(props.get("totalGlobalMem", total)), "free_memory": int(free),
        "multiprocessors": int(props.get("multiProcessorCount", 0)),
        "clock_rate_khz": int(props.get("clockRate", 0)),
    }


def query(device_id=None):
    """Properties of every visible GPU (or of ``device_id``); raises NoDevice when none."""
    n = backend.gpu_count()
    if n == 0:
        raise NoDevice(why_none())
    ids = range(n) if device_id is None else [device_id]
    if device_id is not None and not 0 <= device_id < n:
        raise PoseidonError(f"--gpu {device_id}: this machine has {n} GPU(s), ids 0..{n - 1}")
    previous = backend.device_id()
    try:
        out = []
        for i in ids:
            cp = backend.use_gpu(i)
            out.append(_one(cp, i))
        return out
    finally:
        if previous is None:
            backend.use_cpu()
        else:
            backend.use_gpu(previous)


def describe(infos) -> str:
    lines = []
    for d in infos:
        lines += [f"Device id:                     {d['id']}",
                  f"Name:                          {d['name']}",
                  f"Compute capability:            {d['compute_capability']}",
                  f"Total global memory:           {d['total_memory']}",
                  f"Free memory:                   {d['free_memory']}",
                  f"Number of multiprocessors:     {d['multiprocessors']}",
                  f"Clock rate:                    {d['clock_rate_khz']}"]
    return "\n".join(lines)
