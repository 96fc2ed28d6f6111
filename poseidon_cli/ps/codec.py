"""ndarray <-> byte chunks, and the zero-copy wire framing of ``Chunk`` messages.

``encode_chunk`` writes exactly the protobuf wire format of ``poseidon.ps.Chunk`` (fields 1, 2, 3
then 15 = data), so the generated ``ps_pb2.Chunk.FromString`` parses it; but it copies the payload
once (into the frame) instead of three times (``tobytes`` + field assignment + ``SerializeToString``).
``decode_chunk`` parses any valid ``Chunk`` encoding and returns the data as a ``memoryview`` into
the received buffer, so ``np.frombuffer`` on it is zero-copy (and read-only).
Elements travel in the machine's native byte order, which is little-endian on every platform we run.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from .._proto import ps_pb2
from .keys import ChunkKey

_TAG_HEADER = 0x0A  # field 1, length-delimited
_TAG_KEY = 0x10     # field 2, varint
_TAG_KIND = 0x18    # field 3, varint
_TAG_DATA = 0x7A    # field 15, length-delimited


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64 negatives are 10-byte varints on the wire
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def as_bytes(arr: np.ndarray) -> memoryview:
    """A flat byte view of ``arr`` (copied only if it is not C-contiguous)."""
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1)).cast("B")


def from_bytes(buf, dtype, shape=None) -> np.ndarray:
    """Zero-copy ndarray over ``buf`` (read-only when ``buf`` is ``bytes``)."""
    arr = np.frombuffer(buf, dtype=np.dtype(dtype))
    return arr if shape is None else arr.reshape(shape)


def split(arr: np.ndarray, chunks: Sequence[ChunkKey]) -> list[np.ndarray]:
    """Views of the flattened ``arr`` for each chunk (``arr.size`` must equal the param size)."""
    flat = np.ascontiguousarray(arr).reshape(-1)
    return [flat[c.start:c.stop] for c in chunks]


def encode_header(job_id: str, worker_id: int, clock: int, version: int) -> bytes:
    return ps_pb2.Header(job_id=job_id, worker_id=worker_id, clock=clock,
                         protocol_version=version).SerializeToString()


def encode_chunk(header: bytes, key: int, kind: int, payload=None) -> bytes:
    """Serialized ``Chunk``: ``header`` is a serialized ``Header``; ``payload`` a bytes-like or None."""
    parts = [bytes([_TAG_HEADER]), _varint(len(header)), header,
             bytes([_TAG_KEY]), _varint(key), bytes([_TAG_KIND]), _varint(kind)]
    if payload is not None:
        mv = memoryview(payload).cast("B") if not isinstance(payload, bytes) else payload
        parts += [bytes([_TAG_DATA]), _varint(len(mv)), mv]
    return b"".join(parts)


class DecodedChunk:
    """A parsed ``Chunk``: ``header`` (ps_pb2.Header), ``key``, ``kind``, ``data`` (memoryview)."""

    __slots__ = ("header", "key", "kind", "data")

    def __init__(self, header, key, kind, data):
        self.header, self.key, self.kind, self.data = header, key, kind, data


def decode_chunk(buf) -> DecodedChunk:
    """Parse a serialized ``Chunk`` without copying ``data``. Unknown fields are skipped."""
    mv = memoryview(buf)
    pos, end = 0, len(mv)
    header, key, kind, data = ps_pb2.Header(), 0, 0, mv[0:0]
    while pos < end:
        tag, pos = _read_varint(mv, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(mv, pos)
            if field == 2:
                key = value - (1 << 64) if value >= 1 << 63 else value
            elif field == 3:
                kind = value
        elif wire == 2:
            n, pos = _read_varint(mv, pos)
            if field == 1:
                header = ps_pb2.Header.FromString(mv[pos:pos + n].tobytes())
            elif field == 15:
                data = mv[pos:pos + n]
            pos += n
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire} in Chunk")
    return DecodedChunk(header, key, kind, data)


def iter_payloads(arr: np.ndarray, chunks: Sequence[ChunkKey]) -> Iterator[tuple[ChunkKey, memoryview]]:
    """(chunk, byte view) for each chunk of ``arr``: no copies for a C-contiguous ``arr``."""
    for ck, view in zip(chunks, split(arr, chunks)):
        yield ck, as_bytes(view)
