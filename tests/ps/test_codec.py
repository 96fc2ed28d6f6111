"""Chunk framing (poseidon_cli/ps/codec.py): wire-identical to ps_pb2.Chunk, zero-copy decode."""
import numpy as np
from hypothesis import given, settings, strategies as st

from poseidon_cli._proto import ps_pb2
from poseidon_cli.ps import codec
from poseidon_cli.ps.keys import Layout


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=8), st.integers(-1, 1000), st.integers(0, 1 << 40), st.integers(0, 1 << 40),
       st.sampled_from([0, 1, 2]), st.binary(max_size=300))
def test_encode_is_parsed_by_protobuf_and_decode_parses_protobuf(job, worker, clock, key, kind, data):
    hdr = codec.encode_header(job, worker, clock, 1)
    ours = codec.encode_chunk(hdr, key, kind, data)
    m = ps_pb2.Chunk.FromString(ours)
    assert (m.header.job_id, m.header.worker_id, m.header.clock, m.key, m.kind, m.data) == \
        (job, worker, clock, key, kind, data)
    d = codec.decode_chunk(m.SerializeToString())
    assert (d.header.job_id, d.header.worker_id, d.header.clock, d.key, d.kind, bytes(d.data)) == \
        (job, worker, clock, key, kind, data)


def test_decode_is_zero_copy_and_roundtrips_arrays():
    a = np.arange(1000, dtype=np.float32).reshape(10, 100)
    lay = Layout([("a", a.shape)], 1, chunk_bytes=1024)
    out = np.empty_like(a).reshape(-1)
    hdr = codec.encode_header("j", 0, 3, 1)
    for ck, payload in codec.iter_payloads(a, lay.by_param["a"]):
        frame = codec.encode_chunk(hdr, ck.key, ps_pb2.GRADIENT, payload)
        d = codec.decode_chunk(frame)
        view = codec.from_bytes(d.data, np.float32)
        assert np.shares_memory(view, np.frombuffer(frame, np.uint8))  # no copy of the payload
        assert not view.flags.writeable
        out[ck.start:ck.stop] = view
    np.testing.assert_array_equal(out.reshape(a.shape), a)


def test_split_views_do_not_copy():
    a = np.zeros(100, np.float64)
    lay = Layout([("a", (100,))], 2, chunk_bytes=80)
    for v in codec.split(a, lay.by_param["a"]):
        assert np.shares_memory(v, a)
