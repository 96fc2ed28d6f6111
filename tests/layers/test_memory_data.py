"""MemoryData: batches copied from the arrays handed to reset, in order with wrap-around."""
import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2
from poseidon_cli.errors import NetError
from poseidon_cli.net import Net


def make(batch=3):
    return Net(text_format.Parse(f'''
layer {{ name: "m" type: "MemoryData" top: "data" top: "label"
  memory_data_param {{ batch_size: {batch} channels: 2 height: 1 width: 2 }} }}
''', caffe_pb2.NetParameter()), 1)


def test_batches_wrap_and_shapes():
    net = make()
    assert net.blobs["data"].shape == (3, 2, 1, 2) and net.blobs["label"].shape == (3,)
    data = np.arange(24, dtype=np.float32).reshape(6, 2, 1, 2)
    labels = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1)
    net.layers[0].reset(data, labels)
    got = []
    for _ in range(3):
        net.forward()
        got.append(net.blobs["label"].data.tolist())
        assert np.array_equal(net.blobs["data"].data, data[[int(v) for v in got[-1]]])
    assert got == [[0, 1, 2], [3, 4, 5], [0, 1, 2]]


def test_bad_arrays_are_refused():
    net = make()
    good = np.zeros((3, 2, 1, 2), np.float32)
    with pytest.raises(NetError, match=r"data must have shape \(N, 2, 1, 2\)"):
        net.layers[0].reset(np.zeros((3, 2, 2, 2), np.float32), np.zeros((3, 1, 1, 1), np.float32))
    with pytest.raises(NetError, match="C-contiguous"):
        net.layers[0].reset(np.asfortranarray(np.zeros((3, 2, 1, 2), np.float32))[:, :, :, ::-1],
                            np.zeros((3, 1, 1, 1), np.float32))
    with pytest.raises(NetError, match=r"labels must have shape \(3, 1, 1, 1\)"):
        net.layers[0].reset(good, np.zeros((3, 2), np.float32))
