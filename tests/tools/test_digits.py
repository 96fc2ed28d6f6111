import numpy as np
import pytest

from poseidon_cli.data.datum import datum_to_array, parse_datum
from poseidon_cli.data.lmdb_source import iter_records
from poseidon_cli.tools.digits import write_digits

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images

datasets = pytest.importorskip("sklearn.datasets")


def test_digits_8x8_are_the_bundled_images(tmp_path):
    res = write_digits(tmp_path, size=8, test_count=297)
    d = datasets.load_digits()
    assert res["train_count"] == 1500 and res["test_count"] == 297
    recs = list(iter_records(res["test"]))
    k, v = recs[5]
    assert k == b"00000005"
    dt = parse_datum(v)
    assert dt.label == d.target[1505]
    np.testing.assert_array_equal(datum_to_array(dt)[0], (d.images[1505] * 255 // 16).astype(np.uint8))
