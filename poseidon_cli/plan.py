"""``poseidon plan``: predict a net's iteration time and speedup on N nodes before renting them.

Inputs: a per-layer profile (see ``emulate.py``; what one GPU takes per layer), the net (for its
parameter shapes), the link rate of every node (full duplex), the staleness, ``--svb`` and the
jitter of the workers' compute. Output per configuration: iteration seconds, images/s, speedup over
one node running alone (no parameter server: the profile's sum), and the bytes one node sends +
receives per iteration under the SFB cost model (``poseidon_cli.distributed.sfb``).

**Model** (a discrete-event simulation of wait-free backprop over a sharded PS, one shard per node):

* Each worker runs the profile's layers: forward in net order, backward in reverse; every time of
  iteration ``i`` of worker ``p`` is scaled by a jitter factor ``exp(N(-σ²/2, σ))`` (σ = 0: none).
* A layer's parameters are ready when its backward ends (with ``overlap=False``: when the whole
  backward ends). Its traffic then joins the node's link queue (FIFO): it occupies the link for
  ``bytes/2 / rate`` (``bytes`` counts both directions, which carry equal halves: pushes of its own
  gradients plus its shard's replies go out, the rest comes in).
* Update ``(layer, i)`` exists for everyone when the last node's queue has carried it. The forward of
  that layer in iteration ``j`` waits for update ``j - 1 - s`` (SSP: staleness ``s``).
* A layer synchronised by SFB instead sends ``K·(M+N)`` values to each peer (``sfb_bytes``) and,
  before its next forward, rebuilds the averaged gradient from all ``P`` workers' factors on its own
  device: modelled as ``P`` times the weight-gradient half of its backward time.
* Not modelled: per-message latency (``latency_s`` adds a fixed time per layer message), the PS
  shards' CPU update time, the 1-node solver step, switch contention beyond the nodes' own links.

The steady-state iteration time is the mean over workers of the time per iteration after
``warmup`` iterations.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ConfigError
from .distributed.sfb import choose, ps_bytes, sfb_bytes


@dataclass
class ParamSpec:
    """One learnable parameter: its shape; ``ip`` (M, N, K) when it is an InnerProduct weight that
    SFB may carry (M x N weight, K rows per iteration)."""
    shape: tuple
    ip: tuple | None = None

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class LayerSpec:
    """A layer as the model sees it: profile times (ms) and the parameters ready after its
    backward."""
    name: str
    forward_ms: float
    backward_ms: float
    params: list = field(default_factory=list)


@dataclass
class Prediction:
    nodes: int
    staleness: int
    svb: str
    overlap: bool
    link_bps: float
    jitter: float
    iteration_s: float
    single_s: float
    batch: int
    bytes_per_node: int
    sfb_layers: list

    @property
    def images_per_s(self) -> float:
        return self.nodes * self.batch / self.iteration_s

    @property
    def speedup(self) -> float:
        return self.nodes * self.single_s / self.iteration_s

    def row(self) -> dict:
        d = asdict(self)
        d.update(images_per_s=self.images_per_s, speedup=self.speedup)
        return d


def layer_bytes(layer: LayerSpec, nodes: int, svb: str = "auto"):
    """(bytes one node sends + receives per iteration for ``layer``, [schemes per param])."""
    total, schemes = 0, []
    for p in layer.params:
        if p.ip is not None:
            m, n, k = p.ip
            scheme = choose(m, n, k, nodes, nodes, svb)
        else:
            scheme = "ps"
        if nodes <= 1:
            b = 0
        elif scheme == "sfb":
            m, n, k = p.ip
            b = sfb_bytes(m, n, k, nodes)
        else:
            b = ps_bytes(p.count, 1, nodes, nodes)
        total += b
        schemes.append(scheme)
    return total, schemes


def simulate(layers, nodes: int, link_bps: float, staleness: int = 0, svb: str = "auto",
             overlap: bool = True, jitter: float = 0.0, iterations: int = 60, warmup: int = 10,
             seed: int = 0, latency_s: float = 0.0, batch: int = 1) -> Prediction:
    """Predict one configuration (see the module docstring); ``layers`` in net order."""
    if nodes < 1:
        raise ConfigError(f"nodes {nodes}: give at least 1")
    if staleness < 0:
        raise ConfigError(f"staleness {staleness}: give 0 or more")
    if link_bps <= 0:
        raise ConfigError(f"link rate {link_bps}: give a positive rate")
    iterations = max(iterations, warmup + 2)
    L = len(layers)
    fwd = np.array([l.forward_ms for l in layers]) * 1e-3
    bwd = np.array([l.backward_ms for l in layers]) * 1e-3
    single = float(fwd.sum() + bwd.sum())
    comm = np.zeros(L)
    rebuild = np.zeros(L)
    total_bytes, sfb_names = 0, []
    for j, layer in enumerate(layers):
        b, schemes = layer_bytes(layer, nodes, svb)
        total_bytes += b
        if nodes > 1 and layer.params:
            comm[j] = (b / 2.0) * 8.0 / link_bps + latency_s
        if "sfb" in schemes:
            sfb_names.append(layer.name)
            rebuild[j] = nodes * bwd[j] / 2.0
    has_comm = comm > 0
    if nodes == 1:
        return Prediction(1, staleness, svb, overlap, link_bps, jitter, single, single, batch,
                          0, [])
    rng = np.random.default_rng(seed)
    avail = np.full((L, iterations), np.inf)     # update (layer, i) exists for everyone
    t = np.zeros(nodes)
    link = np.zeros(nodes)
    ends = np.zeros((iterations, nodes))
    for i in range(iterations):
        f = (np.exp(rng.normal(-jitter * jitter / 2.0, jitter, nodes)) if jitter > 0
             else np.ones(nodes))
        need = i - 1 - staleness
        for j in range(L):
            if has_comm[j] and need >= 0:
                t = np.maximum(t, avail[j, need])
            if rebuild[j] and i > 0:
                t = t + rebuild[j] * f
            t = t + fwd[j] * f
        done = np.zeros((L, nodes))
        for j in range(L - 1, -1, -1):
            t = t + bwd[j] * f
            if has_comm[j] and overlap:
                link = np.maximum(link, t) + comm[j]
                done[j] = link
        if not overlap:
            for j in range(L - 1, -1, -1):
                if has_comm[j]:
                    link = np.maximum(link, t) + comm[j]
                    done[j] = link
        avail[has_comm, i] = done[has_comm].max(axis=1)
        ends[i] = t
    per_iter = float((ends[-1] - ends[warmup]).mean() / (iterations - 1 - warmup))
    return Prediction(nodes, staleness, svb, overlap, link_bps, jitter, per_iter, single, batch,
                      int(total_bytes), sfb_names)


# ------------------------------------------------------------------------------- from a real net
def layers_from_net(net, profile) -> list[LayerSpec]:
    """LayerSpecs of built Net ``net`` with ``profile``'s times; a parameter belongs to the layer
    after whose backward it is ready (``net.param_ready_after``)."""
    out = []
    for li, name in enumerate(net.layer_names):
        layer = net.layers[li]
        params = []
        for k in net.param_ready_after[li]:
            if net.params_lr[k] == 0:
                continue
            blob = net.learnable_params[k]
            ip = None
            owner = next((lj for lj, idx in enumerate(net.layer_learnable_params) if k in idx), li)
            ol = net.layers[owner]
            shared = sum(k in idx for idx in net.layer_learnable_params) > 1
            if (ol.param.type == "InnerProduct" and ol.blobs and blob.data is ol.blobs[0].data
                    and not ol.param.inner_product_param.transpose and not shared):
                m, n = (int(d) for d in blob.shape)
                kk = int(getattr(ol, "M", 0) or net.bottom_vecs[owner][0].shape[0])
                ip = (m, n, kk)
            params.append(ParamSpec(tuple(int(d) for d in blob.shape), ip))
        out.append(LayerSpec(name, profile.forward_ms.get(name, 0.0),
                             profile.backward_ms.get(name, 0.0), params))
    return out


def parse_rate(text) -> float:
    """'40gbit', '10GbE', '1g', '800mbit' or a number of bit/s -> bit/s."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(bit|b|bps|bit/s|gbe|be)?\s*", str(text).lower())
    if not m:
        raise ConfigError(f"--link {text!r}: give a rate such as 40gbit, 10gbit or 1000mbit")
    scale = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
    unit = m.group(3) or ""
    bits = float(m.group(1)) * scale
    if unit == "bps":
        bits *= 8.0
    return bits


def parse_list(text, what, cast=int):
    try:
        vals = [cast(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: give comma-separated numbers, e.g. 1,2,4,8") from None
    if not vals:
        raise ConfigError(f"--{what}: give at least one value")
    return vals


def resolve_model(profile, model):
    if model:
        if not os.path.isfile(model):
            raise ConfigError(f"--model {model}: no such file")
        return model
    rel = profile.extra.get("model")
    here = os.path.dirname(os.path.abspath(profile.path or "."))
    for base in (os.getcwd(), here, os.path.join(here, "..", "..", "..", "shared", "conformance")):
        if rel and os.path.isfile(os.path.join(base, rel)):
            return os.path.join(base, rel)
    raise ConfigError(f"{profile.path}: cannot find the net prototxt"
                      + (f" '{rel}'" if rel else ""), "pass --model train_val.prototxt")


def run_plan(profile=None, model=None, nodes="1,2,4,8", link="40gbit", staleness="0",
             svb="auto", jitter=0.0, no_overlap=False, iterations=60, seed=0, json_out=None,
             out=None) -> int:
    """The ``poseidon plan`` command: print a table (and write JSON); returns 0."""
    import sys

    from . import emulate
    from .net import Net

    out = out or sys.stdout
    prof = emulate.load_profile(profile)
    path = resolve_model(prof, model)
    net = Net(emulate.stand_in_param(path), "TRAIN")
    batch = emulate.net_batch(net)
    if batch != prof.batch:
        raise ConfigError(f"{profile}: profile batch {prof.batch} but {path} has batch {batch}")
    layers = layers_from_net(net, prof)
    rate = parse_rate(link)
    rows = []
    for s in parse_list(staleness, "staleness"):
        for n in parse_list(nodes, "nodes"):
            rows.append(simulate(layers, n, rate, s, svb, not no_overlap, float(jitter),
                                 iterations=iterations, seed=seed, batch=batch))
    print(f"poseidon plan: {prof.net} batch {batch} per node, profile {prof.device or profile}, "
          f"link {rate / 1e9:g} Gbit/s per node, --svb {svb}, jitter {jitter:g}, "
          f"overlap {'off' if no_overlap else 'on'} (predicted)", file=out)
    print(f"{'nodes':>5} {'s':>3} {'iter ms':>10} {'images/s':>10} {'speedup':>8} "
          f"{'MB/node/iter':>13}  SFB layers", file=out)
    for r in rows:
        print(f"{r.nodes:>5} {r.staleness:>3} {r.iteration_s * 1e3:>10.1f} {r.images_per_s:>10.1f} "
              f"{r.speedup:>8.2f} {r.bytes_per_node / 1e6:>13.1f}  {','.join(r.sfb_layers) or '-'}",
              file=out)
    if json_out:
        os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
        with open(json_out, "w") as fh:
            json.dump({"profile": str(profile), "model": path, "predicted": True,
                       "rows": [r.row() for r in rows]}, fh, indent=1)
    return 0


def speedup_bound(jitter: float, nodes: int, draws: int = 20000, seed: int = 1) -> float:
    """E[max of ``nodes`` mean-1 lognormals] (the cost of waiting for the slowest worker every
    iteration), by Monte Carlo."""
    rng = np.random.default_rng(seed)
    f = np.exp(rng.normal(-jitter * jitter / 2.0, jitter, (draws, nodes)))
    return float(f.max(axis=1).mean()) if nodes > 1 else 1.0


__all__ = ["ParamSpec", "LayerSpec", "Prediction", "simulate", "layer_bytes", "layers_from_net",
           "run_plan", "parse_rate", "speedup_bound"]
