"""HDF5Output: datasets "data" and "label" hold every row of every forward so far."""
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.net import Net

h5py = pytest.importorskip("h5py")


def test_every_forward_appends_its_rows(tmp_path):
    out = tmp_path / "o.h5"
    net = Net(text_format.Parse(f'''
layer {{ name: "in" type: "Input" top: "x" top: "y"
  input_param {{ shape {{ dim: 2 dim: 3 }} shape {{ dim: 2 }} }} }}
layer {{ name: "out" type: "HDF5Output" bottom: "x" bottom: "y"
  hdf5_output_param {{ file_name: "{out}" }} }}
''', caffe_pb2.NetParameter()), 1)
    xs = [np.full((2, 3), i, np.float32) for i in range(3)]
    for i, x in enumerate(xs):
        net.forward(x=x, y=np.array([i, -i], np.float32))
    with h5py.File(out, "r") as f:
        assert np.array_equal(f["data"][()], np.concatenate(xs))
        assert list(f["label"][()]) == [0, 0, 1, -1, 2, -2]
