"""Our LMDBs against Caffe's Datum wire format, from field numbers alone (no generated code):
channels=1, height=2, width=3 (varint), data=4 (bytes), label=5 (varint), float_data=6 (float),
encoded=7 (varint)."""
import struct

import numpy as np
import pytest

from poseidon_cli.testing import make_layer, run_forward
from poseidon_cli.tools.convert_mnist import convert_mnist

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def _varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def decode_fields(buf):
    """{field number: [values]} for a message using varint (0), 32-bit (5), length-delimited (2)."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            val, pos = _read_varint(buf, pos)
        elif wt == 2:
            n, pos = _read_varint(buf, pos)
            val, pos = bytes(buf[pos:pos + n]), pos + n
        elif wt == 5:
            val, pos = struct.unpack("<f", buf[pos:pos + 4])[0], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wt}")
        fields.setdefault(num, []).append(val)
    return fields


def datum_bytes(c, h, w, pixels: bytes, label: int) -> bytes:
    """A Datum assembled by hand, fields in Caffe's order."""
    return (b"\x08" + _varint(c) + b"\x10" + _varint(h) + b"\x18" + _varint(w)
            + b"\x22" + _varint(len(pixels)) + pixels + b"\x28" + _varint(label))


def _write_idx(path, magic, dims, payload):
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def test_our_mnist_lmdb_decodes_with_a_hand_written_parser(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([7, 0, 9, 3, 3], dtype=np.uint8)
    _write_idx(tmp_path / "img", 2051, (5, 28, 28), imgs.tobytes())
    _write_idx(tmp_path / "lbl", 2049, (5,), labels.tobytes())
    convert_mnist(tmp_path / "img", tmp_path / "lbl", tmp_path / "db")
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    assert [k for k, _ in items] == [b"%08d" % i for i in range(5)]
    for i, (_, v) in enumerate(items):
        f = decode_fields(v)
        assert f[1] == [1] and f[2] == [28] and f[3] == [28]
        assert f[4] == [imgs[i].tobytes()]
        assert f[5] == [int(labels[i])]
        assert 6 not in f and 7 not in f


def test_hand_built_caffe_record_reads_back_through_the_data_layer(tmp_path):
    pixels = bytes(range(2 * 3 * 4))          # C=2, H=3, W=4
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"a", datum_bytes(2, 3, 4, pixels, 5))
        txn.put(b"b", datum_bytes(2, 3, 4, pixels[::-1], 300))  # multi-byte varint label
    env.close()
    layer = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 3 '
                       'backend: LMDB }')
    data, label = run_forward(layer, [], 2)
    want = np.stack([np.frombuffer(pixels, np.uint8), np.frombuffer(pixels[::-1], np.uint8),
                     np.frombuffer(pixels, np.uint8)]).reshape(3, 2, 3, 4)
    np.testing.assert_array_equal(data.data, want)
    np.testing.assert_array_equal(label.data, [5, 300, 5])   # wrapped to the first key
    layer.close()


def test_float_data_record_built_by_hand(tmp_path):
    vals = [0.5, -1.25, 3.0, 7.75]
    rec = (b"\x08\x01\x10\x02\x18\x02" + b"\x28\x04"
           + b"".join(b"\x35" + struct.pack("<f", v) for v in vals))  # unpacked float_data
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"0", rec)
    env.close()
    layer = make_layer(f'type: "Data" data_param {{ source: "{tmp_path / "db"}" batch_size: 1 '
                       'backend: LMDB } transform_param { scale: 2 }')
    data, label = run_forward(layer, [], 2)
    np.testing.assert_allclose(data.data.ravel(), [2 * v for v in vals])
    assert label.data[0] == 4
    layer.close()
