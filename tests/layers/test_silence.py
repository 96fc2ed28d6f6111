"""Silence: no tops, forward leaves bottoms alone, backward zeroes requested diffs only."""
import numpy as np
import pytest

from poseidon_cli.errors import NetError
from poseidon_cli.testing import make_blobs, make_layer


def test_backward_zeroes_only_propagated_bottoms():
    bottom = make_blobs([(2, 3), (4,)])
    before = [b.data.copy() for b in bottom]
    for b in bottom:
        b.diff[...] = 7.0
    layer = make_layer('type: "Silence"')
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    assert all(np.array_equal(b.data, d) for b, d in zip(bottom, before))
    layer.backward([], [True, False], bottom)
    assert not bottom[0].diff.any()
    assert (bottom[1].diff == 7.0).all()


def test_arity():
    with pytest.raises(NetError, match="top"):
        make_layer('type: "Silence"').setup(make_blobs([(2,)]), make_blobs([(2,)]))
    with pytest.raises(NetError, match="bottom"):
        make_layer('type: "Silence"').setup([], [])
