"""Chunk keys (poseidon_cli/ps/keys.py): tensors cut into chunks spread evenly over shards."""
import numpy as np
from hypothesis import given, settings, strategies as st

from poseidon_cli.ps.keys import Layout

ALEX = [("conv1", (96, 3, 11, 11)), ("conv1b", (96,)), ("fc6", (4096, 9216)), ("fc6b", (4096,)),
        ("fc7", (4096, 4096)), ("fc8", (1000, 4096))]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), min_size=0, max_size=3), min_size=1, max_size=6),
       st.integers(1, 5), st.sampled_from([4, 8, 40, 1024]))
def test_chunks_cover_every_element_exactly_once(shapes, shards, chunk_bytes):
    params = [(f"p{i}", tuple(s)) for i, s in enumerate(shapes)]
    lay = Layout(params, shards, chunk_bytes)
    for name, shape in params:
        size = int(np.prod(shape))
        cks = lay.by_param[name]
        assert cks[0].start == 0 and cks[-1].stop == size
        assert all(a.stop == b.start for a, b in zip(cks, cks[1:]))
        assert all(c.size * 4 <= chunk_bytes for c in cks)
    assert [c.key for c in lay.chunks] == list(range(len(lay.chunks)))
    assert sorted(c.key for s in range(shards) for c in lay.by_shard[s]) == list(range(len(lay.chunks)))


def test_deterministic_on_every_node():
    a, b = Layout(ALEX, 4), Layout(list(ALEX), 4)
    assert a.chunks == b.chunks


def test_one_big_layer_is_spread_over_all_shards_evenly():
    lay = Layout(ALEX, 4)
    assert {c.shard for c in lay.by_param["fc6"]} == {0, 1, 2, 3}
    loads = lay.shard_bytes()
    assert max(loads) - min(loads) <= (1 << 20)  # within one chunk of each other


def test_describe_difference_names_the_param():
    lay = Layout(ALEX, 2)
    assert lay.describe_difference(ALEX) is None
    bad = list(ALEX)
    bad[2] = ("fc6", (4096, 9215))
    assert "fc6" in lay.describe_difference(bad) and "9215" in lay.describe_difference(bad)
    assert "conv1b" in lay.describe_difference(ALEX[:1] + [("x", (96,))] + ALEX[2:])
    assert "params" in lay.describe_difference(ALEX[:-1])
