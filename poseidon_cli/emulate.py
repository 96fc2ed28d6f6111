"""Compute stand-in: a net whose layers take the time a GPU profile says, with the real shapes.

``poseidon train ... --emulate-compute PROFILE.json [--dilation D] [--jitter SIGMA]`` trains a net
whose every layer's forward and backward *sleeps* for the profile's time instead of computing.
Everything that is not layer compute stays real: the parameter blobs (their shapes, fillers and
bytes), the solver step, the parameter server, sufficient-factor broadcasting (an InnerProduct
layer's top diff and bottom data have their real K x M and K x N shapes), the hooks of wait-free
backprop and the links. So an emulated cluster carries exactly the bytes of the real net, in the
same order and at the moments that device's compute would allow.

**Profile** (JSON; ``poseidon time --json`` writes one, see ``profile.py``; the shipped
profiles under bench/profiles carry the same fields)::

    {"net": "AlexNet", "device": "K20 (derived)", "batch": 256,
     "layers": [{"name": "conv1", "type": "Convolution", "forward_ms": 30.1, "backward_ms": 31.0},
                ...],
     "source": "how the numbers were obtained"}

``batch`` must equal the TRAIN net's batch (the first axis of its first input or data top); a TEST
net of another batch gets its times in proportion to its batch. Layers of the
net absent from the profile (e.g. inserted Split layers) take no time; a profile layer absent from
the net is an error (a profile of another net). Extra keys are kept and ignored.

**Time dilation** ``D`` (default 1): every layer takes ``D`` times its profile time. Slowing compute
by D and capping links at rate/D keeps a cluster's ratio of communication to compute while this
machine's CPUs move D times fewer bytes per second; speedups and ratios are unchanged, absolute
times are D times the real device's. Report D with every number.

**Jitter** ``SIGMA`` (default 0): each iteration of each worker is slowed by a factor drawn from a
lognormal of mean 1 (``exp(N(-SIGMA²/2, SIGMA))``), seeded by ``seed`` and the worker's rank, so
runs repeat and stragglers differ between workers.

**Values.** Nothing is computed: activations, diffs and gradients keep whatever the blobs hold
(zeros after allocation, so untouched pages cost no memory), the loss is 0. The stand-in is for
timing and traffic, never for accuracy.

**Where it hooks in.** The Solver builds its nets through :func:`make_net`, which is ``Net(...)``
unless :func:`configure` was called (the CLI does, from the train options). Data and ImageData
layers become Input layers of their batch's shape (no database is read). ``apply(net, emulation)``
turns any built Net into a stand-in (tests and benches use it directly).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError

# A sleep can wake up late (timer slack; on a busy machine, waiting for a CPU or for the GIL held
# by communication threads). A GPU would have kept computing, so the lateness is taken off the
# next sleeps, up to this much; time spent outside the sleeps (hooks, waits) is never taken off.
MAX_CARRY_S = 1.0


@dataclass
class Profile:
    """Per-layer forward/backward milliseconds of one net at one batch on one device."""
    net: str
    device: str
    batch: int
    forward_ms: dict            # layer name -> ms
    backward_ms: dict           # layer name -> ms
    order: list                 # layer names in the profile's order
    extra: dict = field(default_factory=dict)
    path: str = ""

    @property
    def forward_total_ms(self) -> float:
        return float(sum(self.forward_ms.values()))

    @property
    def backward_total_ms(self) -> float:
        return float(sum(self.backward_ms.values()))

    @property
    def iteration_ms(self) -> float:
        return self.forward_total_ms + self.backward_total_ms

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update({"net": self.net, "device": self.device, "batch": self.batch,
                  "layers": [{"name": n, "forward_ms": self.forward_ms[n],
                              "backward_ms": self.backward_ms[n],
                              **({"type": self.extra.get("_types", {}).get(n)}
                                 if self.extra.get("_types", {}).get(n) else {})}
                             for n in self.order]})
        d.pop("_types", None)
        return d


def parse_profile(doc: dict, where: str = "profile") -> Profile:
    """A Profile from its JSON object; ConfigError naming ``where`` and the field when malformed."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a JSON object with 'batch' and 'layers'")
    try:
        batch = int(doc["batch"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: field 'batch' is missing or not an integer",
                          "give the batch the layer times were measured at") from None
    if batch < 1:
        raise ConfigError(f"{where}: field 'batch' is {batch}; give a positive batch")
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{where}: field 'layers' must be a non-empty list of "
                          f"{{name, forward_ms, backward_ms}}")
    fwd, bwd, order, types = {}, {}, [], {}
    for i, row in enumerate(layers):
        if not isinstance(row, dict) or "name" not in row:
            raise ConfigError(f"{where}: layers[{i}] has no 'name'")
        name = str(row["name"])
        if name in fwd:
            raise ConfigError(f"{where}: layers[{i}]: layer '{name}' appears twice")
        vals = []
        for key in ("forward_ms", "backward_ms"):
            try:
                v = float(row.get(key, 0.0))
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: layers[{i}] ('{name}'): '{key}' is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"{where}: layers[{i}] ('{name}'): '{key}' is {v}; give a "
                                  f"non-negative number of milliseconds")
            vals.append(v)
        fwd[name], bwd[name] = vals
        order.append(name)
        if row.get("type"):
            types[name] = str(row["type"])
    extra = {k: v for k, v in doc.items() if k not in ("net", "device", "batch", "layers")}
    extra["_types"] = types
    return Profile(str(doc.get("net", "")), str(doc.get("device", "")), batch, fwd, bwd, order,
                   extra)


def load_profile(path) -> Profile:
    """Read a profile JSON file (see the module docstring)."""
    from .profile import load_json
    path = os.fspath(path)
    prof = parse_profile(load_json(path), where=path)
    prof.path = path
    return prof


def net_batch(net) -> int:
    """The batch of a net: the first axis of its first input blob, else of its first layer's top."""
    for name in net.inputs:
        shape = net.blobs[name].shape
        if shape:
            return int(shape[0])
    for tops in net.top_vecs:
        if tops and tops[0].shape:
            return int(tops[0].shape[0])
    return 1


# ------------------------------------------------------------------------------------------ pacing
@dataclass
class Emulation:
    """What ``--emulate-compute``, ``--dilation`` and ``--jitter`` ask for."""
    profile: Profile
    dilation: float = 1.0
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if not (self.dilation > 0 and math.isfinite(self.dilation)):
            raise ConfigError(f"--dilation {self.dilation}: give a positive factor")
        if not (self.jitter >= 0 and math.isfinite(self.jitter)):
            raise ConfigError(f"--jitter {self.jitter}: give a non-negative lognormal sigma")


class Pacer:
    """Spends emulated compute time for one net replica: ``spend(ms)`` sleeps ``ms · dilation ·
    factor`` where ``factor`` is this iteration's jitter draw (``new_iteration``). Lateness of a
    sleep (up to MAX_CARRY_S) is taken off the next ones, so the sum over many layers holds."""

    def __init__(self, dilation=1.0, jitter=0.0, seed=0, rank=0, sleep=None, clock=None):
        self.dilation = float(dilation)
        self.jitter = float(jitter)
        self.rng = np.random.default_rng([int(seed), int(rank)])
        self.factor = 1.0
        self.factors = []        # one per iteration, for reports and tests
        self.spent_s = 0.0       # intended seconds so far
        self._carry = 0.0
        self._sleep = sleep or (lambda s: time.sleep(s))
        self._clock = clock or (lambda: time.perf_counter())

    def new_iteration(self):
        if self.jitter > 0:
            s = self.jitter
            self.factor = float(np.exp(self.rng.normal(-s * s / 2.0, s)))
        self.factors.append(self.factor)

    def spend(self, ms: float):
        target = ms * 1e-3 * self.dilation * self.factor
        if target <= 0:
            return
        self.spent_s += target
        want = target - self._carry
        if want <= 0:
            self._carry = -want
            return
        t0 = self._clock()
        self._sleep(want)
        late = (self._clock() - t0) - want
        self._carry = min(max(late, 0.0), MAX_CARRY_S)


def apply(net, emulation: Emulation):
    """Turn built Net ``net`` into a stand-in (in place; returns it). Each layer's ``forward``,
    ``forward_loss`` and ``backward`` are replaced on the instance by sleeps of the profile's
    times; setup, shapes and parameter blobs stay the real layer's. Raises ConfigError when the
    profile's batch or layer names do not fit the net."""
    prof = emulation.profile
    where = prof.path or "profile"
    batch = net_batch(net)
    scale = 1.0
    if batch != prof.batch and getattr(net, "phase", 0) != 0:
        scale = batch / prof.batch   # a TEST net: forward times in proportion to its batch
    elif batch != prof.batch:
        raise ConfigError(f"{where}: profile batch {prof.batch} but the net's batch is {batch}",
                          f"use a profile measured at batch {batch}, or set the net's batch_size "
                          f"to {prof.batch}")
    names = set(net.layer_names)
    unknown = [n for n in prof.order if n not in names]
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        raise ConfigError(f"{where}: layer(s) {shown} are not in net '{net.name}'",
                          "use the profile of this net")
    rank = getattr(getattr(net, "context", None), "rank", 0)
    pacer = Pacer(emulation.dilation, emulation.jitter, emulation.seed, rank)
    net.emulation = emulation
    net.pacer = pacer
    for li, (name, layer) in enumerate(zip(net.layer_names, net.layers)):
        _patch(layer, li, scale * prof.forward_ms.get(name, 0.0),
               scale * prof.backward_ms.get(name, 0.0), pacer)
    return net


def _patch(layer, li, fwd_ms, bwd_ms, pacer):
    def forward(bottom, top):
        if li == 0:
            pacer.new_iteration()
        pacer.spend(fwd_ms)

    def forward_loss(bottom, top):
        forward(bottom, top)
        return 0.0

    def backward(top, propagate_down, bottom):
        pacer.spend(bwd_ms)

    layer.forward = forward
    layer.forward_loss = forward_loss
    layer.backward = backward
    layer.emulated = True


# ------------------------------------------------------------------------------ process-wide switch
_active: Emulation | None = None


def configure(profile_path=None, dilation=1.0, jitter=0.0, seed=0):
    """Make :func:`make_net` build stand-ins from now on in this process (``profile_path`` None:
    switch off). Returns the Emulation (or None)."""
    global _active
    if profile_path is None:
        _active = None
        return None
    _active = Emulation(load_profile(profile_path), float(dilation), float(jitter), int(seed))
    return _active


def active() -> Emulation | None:
    return _active


def make_net(net_cls, source, phase, **kwargs):
    """``net_cls(source, phase, **kwargs)``; a stand-in (Data layers as Input layers of the
    profile's batch, layers paced by the profile) when :func:`configure` is active."""
    emu = _active
    if emu is None:
        return net_cls(source, phase, **kwargs)
    return apply(net_cls(stand_in_param(source), phase, **kwargs), emu)


def stand_in_param(source, batch=None):
    """NetParameter of ``source`` (path or NetParameter) with its Data/ImageData layers turned
    into Input layers of the same shape (``batch``: of that batch instead); no database is opened;
    include/exclude rules are kept."""
    from . import config
    from ._proto import caffe_pb2
    from .timing import substitute_data_layers

    if isinstance(source, (str, os.PathLike)):
        param = config.load_net_param(source)
    else:
        param = caffe_pb2.NetParameter()
        param.CopyFrom(source)
        config.upgrade_net(param)
    return substitute_data_layers(param, batch=batch)
