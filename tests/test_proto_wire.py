"""Our schema against Caffe's wire format, checked with bytes assembled from field numbers."""
import numpy as np

from poseidon_cli._proto import caffe_pb2
from wire import (decode, f_bytes, f_float, f_string, f_varint, fields, packed_floats,
                  packed_varints, unpack_floats)


def test_datum_hand_bytes_decode_field_for_field():
    pixels = bytes([0, 7, 255, 128, 1, 2])
    raw = (f_varint(1, 1) + f_varint(2, 2) + f_varint(3, 3) + f_bytes(4, pixels) +
           f_varint(5, 9) + f_varint(7, 0))
    d = caffe_pb2.Datum.FromString(raw)
    assert (d.channels, d.height, d.width, d.label, d.encoded) == (1, 2, 3, 9, False)
    assert d.data == pixels


def test_datum_written_by_us_matches_hand_bytes():
    d = caffe_pb2.Datum(channels=3, height=1, width=1, data=b"\x01\x02\x03", label=4)
    expected = f_varint(1, 3) + f_varint(2, 1) + f_varint(3, 1) + f_bytes(4, b"\x01\x02\x03") + f_varint(5, 4)
    assert d.SerializeToString() == expected


def test_datum_float_data_and_negative_label():
    d = caffe_pb2.Datum(channels=1, height=1, width=2, label=-1)
    d.float_data.extend([0.5, -2.0])
    parsed = decode(d.SerializeToString())
    # label -1 is a 10-byte varint of 2**64 - 1, as Caffe's int32 writes it
    assert [v for f, _, v in parsed if f == 5] == [2 ** 64 - 1]
    # float_data (field 6) is not packed in Caffe's Datum: one fixed32 per value
    vals = [v for f, wt, v in parsed if f == 6]
    if len(vals) == 1:  # a packed encoding would also parse in Caffe, but check the values
        assert unpack_floats(vals[0]) == [0.5, -2.0]
    else:
        assert [unpack_floats(v)[0] for v in vals] == [0.5, -2.0]


def test_blobproto_shape_and_packed_data_from_hand_bytes():
    raw = f_bytes(7, packed_varints(1, [2, 3])) + packed_floats(5, [1, 2, 3, 4, 5, 6.5])
    b = caffe_pb2.BlobProto.FromString(raw)
    assert list(b.shape.dim) == [2, 3]
    assert list(b.data) == [1, 2, 3, 4, 5, 6.5]


def test_blobproto_legacy_4d_fields():
    raw = f_varint(1, 1) + f_varint(2, 3) + f_varint(3, 2) + f_varint(4, 2) + packed_floats(5, [0.25] * 12)
    b = caffe_pb2.BlobProto.FromString(raw)
    assert (b.num, b.channels, b.height, b.width) == (1, 3, 2, 2)
    assert len(b.data) == 12


def _caffemodel_bytes():
    # fields in ascending number order, as protobuf serializers emit them
    blob = packed_floats(5, [1, 2, 3, 4]) + f_bytes(7, packed_varints(1, [2, 2]))
    param = f_float(3, 2.0) + f_float(4, 0.0)  # ParamSpec lr_mult 2, decay_mult 0
    layer = (f_string(1, "ip") + f_string(2, "InnerProduct") + f_string(3, "data") +
             f_string(4, "ip") + f_bytes(6, param) + f_bytes(7, blob))
    return f_string(1, "tiny") + f_bytes(100, layer)


def test_caffemodel_hand_bytes_decode():
    net = caffe_pb2.NetParameter.FromString(_caffemodel_bytes())
    assert net.name == "tiny"
    (layer,) = net.layer
    assert (layer.name, layer.type, list(layer.bottom), list(layer.top)) == ("ip", "InnerProduct", ["data"], ["ip"])
    assert layer.param[0].lr_mult == 2.0 and layer.param[0].decay_mult == 0.0
    np.testing.assert_array_equal(np.array(layer.blobs[0].data).reshape(layer.blobs[0].shape.dim), [[1, 2], [3, 4]])


def test_caffemodel_written_by_us_uses_caffe_field_numbers():
    net = caffe_pb2.NetParameter(name="tiny")
    layer = net.layer.add(name="ip", type="InnerProduct", bottom=["data"], top=["ip"])
    layer.param.add(lr_mult=2.0, decay_mult=0.0)
    b = layer.blobs.add()
    b.shape.dim.extend([2, 2])
    b.data.extend([1, 2, 3, 4])
    assert net.SerializeToString() == _caffemodel_bytes()


def test_v1_caffemodel_layers_field_2():
    v1 = f_string(4, "conv1") + f_varint(5, 4) + f_float(7, 1.0) + f_float(7, 2.0)  # CONVOLUTION, blobs_lr
    net = caffe_pb2.NetParameter.FromString(f_bytes(2, v1))
    assert net.layers[0].name == "conv1"
    assert net.layers[0].type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert list(net.layers[0].blobs_lr) == [1.0, 2.0]


def test_solverstate_hand_bytes():
    hist = packed_floats(5, [0.5, -0.5])
    raw = f_varint(1, 1000) + f_string(2, "snap_iter_1000.caffemodel") + f_bytes(3, hist) + f_varint(4, 2)
    s = caffe_pb2.SolverState.FromString(raw)
    assert s.iter == 1000 and s.learned_net == "snap_iter_1000.caffemodel" and s.current_step == 2
    assert list(s.history[0].data) == [0.5, -0.5]
    # and our writer emits the same bytes
    mine = caffe_pb2.SolverState(iter=1000, learned_net="snap_iter_1000.caffemodel", current_step=2)
    mine.history.add().data.extend([0.5, -0.5])
    assert mine.SerializeToString() == raw


def test_layer_param_numbers_of_common_sub_messages():
    layer = caffe_pb2.LayerParameter(name="c")
    layer.convolution_param.num_output = 5
    layer.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    layer.transform_param.scale = 0.5
    layer.data_param.batch_size = 64
    got = {f: v for f, _, v in decode(layer.SerializeToString())}
    assert fields(got[106], 1) == [5]          # convolution_param.num_output
    assert fields(got[121], 1) == [1]          # pooling_param.pool = AVE
    assert fields(got[107], 4) == [64]         # data_param.batch_size
    assert unpack_floats(fields(got[100], 1)[0]) == [0.5]  # transform_param.scale


def test_shared_file_system_does_not_collide_with_bvlc_fields():
    p = caffe_pb2.DataParameter(shared_file_system=True)
    (f, wt, v), = decode(p.SerializeToString())
    assert f not in (9, 10) and v == 1  # BVLC: 9 force_encoded_color, 10 prefetch
