"""Shared fixtures for solver tests: Caffe's least-squares problem (InnerProduct + EuclideanLoss)
fed from an in-memory data set through a before-forward hook, and a tiny LMDB writer."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from poseidon_cli._proto import caffe_pb2

LS_NET = """
name: "least_squares"
layer {{ name: "in" type: "Input" top: "data" top: "targets"
  input_param {{ shape {{ dim: {b} dim: {d} }} shape {{ dim: {b} dim: 1 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" std: 1 }}
                         bias_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "targets" top: "loss" }}
"""


def ls_net_param(batch, dim=3):
    return text_format.Parse(LS_NET.format(b=batch, d=dim), caffe_pb2.NetParameter())


def solver_param(text, net=None):
    p = text_format.Parse(text, caffe_pb2.SolverParameter())
    if net is not None:
        p.net_param.CopyFrom(net)
    return p


class Feeder:
    """Before layer 0's forward, copy the next ``batch`` rows (wrapping) into data/targets."""

    def __init__(self, net, X, Y, batch):
        self.net, self.X, self.Y, self.batch, self.pos = net, X, Y, batch, 0
        net.add_before_forward(self)

    def __call__(self, li):
        if li != 0:
            return
        from poseidon_cli import backend
        idx = (self.pos + np.arange(self.batch)) % len(self.X)
        for name, src in (("data", self.X), ("targets", self.Y)):
            blob = self.net.blobs[name]
            blob.data[...] = backend.asarray(src[idx], backend.get_array_module(blob.data))
        self.pos = (self.pos + self.batch) % len(self.X)


@pytest.fixture
def ls_data():
    rng = np.random.default_rng(1701)
    X = rng.normal(size=(8, 3))
    Y = rng.normal(size=(8, 1))
    return X, Y


class Quiet:
    """A TrainLog stand-in collecting lines in memory."""

    def __init__(self):
        from poseidon_cli.solver.log import TrainLog
        import io
        self.buf = io.StringIO()
        self.log = TrainLog([self.buf], progress=False)

    def lines(self):
        return self.buf.getvalue().splitlines()


@pytest.fixture
def kit():
    """The helpers above, as a fixture (test modules cannot import conftest in importlib mode)."""
    from types import SimpleNamespace
    return SimpleNamespace(ls_net_param=ls_net_param, solver_param=solver_param, Feeder=Feeder,
                           Quiet=Quiet)
