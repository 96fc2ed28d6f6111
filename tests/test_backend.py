"""backend: GPU detection that never fails a CPU-only machine, one-line errors when a GPU is
demanded, and array-module dispatch (with a stand-in ``cupy`` module: no GPU is needed)."""
import sys
import types

import numpy as np
import pytest

from poseidon_cli import backend
from poseidon_cli.ops import conv as cv


@pytest.fixture
def fresh_backend(monkeypatch):
    """Backend state as in a new process (nothing imported yet, CPU active)."""
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", False)
    monkeypatch.setattr(backend, "_xp", np)
    monkeypatch.setattr(backend, "_device_id", None)
    return backend


def fake_cupy(device_count):
    """A module named ``cupy`` with an ndarray type from a ``cupy.*`` module, ``asnumpy`` and a
    CUDA runtime reporting ``device_count`` devices (an exception instance is raised instead)."""
    mod = types.ModuleType("cupy")

    class ndarray:   # noqa: N801 - the name CuPy uses
        def __init__(self, values):
            self.values = np.asarray(values)
    ndarray.__module__ = "cupy._core.core"
    mod.ndarray = ndarray
    mod.asnumpy = lambda a: a.values.copy()

    def count():
        if isinstance(device_count, BaseException):
            raise device_count
        return device_count
    mod.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count))
    return mod


def test_numpy_arrays_never_import_cupy(fresh_backend):
    assert backend.get_array_module(np.zeros(2), 3.0) is np
    assert backend.is_cupy_array(np.zeros(2)) is False
    assert backend._cupy_checked is False   # no import attempted for NumPy input


def test_no_driver_means_no_gpu_and_a_one_line_error(fresh_backend, monkeypatch):
    # what CuPy does on a machine without a driver: getDeviceCount raises a RuntimeError subclass
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(RuntimeError("cudaErrorInsufficientDriver")))
    assert backend.gpu_available() is False
    assert backend.gpu_count() == 0
    with pytest.raises(backend.BackendError) as e:
        backend.use_gpu(0)
    assert "no usable NVIDIA GPU" in str(e.value) and "--cpu" in str(e.value)
    assert "\n" not in str(e.value)
    assert backend.default_xp() is np


def test_missing_cupy_means_no_gpu(fresh_backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # import cupy -> ImportError
    assert backend.gpu_available() is False


def test_device_id_out_of_range_names_the_devices(fresh_backend, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(2))
    with pytest.raises(backend.BackendError, match=r"GPU 5 does not exist: this machine has 2"):
        backend.use_gpu(5)


def test_cupy_arrays_are_recognised_before_any_gpu_call(fresh_backend, monkeypatch):
    """A library user who builds CuPy arrays and calls an op directly, without gpu_available()
    first, must get the cupy module back (not NumPy on a device array)."""
    cp = fake_cupy(1)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    a = cp.ndarray([1.0, 2.0])
    assert backend.get_array_module(np.zeros(1), a) is cp
    assert backend.is_cupy_array(a)
    host = backend.to_host(a)
    assert isinstance(host, np.ndarray) and host.tolist() == [1.0, 2.0]


def test_gpu_convolution_chunks_are_capped():
    """On an accelerator a column chunk holds the whole batch unless that exceeds the cap."""
    g = cv._Geom((128, 3, 227, 227), (96, 3, 11, 11), 4, 0, 1, 1)   # AlexNet conv1 at batch 128
    not_numpy = object()
    assert cv._chunk(not_numpy, g, 4) == 128                        # 0.56 GB: one chunk
    big = cv._Geom((64, 64, 224, 224), (64, 64, 3, 3), 1, 1, 1, 1)  # VGG-16 conv1_2 at batch 64
    per_image = 224 * 224 * 64 * 9 * 4
    n = cv._chunk(not_numpy, big, 4)
    assert n == cv._GPU_CHUNK_BYTES // per_image and 1 <= n < 64
    assert cv._chunk(np, g, 4) < 128                                # the CPU cuts much finer


def test_device_description_names_the_gpu_and_versions(fresh_backend, monkeypatch):
    cp = fake_cupy(2)
    cp.__version__ = "14.2.0"
    props = {1: {"name": b"NVIDIA H200", "totalGlobalMem": 141 * 2 ** 30, "major": 9, "minor": 0}}
    cp.cuda.runtime.getDeviceProperties = lambda i: props[i]
    cp.cuda.runtime.runtimeGetVersion = lambda: 13000
    cp.cuda.runtime.driverGetVersion = lambda: 13010
    cp.cuda.Device = lambda i: types.SimpleNamespace(use=lambda: None)
    monkeypatch.setitem(sys.modules, "cupy", cp)
    backend.use_gpu(1)
    text = backend.device_description()
    assert text == ("GPU 1: NVIDIA H200, 141 GiB, compute capability 9.0 "
                    "(CuPy 14.2.0, CUDA runtime 13.0, driver 13.1)")


def test_device_description_survives_unreadable_properties(fresh_backend, monkeypatch):
    cp = fake_cupy(1)

    def broken(i):
        raise RuntimeError("cudaErrorInsufficientDriver")
    cp.cuda.runtime.getDeviceProperties = broken
    monkeypatch.setitem(sys.modules, "cupy", cp)
    text = backend.device_description(0)
    assert text.startswith("GPU 0: CUDA device (properties unreadable)") and "\n" not in text


def test_device_description_on_the_cpu(fresh_backend):
    import os
    text = backend.device_description()
    assert text.startswith("CPU: ") and f"{os.cpu_count()} cores" in text
    assert f"NumPy {np.__version__}" in text
    assert backend._cupy_checked is False   # describing the CPU never imports CuPy
