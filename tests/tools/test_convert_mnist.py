import gzip
import os
import struct

import numpy as np
import pytest

from poseidon_cli.data.datum import datum_to_array, parse_datum
from poseidon_cli.data.lmdb_source import iter_records
from poseidon_cli.errors import DataError
from poseidon_cli.tools.convert_mnist import convert_mnist

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload


@pytest.fixture
def mnist(tmp_path):
    rng = np.random.default_rng(7)
    imgs = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=12, dtype=np.uint8)
    (tmp_path / "img").write_bytes(idx(2051, (12, 28, 28), imgs.tobytes()))
    (tmp_path / "lbl").write_bytes(idx(2049, (12,), labels.tobytes()))
    return tmp_path, imgs, labels


def test_pixels_labels_and_keys_read_back_exactly(mnist):
    d, imgs, labels = mnist
    assert convert_mnist(d / "img", d / "lbl", d / "out") == 12
    recs = list(iter_records(str(d / "out")))
    assert [k for k, _ in recs] == [b"%08d" % i for i in range(12)]
    for i, (k, v) in enumerate(recs):
        dt = parse_datum(v, k)
        assert dt.label == labels[i]
        np.testing.assert_array_equal(datum_to_array(dt), imgs[i][None])


def test_gzip_input(mnist):
    d, imgs, labels = mnist
    (d / "img.gz").write_bytes(gzip.compress((d / "img").read_bytes()))
    assert convert_mnist(d / "img.gz", d / "lbl", d / "out") == 12


@pytest.mark.parametrize("which,content,match", [
    ("img", idx(2049, (12, 28, 28), b""), "wrong magic number 2049.*images.*swapped"),
    ("lbl", idx(2051, (12,), b"\0" * 12), "wrong magic number 2051.*labels"),
    ("img", idx(2051, (12, 28, 28), b"\0" * 100), "truncated.*9408 bytes of data, found 100"),
    ("img", b"\0\0", "truncated"),
    ("lbl", idx(2049, (11,), b"\0" * 11), "12 images but .* 11 labels"),
])
def test_bad_inputs_leave_no_output(mnist, which, content, match):
    d, _, _ = mnist
    (d / which).write_bytes(content)
    with pytest.raises(DataError, match=match):
        convert_mnist(d / "img", d / "lbl", d / "out")
    assert sorted(os.listdir(d)) == ["img", "lbl"]
