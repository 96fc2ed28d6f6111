"""HDF5Data and HDF5Output: rows in order across files with wrap-around, tops named like the
datasets; the output file holds every row written. Files are made with h5py directly."""
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import DataError
from poseidon_cli.net import Net

h5py = pytest.importorskip("h5py")


def write_files(tmp_path, sizes):
    rng = np.random.default_rng(0)
    paths, data, label = [], [], []
    for i, n in enumerate(sizes):
        d = rng.normal(size=(n, 2, 3)).astype(np.float32)
        l = (np.arange(n) + 10 * i).astype(np.float32)
        p = tmp_path / f"part{i}.h5"
        with h5py.File(p, "w") as f:
            f["data"] = d
            f["label"] = l
        paths.append(str(p))
        data.append(d)
        label.append(l)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    return str(listing), np.concatenate(data), np.concatenate(label)


def net(source, batch, out_file):
    return Net(text_format.Parse(f'''
layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{source}" batch_size: {batch} }} }}
layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
  hdf5_output_param {{ file_name: "{out_file}" }} }}
''', caffe_pb2.NetParameter()), 1)


def test_rows_in_order_across_files_wrapping_and_output_file(tmp_path):
    listing, data, label = write_files(tmp_path, [3, 2])
    n = net(listing, 4, tmp_path / "out.h5")
    assert n.blobs["data"].shape == (4, 2, 3) and n.blobs["label"].shape == (4,)
    order = []
    for _ in range(3):
        n.forward()
        order.extend(n.blobs["label"].data.tolist())
        k = len(order) - 4
        idx = [(k + j) % 5 for j in range(4)]
        assert np.array_equal(n.blobs["data"].data, data[idx])
    assert order == [label[i % 5] for i in range(12)]
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["data"].shape == (12, 2, 3)
        assert list(f["label"][()]) == order


def test_missing_dataset_is_a_data_error(tmp_path):
    p = tmp_path / "x.h5"
    with h5py.File(p, "w") as f:
        f["data"] = np.zeros((2, 1), np.float32)
    (tmp_path / "l.txt").write_text(str(p))
    with pytest.raises(DataError, match="has no dataset 'label'"):
        net(tmp_path / "l.txt", 1, tmp_path / "o.h5")


def test_shuffle_visits_every_row_once_per_pass(tmp_path):
    listing, data, label = write_files(tmp_path, [4, 4])
    n = Net(text_format.Parse(f'''
layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{listing}" batch_size: 2 shuffle: true }} }}
''', caffe_pb2.NetParameter()), 0, seed=3)
    seen = []
    for _ in range(8):           # two passes over 8 rows
        n.forward()
        for row, lab in zip(n.blobs["data"].data, n.blobs["label"].data):
            assert np.array_equal(row, data[list(label).index(lab)])   # rows stay with labels
            seen.append(float(lab))
    assert sorted(seen[:8]) == sorted(label.tolist()) and sorted(seen[8:]) == sorted(label.tolist())
    assert seen[:8] != sorted(seen[:8]) or seen[8:] != sorted(seen[8:])   # actually shuffled
