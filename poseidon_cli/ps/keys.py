"""Tensor -> chunks -> shards: the key space of the parameter server.

Every parameter tensor is flattened (C order) and cut into chunks of at most ``chunk_bytes`` bytes.
Chunks are numbered globally in parameter order (param 0's chunks first) and each is assigned to the
shard that currently holds the fewest bytes (ties -> lowest shard id). That spreads one big layer
(AlexNet fc6: 151 MB) over all S shards and keeps many tiny biases from piling up on shard 0. The
assignment is a pure function of (param layout, S, chunk_bytes), so every node computes the same map
with no coordination.
"""
from __future__ import annotations

import dataclasses
import heapq
from typing import Iterable, Sequence

import numpy as np

DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB: inside the 256 KB-1 MB band where gRPC streams are fastest

#: Tensor roles (``ps.proto`` ``ParamSpec.Role``). A PARAM's clock average goes to the updater; a
#: STAT (a value to average over workers, e.g. a loss for the log) simply takes the average as its
#: value and has no solver state.
PARAM = "param"
STAT = "stat"
ROLES = (PARAM, STAT)


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One tensor of the layout: ``name`` (unique), ``shape`` (tuple of ints), ``dtype`` (numpy name),
    ``role`` (:data:`PARAM` or :data:`STAT`)."""

    name: str
    shape: tuple
    dtype: str = "float32"
    role: str = PARAM

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"tensor {self.name!r}: role must be one of {ROLES}, got {self.role!r}")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize


@dataclasses.dataclass(frozen=True)
class ChunkKey:
    """One chunk: elements ``[start, stop)`` of the flattened param ``name`` (index ``param_index``).

    ``key`` is the global chunk id, ``shard`` the shard that owns it, ``shape`` the full tensor shape
    (so an updater can map a chunk back to rows/columns if it needs to).
    """

    key: int
    param_index: int
    name: str
    start: int
    stop: int
    shard: int
    shape: tuple
    dtype: str

    @property
    def size(self) -> int:
        return self.stop - self.start


def make_specs(params: Iterable) -> list[ParamSpec]:
    """Normalise ``(name, shape[, dtype[, role]])`` tuples, ``ParamSpec``s or ``(name, ndarray)``
    pairs (role :data:`PARAM` unless given)."""
    specs = []
    for p in params:
        if isinstance(p, ParamSpec):
            specs.append(p)
        elif len(p) == 2 and hasattr(p[1], "shape"):
            specs.append(ParamSpec(p[0], tuple(int(d) for d in p[1].shape), np.dtype(p[1].dtype).name))
        else:
            dtype = np.dtype(p[2] if len(p) > 2 else "float32").name
            role = p[3] if len(p) > 3 else PARAM
            specs.append(ParamSpec(p[0], tuple(int(d) for d in p[1]), dtype, role))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate parameter names: {dup}")
    return specs


class Layout:
    """The chunk map of a parameter list over ``num_shards`` shards.

    Attributes: ``specs`` (list[ParamSpec]), ``chunks`` (list[ChunkKey], index = key),
    ``by_param`` (name -> list[ChunkKey] in element order), ``by_shard`` (shard -> list[ChunkKey]).
    Raises ValueError for an empty shape dimension, num_shards < 1 or chunk_bytes < itemsize.
    """

    def __init__(self, params: Sequence, num_shards: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        self.specs = make_specs(params)
        self.num_shards = int(num_shards)
        self.chunk_bytes = int(chunk_bytes)
        self.chunks: list[ChunkKey] = []
        self.by_param: dict[str, list[ChunkKey]] = {}
        self.by_shard: dict[int, list[ChunkKey]] = {s: [] for s in range(num_shards)}
        # (bytes held, shard id): a min-heap gives the least-loaded shard, ties to the lowest id.
        load = [(0, s) for s in range(num_shards)]
        for pi, spec in enumerate(self.specs):
            per_chunk = self.chunk_bytes // spec.itemsize
            if per_chunk < 1:
                raise ValueError(f"chunk_bytes {chunk_bytes} smaller than one {spec.dtype} element")
            mine = []
            # A zero-size param still gets one (empty) chunk so it has an owner and a clock.
            for start in range(0, max(spec.size, 1), per_chunk):
                stop = min(start + per_chunk, spec.size)
                nbytes, shard = heapq.heappop(load)
                ck = ChunkKey(len(self.chunks), pi, spec.name, start, stop, shard, spec.shape, spec.dtype)
                heapq.heappush(load, (nbytes + max(ck.size * spec.itemsize, 1), shard))
                self.chunks.append(ck)
                self.by_shard[shard].append(ck)
                mine.append(ck)
            self.by_param[spec.name] = mine
        self.spec_by_name = {s.name: s for s in self.specs}

    def shard_bytes(self) -> list[int]:
        """Bytes of parameters each shard holds (index = shard id)."""
        return [sum(c.size * np.dtype(c.dtype).itemsize for c in self.by_shard[s])
                for s in range(self.num_shards)]

    def describe_difference(self, other_specs: Sequence) -> str | None:
        """None if ``other_specs`` equals this layout's params, else a sentence naming the first
        differing param (name, shape or dtype) or the count mismatch."""
        other = make_specs(other_specs)
        for i, (a, b) in enumerate(zip(self.specs, other)):
            if a.name != b.name:
                return f"param #{i} is named {b.name!r} but the registered layout has {a.name!r}"
            if a.shape != b.shape:
                return f"param {a.name!r} has shape {list(b.shape)} but the registered layout has {list(a.shape)}"
            if a.dtype != b.dtype:
                return f"param {a.name!r} has dtype {b.dtype} but the registered layout has {a.dtype}"
            if a.role != b.role:
                return f"tensor {a.name!r} has role {b.role} but the registered layout has {a.role}"
        if len(self.specs) != len(other):
            extra = (other[len(self.specs):] or self.specs[len(other):])[0].name
            return (f"{len(other)} params given but the registered layout has {len(self.specs)} "
                    f"(first unmatched: {extra!r})")
        return None
