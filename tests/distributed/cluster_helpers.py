"""Shared helpers for distributed tests: a digits LMDB, a small net, and runners."""
from __future__ import annotations

import os
import threading

import numpy as np
from google.protobuf import text_format

from poseidon_cli import config
from poseidon_cli._proto import caffe_pb2

NET = """
name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ scale: 0.0625 }}
  data_param {{ source: "{train}" batch_size: {batch} backend: LMDB shared_file_system: true }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: 0.0625 }}
  data_param {{ source: "{test}" batch_size: 20 backend: LMDB shared_file_system: true }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  param {{ lr_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc" include {{ phase: TEST }} }}
"""

SOLVER = """
net: "net.prototxt"
base_lr: {lr} lr_policy: "step" gamma: 0.5 stepsize: 7
momentum: 0.9 weight_decay: 0.001 type: "{type}"
max_iter: {iters} display: 5 random_seed: 7
test_iter: 4 test_interval: 10 test_initialization: false
snapshot_after_train: true snapshot_prefix: "snap/tiny"
solver_mode: CPU
"""


def make_digits(tmp_path):
    from poseidon_cli.tools.digits import write_digits
    return write_digits(tmp_path / "digits", size=8, test_count=200)


def write_job(folder, paths, batch, solver_type="SGD", iters=20, lr=0.05):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "net.prototxt"), "w") as fh:
        fh.write(NET.format(train=paths["train"], test=paths["test"], batch=batch))
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as fh:
        fh.write(SOLVER.format(type=solver_type, iters=iters, lr=lr))
    return path


def read_caffemodel(path) -> dict:
    net = config.load_caffemodel(path)
    return {f"{l.name}/{i}": np.array(b.data, dtype=np.float64)
            for l in net.layer for i, b in enumerate(l.blobs)}


def rel_diff(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))
