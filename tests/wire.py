"""A minimal protobuf wire-format encoder/decoder built from the spec alone (varints, 32/64-bit,
length-delimited), so tests can check our files against Caffe's field numbers without trusting
the generated code."""
from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # negative int32/int64 are 10-byte two's complement varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def f_varint(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def f_bytes(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def f_string(field: int, s: str) -> bytes:
    return f_bytes(field, s.encode())


def f_float(field: int, x: float) -> bytes:
    return key(field, 5) + struct.pack("<f", x)


def packed_floats(field: int, xs) -> bytes:
    return f_bytes(field, b"".join(struct.pack("<f", x) for x in xs))


def packed_varints(field: int, xs) -> bytes:
    return f_bytes(field, b"".join(varint(x) for x in xs))


def read_varint(buf: bytes, pos: int):
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, pos


def decode(buf: bytes) -> list[tuple[int, int, object]]:
    """Flat list of (field, wire_type, value); value is int, bytes, or raw 4/8-byte bytes."""
    pos, out = 0, []
    while pos < len(buf):
        k, pos = read_varint(buf, pos)
        field, wt = k >> 3, k & 7
        if wt == 0:
            v, pos = read_varint(buf, pos)
        elif wt == 1:
            v, pos = buf[pos:pos + 8], pos + 8
        elif wt == 2:
            n, pos = read_varint(buf, pos)
            v, pos = buf[pos:pos + n], pos + n
        elif wt == 5:
            v, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        out.append((field, wt, v))
    return out


def fields(buf: bytes, number: int) -> list:
    return [v for f, _, v in decode(buf) if f == number]


def unpack_floats(payload: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(payload) // 4}f", payload))
