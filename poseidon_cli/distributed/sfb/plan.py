"""The SFB cost model and the per-layer plan (pure: no transport, no threads).

Per InnerProduct weight M x N (stored N_out x K_in), batch K, P1 workers, P2 PS shards with a
shard colocated with each worker, the bytes one node sends + receives per iteration:

* PS:  ``2·M·N·(P1+P2-2)/P2`` elements  (:func:`ps_bytes`)
* SFB: ``2·K·(P1-1)·(M+N)`` elements     (:func:`sfb_bytes`)

``--svb auto`` chooses SFB for a layer iff its SFB bytes are strictly fewer and the weight is not
tiny (under ``TINY_WEIGHT_BYTES``: there the fixed cost of one stream per peer per layer and the
local solver step outweigh any bytes saved, and Poseidon's own docs advise against SVB for small
nets); ``on`` chooses SFB for every eligible layer, ``off`` for none. Eligible: an InnerProduct
layer whose weight has lr_mult != 0, is not shared with another layer, is not ``transpose``d, with
``iter_size`` 1 and more than one worker. Biases and every other parameter stay on the PS. Since
P* = 2MN/(K(M+N)) < 2·min(M,N)/K, a layer whose smaller side is at most the batch never chooses
SFB.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MODES = ("auto", "on", "off")
TINY_WEIGHT_BYTES = 256 * 1024


def ps_bytes(m: int, n: int, p1: int, p2: int, itemsize: int = 4) -> int:
    """Bytes one colocated server+worker node sends+receives per iteration to synchronise an M x N
    weight through the PS: its worker pushes and pulls everything but its own shard's part
    (2MN(P2-1)/P2), its shard serves the other P1-1 workers (2MN(P1-1)/P2)."""
    return int(round(2 * m * n * (p1 + p2 - 2) / p2 * itemsize))


def sfb_bytes(m: int, n: int, k: int, p1: int, itemsize: int = 4) -> int:
    """Bytes one node sends+receives per iteration to synchronise an M x N weight by SFB with
    batch K: K rows of (M + N) values to and from each of the P1-1 peers."""
    return 2 * k * (p1 - 1) * (m + n) * itemsize


def choose(m: int, n: int, k: int, p1: int, p2: int, mode: str = "auto") -> str:
    """"sfb" or "ps" for an eligible layer (see module docstring)."""
    if mode not in MODES:
        raise ValueError(f"--svb must be one of {', '.join(MODES)}, got {mode!r}")
    if p1 <= 1 or mode == "off":
        return "ps"
    if mode == "on":
        return "sfb"
    if m * n * 4 < TINY_WEIGHT_BYTES:
        return "ps"
    return "sfb" if sfb_bytes(m, n, k, p1) < ps_bytes(m, n, p1, p2) else "ps"


@dataclass
class LayerPlan:
    """The decision for one InnerProduct weight. ``shape`` is the weight as stored (M x N =
    N_out x K_in); ``batch`` the rows the layer sees per iteration (K)."""
    layer: str
    layer_index: int
    param_index: int
    param_name: str
    shape: tuple
    batch: int
    ps_bytes: int
    sfb_bytes: int
    scheme: str          # "sfb" | "ps"
    note: str = ""       # why an SFB-capable shape stays on the PS

    def row(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def plan_layers(net, num_workers: int, num_shards: int, mode: str = "auto",
                iter_size: int = 1) -> list[LayerPlan]:
    """One LayerPlan per InnerProduct layer with a learnable (lr_mult != 0) weight, in net order."""
    if mode not in MODES:
        raise ValueError(f"--svb must be one of {', '.join(MODES)}, got {mode!r}")
    users: dict[int, int] = {}
    for li, idxs in enumerate(net.layer_learnable_params):
        for k in set(idxs):
            users[k] = users.get(k, 0) + 1
    plans = []
    for li, layer in enumerate(net.layers):
        if layer.param.type != "InnerProduct" or not layer.blobs:
            continue
        name = net.layer_names[li]
        own = f"{name}/0"
        k = next((k for k in net.layer_learnable_params[li] if net.learnable_param_names[k] == own), None)
        note = ""
        if k is None:
            # the weight belongs to another layer (shared by name)
            k = next((k for k in net.layer_learnable_params[li]
                      if net.learnable_params[k].data is layer.blobs[0].data), None)
            if k is None or net.params_lr[k] == 0:
                continue
            note = "weight shared with another layer"
        if net.params_lr[k] == 0:
            continue
        m, n = (int(d) for d in layer.blobs[0].shape)
        _, x = layer.sufficient_factors(net.bottom_vecs[li], net.top_vecs[li])
        batch = int(x.shape[0])
        if not note and users.get(k, 0) > 1:
            note = "weight shared with another layer"
        if not note and layer.param.inner_product_param.transpose:
            note = "transpose: true"
        if not note and iter_size > 1:
            note = f"iter_size {iter_size} > 1"
        scheme = "ps" if note else choose(m, n, batch, num_workers, num_shards, mode)
        if not note and num_workers <= 1:
            note = "one worker"
        if not note and mode == "auto" and scheme == "ps" and m * n * 4 < TINY_WEIGHT_BYTES:
            note = "tiny weight"
        plans.append(LayerPlan(name, li, k, net.learnable_param_names[k], (m, n), batch,
                               ps_bytes(m, n, num_workers, num_shards),
                               sfb_bytes(m, n, batch, num_workers), scheme, note))
    return plans


def _mb(b: int) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e4 else f"{b} B"


def format_table(plans, num_workers: int, num_shards: int, mode: str) -> list[str]:
    """The decision table as log lines (layer, M x N, batch, PS bytes, SFB bytes, choice)."""
    lines = [f"Communication per InnerProduct weight (--svb {mode}; P1={num_workers} workers, "
             f"P2={num_shards} shards; bytes per node per iteration):"]
    head = f"  {'layer':<16} {'M x N':>13} {'batch':>6} {'PS bytes':>12} {'SFB bytes':>12}  choice"
    lines.append(head)
    for p in plans:
        shape = f"{p.shape[0]} x {p.shape[1]}"
        choice = p.scheme.upper() + (f" ({p.note})" if p.note else "")
        lines.append(f"  {p.layer:<16} {shape:>13} {p.batch:>6} {_mb(p.ps_bytes):>12} "
                     f"{_mb(p.sfb_bytes):>12}  {choice}")
    if not plans:
        lines.append("  (no InnerProduct weight to decide on)")
    if num_workers > num_shards:
        lines.append(f"  ({num_workers // num_shards} workers per client: the model above is "
                     f"Poseidon's, one worker and one shard per node; traffic between workers of "
                     f"one client stays on that machine)")
    return lines
