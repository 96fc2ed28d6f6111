import os

import numpy as np
import pytest

from poseidon_cli.data.datum import datum_to_array, parse_datum
from poseidon_cli.data.lmdb_source import iter_records
from poseidon_cli.errors import DataError
from poseidon_cli.tools.convert_cifar10 import convert_cifar10

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def write_batches(d, per_file=3, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, size=per_file, dtype=np.uint8)
        pixels = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        (d / name).write_bytes(b"".join(bytes([labels[i]]) + pixels[i].tobytes()
                                        for i in range(per_file)))
        data[name] = (labels, pixels.reshape(per_file, 3, 32, 32))
    return data


def test_train_and_test_read_back_with_caffe_keys(tmp_path):
    src = tmp_path / "cifar-10-batches-bin"
    src.mkdir()
    data = write_batches(src)
    out = tmp_path / "out"
    out.mkdir()
    res = convert_cifar10(tmp_path, out)          # finds the cifar-10-batches-bin subfolder
    assert res["train_count"] == 15 and res["test_count"] == 3
    train = list(iter_records(res["train"]))
    assert [k for k, _ in train] == [b"%05d" % (f * 10000 + i) for f in range(5) for i in range(3)]
    for j, (k, v) in enumerate(train):
        labels, imgs = data[f"data_batch_{j // 3 + 1}.bin"]
        dt = parse_datum(v, k)
        assert dt.label == labels[j % 3]
        np.testing.assert_array_equal(datum_to_array(dt), imgs[j % 3])   # R, G, B planes kept
    test = list(iter_records(res["test"]))
    labels, imgs = data["test_batch.bin"]
    assert [k for k, _ in test] == [b"00000", b"00001", b"00002"]
    np.testing.assert_array_equal(datum_to_array(parse_datum(test[2][1])), imgs[2])


@pytest.mark.parametrize("mutate,match", [
    (lambda d: (d / "data_batch_3.bin").unlink(), "data_batch_3.bin': no such file"),
    (lambda d: (d / "test_batch.bin").write_bytes((d / "test_batch.bin").read_bytes()[:-5]),
     "not a whole number of 3073-byte"),
    (lambda d: (d / "data_batch_2.bin").write_bytes(b"\x63" + bytes(3072)), "label byte 99"),
])
def test_bad_inputs_leave_no_output(tmp_path, mutate, match):
    write_batches(tmp_path)
    mutate(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=match):
        convert_cifar10(tmp_path, out)
    assert os.listdir(out) == []
