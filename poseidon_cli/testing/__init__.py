"""Test helpers shipped with poseidon so users can test their own layers the way we test ours.

- ``make_layer(type_or_text, phase=TRAIN, **kwargs)``: a layer from LayerParameter text.
- ``make_blobs(shapes, rng, dtype)``: random Blobs.
- ``run_both_ways(spec, x, dy)``: forward/backward out of place and in place, to compare.
- ``GradientChecker``: central-difference check of a layer's backward (Caffe's pass rule).
"""
from .gradient_check import GradientChecker, check_layer_gradients
from .harness import make_blobs, make_layer, run_both_ways, run_forward

__all__ = ["GradientChecker", "check_layer_gradients", "make_blobs", "make_layer", "run_both_ways",
           "run_forward"]
