"""Sufficient-factor broadcasting (SFB) for InnerProduct weights, and the cost model that picks it.

Three parts, each in a file of its own:

* ``plan.py``: the cost model (:func:`ps_bytes`, :func:`sfb_bytes`, :func:`choose`) and the
  per-layer decision (:func:`plan_layers`, :func:`format_table`). Pure.
* ``exchange.py``: :class:`FactorExchange`, one worker's factors from capture through reassembly
  and the gradient rebuild to the Caffe update step (``solver/step.py``), under the SSP bound.
* ``transport.py``: how frames reach peers (:class:`LocalFactorHub` in-process,
  :class:`GrpcFactorTransport` over gRPC), the server side (:func:`grpc_handler`,
  :func:`serve_factors`).

The flag is ``--svb`` (Poseidon's name, "sufficient vector broadcasting"); the code says SFB, the
papers' name for the same thing.

Where worker t >= 1 of a client listens is kept by ``distributed/directory.py``, which is not about
SFB. The cost model is the one of the Poseidon paper (Zhang et al., USENIX ATC 2017, Table 1).
"""
from .exchange import STEP_BLOCK_ELEMENTS, FactorExchange
from .plan import (MODES, TINY_WEIGHT_BYTES, LayerPlan, choose, format_table, plan_layers,
                   ps_bytes, sfb_bytes)
from .transport import (DEFAULT_CHUNK_BYTES, SERVICE, FactorTransport, GrpcFactorTransport,
                        LocalFactorHub, LocalFactorTransport, grpc_handler, serve_factors)

__all__ = ["DEFAULT_CHUNK_BYTES", "MODES", "SERVICE", "STEP_BLOCK_ELEMENTS", "TINY_WEIGHT_BYTES",
           "FactorExchange", "FactorTransport", "GrpcFactorTransport", "LayerPlan", "LocalFactorHub",
           "LocalFactorTransport", "choose", "format_table", "grpc_handler", "plan_layers",
           "ps_bytes", "sfb_bytes", "serve_factors"]
