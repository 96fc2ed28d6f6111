import numpy as np
import pytest

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import DataError
from poseidon_cli.tools.compute_mean import write_mean

lmdb = pytest.importorskip("lmdb")  # a runtime dependency, but absent on some GPU images


def write_db(path, images):
    env = lmdb.open(str(path), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, img in enumerate(images):
            d = caffe_pb2.Datum(channels=img.shape[0], height=img.shape[1], width=img.shape[2])
            d.data = img.tobytes()
            txn.put(b"%03d" % i, d.SerializeToString())
    env.close()


def test_mean_file_is_a_caffe_blobproto_with_the_pixel_mean(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(7, 3, 4, 5), dtype=np.uint8)
    write_db(tmp_path / "db", imgs)
    write_mean(tmp_path / "db", tmp_path / "mean.binaryproto")
    blob = caffe_pb2.BlobProto.FromString((tmp_path / "mean.binaryproto").read_bytes())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 4, 5)
    want = imgs.astype(np.float64).sum(0) / 7
    np.testing.assert_allclose(np.array(blob.data).reshape(3, 4, 5), want, rtol=1e-6)


def test_shape_change_names_the_key(tmp_path):
    write_db(tmp_path / "db", [np.zeros((1, 2, 2), np.uint8), np.zeros((1, 3, 2), np.uint8)])
    with pytest.raises(DataError, match="key '001'.*1x3x2 differs"):
        write_mean(tmp_path / "db", tmp_path / "m")
    assert not (tmp_path / "m").exists()
