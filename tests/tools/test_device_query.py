"""device-query: what it prints for the devices backend reports, and one line when there are none.
The device side is a stand-in object with CuPy's runtime API (this suite runs without a GPU)."""
import types

from click.testing import CliRunner

from poseidon_cli import backend
from poseidon_cli.cli import main
from poseidon_cli.tools import device_query


def fake_cupy(devices):
    current = {"id": 0}

    class Device:
        def __init__(self, i):
            self.i = i

        def use(self):
            current["id"] = self.i

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: len(devices),
        getDeviceProperties=lambda i: devices[i],
        memGetInfo=lambda: (devices[current["id"]]["free"],
                            devices[current["id"]]["totalGlobalMem"]))
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime, Device=Device))


H200 = {"name": b"NVIDIA H200", "major": 9, "minor": 0, "totalGlobalMem": 150_000_000_000,
        "free": 149_000_000_000, "multiProcessorCount": 132, "clockRate": 1_980_000}
SMALL = {"name": b"Tiny", "major": 7, "minor": 5, "totalGlobalMem": 4_000_000_000,
         "free": 1_000_000_000, "multiProcessorCount": 40, "clockRate": 1_590_000}


def test_lists_every_device_and_restores_the_cpu(monkeypatch):
    cp = fake_cupy([H200, SMALL])
    monkeypatch.setattr(backend, "_cupy", cp)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    backend.use_cpu()
    infos = device_query.query()
    assert [(d["id"], d["name"], d["compute_capability"], d["free_memory"]) for d in infos] == [
        (0, "NVIDIA H200", "9.0", 149_000_000_000), (1, "Tiny", "7.5", 1_000_000_000)]
    assert backend.default_xp() is __import__("numpy")  # the caller's CPU backend is back
    text = device_query.describe(infos)
    assert "Device id:                     1" in text
    assert "Number of multiprocessors:     132" in text
    r = CliRunner().invoke(main, ["device-query", "--gpu", "1"])
    assert r.exit_code == 0 and "Tiny" in r.output and "H200" not in r.output
    r = CliRunner().invoke(main, ["device-query", "--gpu", "5"])
    assert r.exit_code == 2 and "ids 0..1" in r.output


def test_no_gpu_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_cupy_checked", True)
    r = CliRunner().invoke(main, ["device-query"])
    assert r.exit_code == 1
    assert r.output.count("\n") == 1 and r.output.startswith("poseidon: error: no GPU")
