"""Per-layer timing profiles: the JSON that ``poseidon time --json PATH`` writes.

A profile records where one forward+backward pass of a net spends its time on one device, so that
work needing layer costs without the hardware (the emulated cluster, capacity estimates) can read
them back. The file is a JSON object::

    {"format": "poseidon-profile", "version": 1,
     "net": "AlexNet", "model": "train_val.prototxt", "phase": "TRAIN",
     "batch": 128, "iterations": 20, "device": "GPU 0: NVIDIA ... (CuPy ..., CUDA runtime ...)",
     "layers": [{"name": "conv1", "type": "Convolution", "forward_ms": 1.2,
                 "backward_ms": 2.5, "param_count": 34944}, ...],
     "forward_ms": ..., "backward_ms": ..., "total_ms": ...}

``layers`` is in the net's execution order (forward order; backward runs it in reverse).
``forward_ms``/``backward_ms`` at the top are the measured whole-pass averages (they include the
gaps between layers, so they are at least the sum over layers). ``param_count`` is the number of
learnable elements a layer owns (what a parameter server would move for it).

Contract:
- ``write_profile(path, profile)`` validates then writes (parent folders are created); returns
  the path.
- ``read_profile(path) -> Profile`` raises ``ConfigError`` naming the file and the field for
  anything malformed (not JSON, wrong format/version, missing or negative numbers).
- ``net_profile(net, forward_ms, backward_ms, ...) -> Profile`` builds one from a built ``Net`` and
  per-layer averages (``timing.time_layers``'s output).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

from .errors import ConfigError

FORMAT = "poseidon-profile"
VERSION = 1


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float
    backward_ms: float
    param_count: int = 0


@dataclass
class Profile:
    net: str
    batch: int
    device: str
    layers: list = field(default_factory=list)   # LayerTime, forward order
    forward_ms: float = None    # None: the sum over layers (filled in by to_json)
    backward_ms: float = None
    total_ms: float = None      # None: forward_ms + backward_ms
    phase: str = "TRAIN"
    iterations: int = 0
    model: str = ""

    def layer(self, name) -> LayerTime:
        for lt in self.layers:
            if lt.name == name:
                return lt
        raise KeyError(name)

    def to_json(self) -> dict:
        d = asdict(self)
        if d["forward_ms"] is None:
            d["forward_ms"] = sum(lt.forward_ms for lt in self.layers)
        if d["backward_ms"] is None:
            d["backward_ms"] = sum(lt.backward_ms for lt in self.layers)
        if d["total_ms"] is None:
            d["total_ms"] = d["forward_ms"] + d["backward_ms"]
        return {"format": FORMAT, "version": VERSION, **d}


def _number(where, key, value, integer=False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)) \
            or value < 0:
        kind = "a non-negative integer" if integer else "a non-negative finite number"
        raise ConfigError(f"{where}: field '{key}' must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _text(where, key, value):
    if not isinstance(value, str) or (key in ("net", "device") and not value):
        raise ConfigError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def from_json(obj, where="profile") -> Profile:
    """Validate a parsed profile object; ``where`` names its source in errors."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: a profile is a JSON object, got {type(obj).__name__}")
    if obj.get("format") != FORMAT:
        raise ConfigError(f"{where}: field 'format' must be '{FORMAT}', got {obj.get('format')!r} "
                          f"(write profiles with `poseidon time --json PATH`)")
    if obj.get("version") != VERSION:
        raise ConfigError(f"{where}: profile version {obj.get('version')!r} is not supported "
                          f"(this poseidon reads version {VERSION})")
    for key in ("net", "device", "batch", "layers"):
        if key not in obj:
            raise ConfigError(f"{where}: missing field '{key}'")
    layers = obj["layers"]
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where}: field 'layers' must be a non-empty list")
    out = []
    seen = set()
    for i, lt in enumerate(layers):
        w = f"{where}: layers[{i}]"
        if not isinstance(lt, dict):
            raise ConfigError(f"{w} must be an object")
        for key in ("name", "type", "forward_ms", "backward_ms"):
            if key not in lt:
                raise ConfigError(f"{w}: missing field '{key}'")
        name = _text(w, "name", lt["name"])
        if name in seen:
            raise ConfigError(f"{w}: layer name '{name}' appears twice")
        seen.add(name)
        out.append(LayerTime(name, _text(w, "type", lt["type"]),
                             _number(w, "forward_ms", lt["forward_ms"]),
                             _number(w, "backward_ms", lt["backward_ms"]),
                             _number(w, "param_count", lt.get("param_count", 0), integer=True)))
    batch = _number(where, "batch", obj["batch"], integer=True)
    if batch < 1:
        raise ConfigError(f"{where}: field 'batch' must be at least 1, got {batch}")
    fwd_sum = sum(lt.forward_ms for lt in out)
    bwd_sum = sum(lt.backward_ms for lt in out)
    fwd = _number(where, "forward_ms", obj.get("forward_ms", fwd_sum))
    bwd = _number(where, "backward_ms", obj.get("backward_ms", bwd_sum))
    return Profile(
        net=_text(where, "net", obj["net"]), batch=batch,
        device=_text(where, "device", obj["device"]), layers=out,
        forward_ms=fwd, backward_ms=bwd,
        total_ms=_number(where, "total_ms", obj.get("total_ms", fwd + bwd)),
        phase=_text(where, "phase", obj.get("phase", "TRAIN")),
        iterations=_number(where, "iterations", obj.get("iterations", 0), integer=True),
        model=_text(where, "model", obj.get("model", "")))


def write_profile(path, profile: Profile):
    """Write ``profile`` (validated the way ``read_profile`` will read it) as JSON to ``path``."""
    obj = profile.to_json()
    from_json(obj, where=os.fspath(path))
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)   # a reader never sees half a profile
    return path


def load_json(path):
    """The JSON object of profile file ``path``; ``ConfigError`` for a missing file or bad JSON."""
    where = os.fspath(path)
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such profile (write one with "
                          f"`poseidon time --model NET --json {where}`)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: line {exc.lineno}: not JSON ({exc.msg})") from None


def read_profile(path) -> Profile:
    """The profile stored at ``path``; ``ConfigError`` names the file and field when malformed."""
    return from_json(load_json(path), os.fspath(path))


def net_profile(net, forward_ms, backward_ms, *, device, forward_total_ms=None,
                backward_total_ms=None, total_ms=None, phase="TRAIN", iterations=0,
                model="") -> Profile:
    """A ``Profile`` of built ``Net`` ``net`` from per-layer averages (one entry per layer)."""
    if len(forward_ms) != len(net.layers) or len(backward_ms) != len(net.layers):
        raise ValueError("one forward and one backward time per layer")
    layers = []
    for layer, name, f, b in zip(net.layers, net.layer_names, forward_ms, backward_ms):
        count = sum(int(blob.count) for blob in getattr(layer, "blobs", []))
        layers.append(LayerTime(name, layer.type or layer.param.type, float(f), float(b), count))
    batch = 1
    for blobs in net.top_vecs:
        if blobs and blobs[0].shape:
            batch = int(blobs[0].shape[0])
            break
    fwd = float(sum(forward_ms) if forward_total_ms is None else forward_total_ms)
    bwd = float(sum(backward_ms) if backward_total_ms is None else backward_total_ms)
    return Profile(net=net.name or "net", batch=max(batch, 1), device=device, layers=layers,
                   forward_ms=fwd, backward_ms=bwd,
                   total_ms=float(fwd + bwd if total_ms is None else total_ms),
                   phase=str(phase).upper(), iterations=int(iterations), model=os.fspath(model))
