"""The bad-input corpus: every case is a user mistake in a prototxt, a solver, a hosts file, the
data, the weights or the flags. Each must end with exit code 2, exactly one ``poseidon: error:``
line that names the file or field (and the line where the mistake sits in a text file) and says
what to do, and no traceback.

Cases run in-process through click's CliRunner (one real subprocess at the end checks that the
installed console script behaves the same). A case is ``(id, build)`` where ``build(tmp)`` writes
its files under ``tmp`` and returns ``(argv, [substrings the error line must contain], env)``.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from poseidon_cli.cli import main

#: words one of which an error line uses to say what to do (a vague message has none)
ACTION_WORDS = ("use", "add", "set", "give", "check", "fix", "remove", "pass", "write", "make",
                "run", "choose", "rename", "lower", "create", "must", "expected", "is it",
                "delete", "keep", "resume", "recompute", "download", "convert", "number", "fix", "only", "needs", "need", "should", "increase", "between",
                "at most", "at least", "one of", "drop", "start", "free", "list", "point")

CASES: list = []


def case(category, cid, build):
    CASES.append(pytest.param(build, id=f"{category}-{cid}"))


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

def layer(name, ltype, bottoms=(), tops=(), body=""):
    b = "".join(f'  bottom: "{x}"\n' for x in bottoms)
    t = "".join(f'  top: "{x}"\n' for x in tops)
    return f'layer {{\n  name: "{name}"\n  type: "{ltype}"\n{b}{t}  {body}\n}}\n'


DATA = layer("data", "DummyData", (), ("data", "label"),
             'dummy_data_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } '
             'data_filler { type: "gaussian" } data_filler { type: "constant" } }')


def ip(name, bottom, n=3, extra=""):
    return layer(name, "InnerProduct", (bottom,), (name,),
                 f'inner_product_param {{ num_output: {n} weight_filler {{ type: "xavier" }} }} {extra}')


LOSS = layer("loss", "SoftmaxWithLoss", ("out", "label"), ("loss",))


def net_text(middle="", feed="data", data=DATA, tail=None):
    """A net: ``data`` layers, ``middle``, then InnerProduct 'out' on ``feed`` and the loss."""
    return 'name: "tiny"\n' + data + middle + (ip("out", feed) + LOSS if tail is None else tail)


def solver_text(net="net.prototxt", extra="", max_iter=1):
    return (f'net: "{net}"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\n'
            f'max_iter: {max_iter}\ndisplay: 0\nsnapshot_after_train: false\n'
            f'snapshot_prefix: "snap/tiny"\nrandom_seed: 1\n{extra}')


def write(tmp, name, text, mode="w"):
    p = Path(tmp) / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


def train_args(tmp, net=None, solver_extra="", flags=(), solver=None):
    write(tmp, "net.prototxt", net if net is not None else net_text())
    s = write(tmp, "solver.prototxt", solver if solver is not None else solver_text(extra=solver_extra))
    return ["train", "--solver", s, "--cpu", *flags]


def line_of(text, needle, nth=1):
    """1-based line number of the nth line containing ``needle``."""
    count = 0
    for i, ln in enumerate(text.splitlines(), 1):
        if needle in ln:
            count += 1
            if count == nth:
                return i
    raise AssertionError(f"{needle!r} not in text")


def net_case(cid, middle="", feed="data", expect=(), data=DATA, tail=None, at=None):
    """A training run whose net is bad; ``at`` = text whose line the message must name."""
    def build(tmp):
        text = net_text(middle, feed, data, tail)
        args = train_args(tmp, net=text)
        exp = list(expect)
        if at is not None:
            exp.append(f"net.prototxt:{line_of(text, at)}")
        return args, exp, None
    case("net", cid, build)


def solver_case(cid, extra, expect=(), at=None, net=None, text=None):
    def build(tmp):
        s_text = text if text is not None else solver_text(extra=extra)
        args = train_args(tmp, net=net, solver=s_text)
        exp = list(expect)
        if at is not None:
            needle, nth = at if isinstance(at, tuple) else (at, 1)
            exp.append(f"solver.prototxt:{line_of(s_text, needle, nth)}")
        return args, exp, None
    case("solver", cid, build)


# ------------------------------------------------------------------------------------------------
# Net prototxt
# ------------------------------------------------------------------------------------------------

net_case("syntax-missing-brace", tail=ip("out", "data").rstrip()[:-1] + LOSS, expect=["net.prototxt:"])
net_case("unknown-field", layer("r", "ReLU", ("data",), ("r",), "kernel_sizee: 3"), "r",
         expect=["kernel_sizee"], at="kernel_sizee")
net_case("wrong-value-type", tail=layer("out", "InnerProduct", ("data",), ("out",),
                                        'inner_product_param { num_output: "three" }') + LOSS,
         expect=["net.prototxt:", "num_output"])
net_case("negative-uint", tail=layer("out", "InnerProduct", ("data",), ("out",),
                                     'inner_product_param { num_output: -3 }') + LOSS,
         expect=["net.prototxt:"])
net_case("unknown-enum", layer("p", "Pooling", ("data",), ("p",),
                               "pooling_param { pool: MEDIAN kernel_size: 2 }"), "p",
         expect=["net.prototxt:", "MEDIAN"])
net_case("unknown-layer-type", layer("x", "Frobnicate", ("data",), ("x",)), "x",
         expect=["Frobnicate"])
net_case("missing-bottom", layer("r", "ReLU", ("nothere",), ("r",)), "r", expect=["nothere"])
net_case("duplicate-top", layer("r", "ReLU", ("data",), ("label",)), "data", expect=["label"])
net_case("ip-num-output-zero", tail=layer("out", "InnerProduct", ("data",), ("out",),
                                          "inner_product_param { num_output: 0 }") + LOSS,
         expect=["out", "num_output"], at='name: "out"')
net_case("ip-no-param", tail=layer("out", "InnerProduct", ("data",), ("out",)) + LOSS,
         expect=["out", "num_output"])
net_case("conv-num-output-zero", layer("c", "Convolution", ("data",), ("c",),
                                       "convolution_param { num_output: 0 kernel_size: 3 }"), "c",
         expect=["'c'", "num_output"], at='name: "c"')
net_case("conv-no-kernel", layer("c", "Convolution", ("data",), ("c",),
                                 "convolution_param { num_output: 2 }"), "c",
         expect=["'c'", "kernel"])
net_case("conv-kernel-zero", layer("c", "Convolution", ("data",), ("c",),
                                   "convolution_param { num_output: 2 kernel_size: 0 }"), "c",
         expect=["'c'", "kernel"], at='name: "c"')
net_case("conv-stride-zero", layer("c", "Convolution", ("data",), ("c",),
                                   "convolution_param { num_output: 2 kernel_size: 3 stride: 0 }"),
         "c", expect=["'c'", "stride"], at='name: "c"')
net_case("conv-dilation-zero", layer("c", "Convolution", ("data",), ("c",),
                                     "convolution_param { num_output: 2 kernel_size: 3 dilation: 0 }"),
         "c", expect=["'c'", "dilation"], at='name: "c"')
net_case("conv-kernel-and-kernel-h", layer(
    "c", "Convolution", ("data",), ("c",),
    "convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3 }"), "c",
    expect=["'c'", "kernel"], at='name: "c"')
net_case("conv-kernel-h-only", layer("c", "Convolution", ("data",), ("c",),
                                     "convolution_param { num_output: 2 kernel_h: 3 }"), "c",
         expect=["'c'", "kernel"], at='name: "c"')
net_case("conv-group-not-dividing-channels", layer(
    "c", "Convolution", ("data",), ("c",), "convolution_param { num_output: 4 kernel_size: 3 group: 2 }"),
    "c", expect=["'c'", "group"])
net_case("conv-group-not-dividing-output", layer(
    "c", "Convolution", ("data",), ("c",), "convolution_param { num_output: 4 kernel_size: 3 group: 3 }"),
    "c", expect=["'c'", "group"])
net_case("conv-group-zero", layer("c", "Convolution", ("data",), ("c",),
                                  "convolution_param { num_output: 4 kernel_size: 3 group: 0 }"), "c",
         expect=["'c'", "group"], at='name: "c"')
net_case("conv-kernel-larger-than-input", layer(
    "c", "Convolution", ("data",), ("c",), "convolution_param { num_output: 2 kernel_size: 11 }"),
    "c", expect=["'c'"])
net_case("deconv-no-kernel", layer("d", "Deconvolution", ("data",), ("d",),
                                   "convolution_param { num_output: 2 }"), "d",
         expect=["'d'", "kernel"])
net_case("pool-no-kernel", layer("p", "Pooling", ("data",), ("p",), "pooling_param { pool: MAX }"),
         "p", expect=["'p'", "kernel"])
net_case("pool-kernel-zero", layer("p", "Pooling", ("data",), ("p",),
                                   "pooling_param { pool: MAX kernel_size: 0 }"), "p",
         expect=["'p'", "kernel"], at='name: "p"')
net_case("pool-stride-zero", layer("p", "Pooling", ("data",), ("p",),
                                   "pooling_param { pool: MAX kernel_size: 2 stride: 0 }"), "p",
         expect=["'p'", "stride"], at='name: "p"')
net_case("pool-pad-not-below-kernel", layer("p", "Pooling", ("data",), ("p",),
                                            "pooling_param { pool: MAX kernel_size: 2 pad: 2 }"), "p",
         expect=["'p'", "pad"], at='name: "p"')
net_case("pool-global-with-kernel", layer(
    "p", "Pooling", ("data",), ("p",), "pooling_param { pool: AVE global_pooling: true kernel_size: 2 }"),
    "p", expect=["'p'", "global_pooling"], at='name: "p"')
net_case("pool-kernel-larger-than-input", layer(
    "p", "Pooling", ("data",), ("p",), "pooling_param { pool: MAX kernel_size: 20 }"), "p",
    expect=["'p'"])
net_case("dropout-ratio-one", layer("d", "Dropout", ("data",), ("d",), "dropout_param { dropout_ratio: 1.0 }"),
         "d", expect=["'d'", "dropout_ratio"], at='name: "d"')
net_case("dropout-ratio-negative", layer("d", "Dropout", ("data",), ("d",),
                                         "dropout_param { dropout_ratio: -0.5 }"), "d",
         expect=["'d'", "dropout_ratio"], at='name: "d"')
net_case("lrn-even-size", layer("n", "LRN", ("data",), ("n",), "lrn_param { local_size: 4 }"), "n",
         expect=["'n'", "local_size"], at='name: "n"')
net_case("lrn-size-zero", layer("n", "LRN", ("data",), ("n",), "lrn_param { local_size: 0 }"), "n",
         expect=["'n'", "local_size"], at='name: "n"')
net_case("concat-axis-out-of-range", layer("c", "Concat", ("data", "data"), ("c",),
                                           "concat_param { axis: 7 }"), "c", expect=["'c'", "axis"])
net_case("concat-shape-mismatch", layer("f", "Flatten", ("data",), ("f",)) +
         layer("c", "Concat", ("data", "f"), ("c",)), "c", expect=["'c'"])
net_case("slice-points-not-increasing", layer(
    "s", "Slice", ("data",), ("s1", "s2", "s3"), "slice_param { axis: 1 slice_point: 2 slice_point: 1 }") +
    layer("sil", "Silence", ("s2", "s3"), ()), "s1", expect=["'s'", "slice_point"], at='name: "s"')
net_case("slice-point-count", layer(
    "s", "Slice", ("data",), ("s1", "s2"), "slice_param { axis: 1 slice_point: 1 slice_point: 2 }") +
    layer("sil", "Silence", ("s2",), ()), "s1", expect=["'s'", "slice_point"])
net_case("slice-point-beyond-axis", layer(
    "s", "Slice", ("data",), ("s1", "s2"), "slice_param { axis: 1 slice_point: 5 }") +
    layer("sil", "Silence", ("s2",), ()), "s1", expect=["'s'"])
net_case("eltwise-shape-mismatch", layer("f", "Flatten", ("data",), ("f",)) +
         layer("e", "Eltwise", ("data", "f"), ("e",)), "e", expect=["'e'"])
net_case("eltwise-coeff-count", layer("e", "Eltwise", ("data", "data"), ("e",),
                                      "eltwise_param { operation: SUM coeff: 1 }"), "e",
         expect=["'e'", "coeff"], at='name: "e"')
net_case("eltwise-coeff-with-prod", layer(
    "e", "Eltwise", ("data", "data"), ("e",), "eltwise_param { operation: PROD coeff: 1 coeff: 2 }"),
    "e", expect=["'e'", "coeff"], at='name: "e"')
net_case("reshape-two-inferred", layer("r", "Reshape", ("data",), ("r",),
                                       "reshape_param { shape { dim: -1 dim: -1 } }"), "r",
         expect=["'r'", "-1"], at='name: "r"')
net_case("reshape-count-mismatch", layer("r", "Reshape", ("data",), ("r",),
                                         "reshape_param { shape { dim: 5 dim: 7 } }"), "r",
         expect=["'r'"])
net_case("reshape-dim-below-minus-one", layer("r", "Reshape", ("data",), ("r",),
                                              "reshape_param { shape { dim: 4 dim: -2 } }"), "r",
         expect=["'r'", "-2"], at='name: "r"')
net_case("loss-label-count-mismatch", tail=ip("out", "data") + layer(
    "lab2", "DummyData", (), ("label2",), "dummy_data_param { shape { dim: 3 } }") +
    layer("loss", "SoftmaxWithLoss", ("out", "label2"), ("loss",)), expect=["'loss'"])
net_case("accuracy-top-k-too-large", tail=ip("out", "data") + LOSS + layer(
    "acc", "Accuracy", ("out", "label"), ("acc",), "accuracy_param { top_k: 10 }"),
    expect=["'acc'", "top_k"])
net_case("accuracy-top-k-zero", tail=ip("out", "data") + LOSS + layer(
    "acc", "Accuracy", ("out", "label"), ("acc",), "accuracy_param { top_k: 0 }"),
    expect=["'acc'", "top_k"], at='name: "acc"')
net_case("input-huge", data=layer("data", "Input", (), ("data", "label"),
                                  "input_param { shape { dim: 1000000 dim: 1000000 dim: 1000000 } "
                                  "shape { dim: 4 } }"),
         expect=["'data'", "elements"], at='name: "data"')
net_case("input-no-shape", data=layer("data", "Input", (), ("data",)), tail=ip("out", "data") +
         layer("sil", "Silence", ("out",), ()), expect=["'out'", "shape"])
net_case("input-shape-count", data=layer("data", "Input", (), ("data", "label"),
                                         "input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } "
                                         "shape { dim: 1 } }"),
         expect=["'data'", "shape"])
net_case("input-negative-dim", data=layer("data", "Input", (), ("data", "label"),
                                          "input_param { shape { dim: 4 dim: -3 } shape { dim: 4 } }"),
         expect=["'data'", "dim"], at='name: "data"')
net_case("dummy-shape-count", data=layer(
    "data", "DummyData", (), ("data", "label"),
    "dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } shape { dim: 2 } }"),
    expect=["'data'", "shape"])
net_case("dummy-huge", data=layer(
    "data", "DummyData", (), ("data", "label"),
    "dummy_data_param { shape { dim: 100000 dim: 100000 dim: 100000 } shape { dim: 4 } }"),
    expect=["'data'", "elements"], at='name: "data"')
net_case("include-and-exclude", layer("r", "ReLU", ("data",), ("r",),
                                      "include { phase: TRAIN } exclude { phase: TEST }"), "r",
         expect=["'r'", "include"])
net_case("propagate-down-count", layer("r", "ReLU", ("data",), ("r",),
                                       "propagate_down: true propagate_down: false"), "r",
         expect=["'r'", "propagate_down"])
net_case("param-specs-exceed-blobs", tail=layer(
    "out", "InnerProduct", ("data",), ("out",),
    'param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } '
    'inner_product_param { num_output: 3 }') + LOSS, expect=["'out'", "param"])
net_case("shared-param-shape-mismatch", ip("a", "data", 5, 'param { name: "w" }') +
         ip("b", "a", 3, 'param { name: "w" }'), "b", expect=["'w'"])
net_case("duplicate-param-layer-name", ip("fc", "data", 5) +
         layer("fc", "InnerProduct", ("fc",), ("fc2",), "inner_product_param { num_output: 4 }"), "fc2",
         expect=["'fc'", "name"], at='name: "fc"')
net_case("loss-weight-count", tail=ip("out", "data") + layer(
    "loss", "SoftmaxWithLoss", ("out", "label"), ("loss",), "loss_weight: 1 loss_weight: 2"),
    expect=["'loss'", "loss_weight"])
net_case("bottom-count", layer("r", "ReLU", ("data", "label"), ("r",)), "r", expect=["'r'", "bottom"])
net_case("top-count", layer("r", "ReLU", ("data",), ("r", "r2")), "r", expect=["'r'", "top"])
net_case("python-module-missing", layer(
    "py", "Python", ("data",), ("py",), 'python_param { module: "no_such_module_xyz" layer: "L" }'),
    "py", expect=["no_such_module_xyz"])
net_case("python-no-module", layer("py", "Python", ("data",), ("py",), "python_param { }"), "py",
         expect=["'py'", "module"])
net_case("batchnorm-eps-zero", layer("bn", "BatchNorm", ("data",), ("bn",),
                                     "batch_norm_param { eps: 0 }"), "bn",
         expect=["'bn'", "eps"], at='name: "bn"')
net_case("power-negative-base-fractional", layer("pw", "Log", ("data",), ("pw",),
                                                 "log_param { base: -2 }"), "pw",
         expect=["'pw'", "base"], at='name: "pw"')
net_case("threshold-on-missing-blob", layer("t", "Threshold", ("ghost",), ("t",)), "t",
         expect=["ghost"])
net_case("argmax-top-k-too-large", layer("am", "ArgMax", ("data",), ("am",),
                                         "argmax_param { top_k: 1000 }"), "am",
         expect=["'am'", "top_k"])
net_case("flatten-axis-range", layer("f", "Flatten", ("data",), ("f",), "flatten_param { axis: 9 }"),
         "f", expect=["'f'", "axis"])
net_case("softmax-axis-range", layer("s", "Softmax", ("data",), ("s",), "softmax_param { axis: 9 }"),
         "s", expect=["'s'", "axis"])
net_case("scale-shape-mismatch", layer("lab", "DummyData", (), ("sc",),
                                       "dummy_data_param { shape { dim: 7 } }") +
         layer("s", "Scale", ("data", "sc"), ("s",)), "s", expect=["'s'"])


def _net_file_case(cid, content, expect, mode="w"):
    def build(tmp):
        write(tmp, "net.prototxt", content, mode)
        s = write(tmp, "solver.prototxt", solver_text())
        return ["train", "--solver", s, "--cpu"], expect, None
    case("net", cid, build)


_net_file_case("not-utf8", b'name: "x"\xff\xfe layer {}', ["net.prototxt"], mode="wb")
_net_file_case("empty-net", "", ["net.prototxt", "layer"])
_net_file_case("layer-and-layers", 'layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }',
               ["net.prototxt", "layers"])
_net_file_case("input-dim-count", 'input: "data"\ninput_dim: 1\ninput_dim: 3\n' + ip("out", "data"),
               ["input_dim"])
_net_file_case("input-dim-without-input", 'input_dim: 1\ninput_dim: 3\n' + ip("out", "data"),
               ["input"])
_net_file_case("v0-unknown-type", 'layers { layer { name: "x" type: "warp" } top: "x" }',
               ["warp"])
_net_file_case("v1-unknown-enum", 'layers { name: "x" type: WARP }', ["net.prototxt:1"])


def _upgrade_case(cid, build_files, expect):
    def build(tmp):
        src, dst = build_files(tmp)
        return ["upgrade-net", src, dst], expect, None
    case("net", cid, build)


_upgrade_case("upgrade-missing-src", lambda t: (str(Path(t) / "nope.prototxt"), str(Path(t) / "o")),
              ["nope.prototxt"])
_upgrade_case("upgrade-dst-missing-folder",
              lambda t: (write(t, "n.prototxt", net_text()), str(Path(t) / "no" / "dir" / "o.prototxt")),
              ["o.prototxt"])
_upgrade_case("upgrade-dst-is-dir",
              lambda t: (write(t, "n.prototxt", net_text()), (Path(t) / "outdir").mkdir() or str(Path(t) / "outdir")), ["outdir"])
_upgrade_case("upgrade-bad-src",
              lambda t: (write(t, "n.prototxt", "layer { name: }"), str(Path(t) / "o")),
              ["n.prototxt:1"])


# ------------------------------------------------------------------------------------------------
# Solver prototxt
# ------------------------------------------------------------------------------------------------

solver_case("negative-base-lr", "", ["base_lr"], at="base_lr",
            text=solver_text().replace("base_lr: 0.01", "base_lr: -0.01"))
solver_case("negative-max-iter", "", ["max_iter"], at="max_iter",
            text=solver_text().replace("max_iter: 1", "max_iter: -5"))
solver_case("stepvalue-not-increasing", 'stepvalue: 100\nstepvalue: 50\n', ["stepvalue"],
            at="stepvalue: 50", text=solver_text().replace('"fixed"', '"multistep"') +
            "gamma: 0.1\nstepvalue: 100\nstepvalue: 50\n")
solver_case("stepvalue-repeated", "", ["stepvalue"], at=("stepvalue: 100", 2),
            text=solver_text().replace('"fixed"', '"multistep"') + "gamma: 0.1\nstepvalue: 100\nstepvalue: 100\n")
solver_case("multistep-no-stepvalue", "", ["stepvalue"],
            text=solver_text().replace('"fixed"', '"multistep"') + "gamma: 0.1\n")
solver_case("step-stepsize-zero", "", ["stepsize"],
            text=solver_text().replace('"fixed"', '"step"') + "gamma: 0.1\n")
solver_case("step-stepsize-negative", "", ["stepsize"], at="stepsize",
            text=solver_text().replace('"fixed"', '"step"') + "gamma: 0.1\nstepsize: -10\n")
solver_case("unknown-lr-policy", "", ["lr_policy", "wobble"], at="lr_policy",
            text=solver_text().replace('"fixed"', '"wobble"'))
solver_case("unknown-type", 'type: "Sgdd"\n', ["Sgdd"], at="type:")
solver_case("solver-type-conflict", 'type: "Adam"\nsolver_type: NESTEROV\n', ["solver_type"])
solver_case("test-interval-without-test-iter", "test_interval: 10\n", ["test_interval", "test_iter"],
            at="test_interval")
solver_case("test-iter-without-interval", "test_iter: 2\n", ["test_interval"])
solver_case("test-iter-zero", "test_iter: 0\ntest_interval: 5\n", ["test_iter"], at="test_iter")
solver_case("test-iter-negative", "test_iter: -2\ntest_interval: 5\n", ["test_iter"], at="test_iter")
solver_case("test-interval-negative", "test_iter: 2\ntest_interval: -5\n", ["test_interval"],
            at="test_interval")
solver_case("test-iter-count-vs-test-net", "", ["test_iter"],
            text=solver_text().replace('net: "net.prototxt"', 'train_net: "net.prototxt"\n'
                                       'test_net: "net.prototxt"') + "test_iter: 1\ntest_iter: 2\ntest_interval: 5\n")
solver_case("test-state-count", 'test_iter: 1\ntest_interval: 5\ntest_state { stage: "a" }\n'
            'test_state { stage: "b" }\n', ["test_state"])
solver_case("no-net", "", ["net"], text=solver_text().replace('net: "net.prototxt"\n', ""))
solver_case("net-file-missing", "", ["nonexistent.prototxt"],
            text=solver_text(net="nonexistent.prototxt"))
solver_case("two-nets", 'train_net: "net.prototxt"\n', ["train_net"])
solver_case("test-net-missing", "", ["missing_test.prototxt"],
            text=solver_text().replace('net: "net.prototxt"', 'train_net: "net.prototxt"\n'
                                       'test_net: "missing_test.prototxt"') + "test_iter: 1\ntest_interval: 5\n")
solver_case("regularization-type", 'regularization_type: "L3"\n', ["regularization_type", "L3"],
            at="regularization_type")
solver_case("iter-size-zero", "iter_size: 0\n", ["iter_size"], at="iter_size")
solver_case("average-loss-zero", "average_loss: 0\n", ["average_loss"], at="average_loss")
solver_case("negative-weight-decay", "weight_decay: -0.1\n", ["weight_decay"], at="weight_decay")
solver_case("negative-momentum", "", ["momentum"], at="momentum",
            text=solver_text().replace("momentum: 0.9", "momentum: -0.9"))
solver_case("adagrad-with-momentum", 'type: "AdaGrad"\n', ["momentum", "AdaGrad"])
solver_case("rmsprop-with-momentum", 'type: "RMSProp"\n', ["momentum", "RMSProp"])
solver_case("rmsprop-decay-out-of-range", "", ["rms_decay"], at="rms_decay",
            text=solver_text().replace("momentum: 0.9\n", "") + 'type: "RMSProp"\nrms_decay: 1.5\n')
solver_case("adam-beta2-one", 'type: "Adam"\nmomentum2: 1.0\n', ["momentum2"], at="momentum2")
solver_case("adam-delta-zero", 'type: "Adam"\ndelta: 0\n', ["delta"], at="delta")
solver_case("negative-snapshot", "snapshot: -3\n", ["snapshot"], at="snapshot: -3")
solver_case("negative-display", "", ["display"], at="display",
            text=solver_text().replace("display: 0", "display: -1"))
solver_case("negative-gamma-inv", "", ["gamma"], at="gamma",
            text=solver_text().replace('"fixed"', '"inv"') + "gamma: -0.1\npower: 0.75\n")
solver_case("poly-without-max-iter", "", ["max_iter"],
            text=solver_text().replace('"fixed"', '"poly"').replace("max_iter: 1\n", "") + "power: 1\n")
solver_case("syntax-error", "base_lr 0.1 {\n", ["solver.prototxt:"])
solver_case("unknown-field", "learning_rate: 0.1\n", ["learning_rate"], at="learning_rate")
solver_case("bad-enum", "snapshot_format: ZIP\n", ["ZIP"], at="snapshot_format")
solver_case("string-for-float", 'base_lr: "fast"\n', ["solver.prototxt:"])
solver_case("weights-field-missing", 'weights: "absent.caffemodel"\n', ["absent.caffemodel"])
solver_case("inline-net-bad", "", ["Nope", "solver.prototxt:1"],
            text=solver_text().replace('net: "net.prototxt"', 'net_param { layer { name: "x" type: "Nope" } }'))


def _solver_file_case(cid, make, expect):
    def build(tmp):
        s = make(tmp)
        write(tmp, "net.prototxt", net_text())
        return ["train", "--solver", s, "--cpu"], expect, None
    case("solver", cid, build)


def _blocker(tmp):
    s = write(tmp, "solver.prototxt", solver_text().replace('snapshot_prefix: "snap/tiny"',
                                                             'snapshot_prefix: "blocker/sub/tiny"') + "snapshot: 1\n")
    write(tmp, "blocker", "a file where a folder should be")
    return s


_solver_file_case("snapshot-prefix-unwritable", _blocker, ["blocker", "snapshot_prefix", "solver.prototxt:8"])
_solver_file_case("missing", lambda t: str(Path(t) / "absent_solver.prototxt"), ["absent_solver.prototxt"])
_solver_file_case("is-directory", lambda t: str(Path(t)), ["--solver"])
_solver_file_case("not-utf8", lambda t: write(t, "solver.prototxt", b"net: \xff\xfe", "wb"),
                  ["solver.prototxt"])
_solver_file_case("binary-garbage", lambda t: write(t, "solver.prototxt", bytes(range(256)), "wb"),
                  ["solver.prototxt"])
_solver_file_case("empty", lambda t: write(t, "solver.prototxt", ""), ["solver.prototxt", "net"])


# ------------------------------------------------------------------------------------------------
# Hosts files
# ------------------------------------------------------------------------------------------------

def hosts_case(cid, content, expect, flags=(), env=None, mode="w", line=None):
    def build(tmp):
        args = train_args(tmp)
        h = write(tmp, "hosts.txt", content, mode) if content is not None else str(Path(tmp) / "hosts.txt")
        exp = list(expect) + ([f"hosts.txt:{line}"] if line else [])
        return args + ["--hosts", h, *(f.replace("{tmp}", str(tmp)) for f in flags)], exp, env
    case("hosts", cid, build)


hosts_case("missing-file", None, ["hosts.txt"])
hosts_case("empty", "", ["hosts.txt", "no hosts"])
hosts_case("only-comments", "# nothing\n\n", ["hosts.txt", "no hosts"])
hosts_case("two-columns", "0 127.0.0.1\n", ["hosts.txt"], line=1)
hosts_case("four-columns", "0 127.0.0.1 9000 extra\n", ["hosts.txt"], line=1)
hosts_case("id-not-int", "zero 127.0.0.1 9000\n", ["zero"], line=1)
hosts_case("port-not-int", "0 127.0.0.1 http\n", ["http"], line=1)
hosts_case("port-zero", "0 127.0.0.1 0\n", ["port"], line=1)
hosts_case("port-too-big", "0 127.0.0.1 70000\n", ["70000"], line=1)
hosts_case("negative-id", "-1 127.0.0.1 9000\n", ["-1"], line=1)
hosts_case("duplicate-id", "0 127.0.0.1 9000\n0 127.0.0.1 9001\n", ["client id 0"], line=2)
hosts_case("duplicate-address", "0 127.0.0.1 9000\n1 127.0.0.1 9000\n", ["9000"], line=2)
hosts_case("id-gap", "0 127.0.0.1 9000\n2 127.0.0.1 9001\n", ["hosts.txt", "missing"])
hosts_case("unresolvable", "0 no-such-host.invalid 9000\n", ["no-such-host.invalid"], line=1)
hosts_case("not-utf8", b"0 127.0.0.1 9000\n1 127.0.0.\xff 9001\n", ["hosts.txt"], mode="wb")
hosts_case("binary", bytes(range(1, 200)), ["hosts.txt"], mode="wb")
hosts_case("client-id-out-of-range", "0 127.0.0.1 9000\n", ["--client-id"], flags=("--client-id", "5"))
hosts_case("client-id-negative", "0 127.0.0.1 9000\n", ["--client-id"], flags=("--client-id", "-1"))
hosts_case("env-rank-not-int", "0 127.0.0.1 9000\n", ["OMPI_COMM_WORLD_RANK"],
           env={"OMPI_COMM_WORLD_RANK": "first"})
hosts_case("env-rank-out-of-range", "0 127.0.0.1 9000\n", ["SLURM_PROCID"], env={"SLURM_PROCID": "4"})
hosts_case("remote-without-client-id", "0 10.255.255.1 9000\n1 10.255.255.2 9000\n",
           ["hosts.txt", "--client-id"])
hosts_case("negative-staleness", "0 127.0.0.1 9000\n", ["--staleness"], flags=("--staleness", "-1"))
hosts_case("negative-deadline", "0 127.0.0.1 9000\n", ["--deadline"], flags=("--deadline", "-5"))
hosts_case("zero-deadline", "0 127.0.0.1 9000\n", ["--deadline"], flags=("--deadline", "0"))
hosts_case("workers-per-client-zero", "0 127.0.0.1 9000\n", ["--workers-per-client"],
           flags=("--workers-per-client", "0"))
hosts_case("secret-file-missing", "0 127.0.0.1 9000\n", ["--secret-file", "cannot read"],
           flags=("--secret-file", "no-such.secret"))
hosts_case("secret-file-short", "0 127.0.0.1 9000\n", ["--secret-file", "fewer than 16"],
           flags=("--secret-file", "{tmp}/short.secret"))
_short_secret = CASES[-1].values[0]
CASES[-1] = pytest.param(lambda tmp: (write(tmp, "short.secret", "tiny\n"), _short_secret(tmp))[1],
                         id="hosts-secret-file-short")
hosts_case("secret-env-short", "0 127.0.0.1 9000\n", ["POSEIDON_SECRET", "fewer than 16"],
           env={"POSEIDON_SECRET": "abc"})
hosts_case("client-without-secret", "0 127.0.0.1 9000\n", ["no job secret", "--secret-file"],
           flags=("--client-id", "0"))
hosts_case("tls-cert-alone", "0 127.0.0.1 9000\n", ["--tls-key", "--tls-ca"],
           flags=("--tls-cert", "{tmp}/hosts.txt"))
hosts_case("tls-ca-unreadable", "0 127.0.0.1 9000\n", ["--tls-ca", "cannot read"],
           flags=("--tls-cert", "{tmp}/hosts.txt", "--tls-key", "{tmp}/hosts.txt", "--tls-ca",
                  "{tmp}/no-ca.pem"))
hosts_case("hosts-is-directory", None, ["--hosts"])
CASES[-1] = pytest.param(lambda tmp: (train_args(tmp) + ["--hosts", str(tmp)], ["--hosts"], None),
                         id="hosts-hosts-is-directory")
hosts_case("ipv6-port-missing", "0 ::1\n", ["hosts.txt"], line=1)
hosts_case("port-negative", "0 127.0.0.1 -9000\n", ["-9000"], line=1)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def data_layer(source, backend="LMDB", batch=4, transform=""):
    return (layer("data", "Data", (), ("data", "label"),
                  f'{transform} data_param {{ source: "{source}" batch_size: {batch} backend: {backend} }}'))


def make_lmdb(path, n=6, shape=(1, 4, 4), raw=None):
    from poseidon_cli.data.datum import array_to_datum
    from poseidon_cli.data.lmdb_source import AtomicLMDBWriter
    with AtomicLMDBWriter(path) as w:
        for i in range(n):
            if raw is not None:
                w.put(f"{i:08d}".encode(), raw)
            else:
                d = array_to_datum(np.full(shape, i, np.uint8), label=i % 2)
                w.put(f"{i:08d}".encode(), d.SerializeToString())
    return str(path)


def data_case(cid, make_net, expect, flags=()):
    def build(tmp):
        text = make_net(Path(tmp))
        return train_args(tmp, net=text) + list(flags), expect, None
    case("data", cid, build)


data_case("lmdb-missing", lambda t: net_text(data=data_layer(str(t / "no_lmdb"))), ["no_lmdb"])
data_case("lmdb-empty-dir", lambda t: (t / "empty_db").mkdir() or net_text(data=data_layer(str(t / "empty_db"))),
          ["empty_db"])
data_case("lmdb-is-file", lambda t: write(t, "flat_db", "x") and net_text(data=data_layer(str(t / "flat_db"))),
          ["flat_db"])
data_case("lmdb-zero-records", lambda t: make_lmdb(t / "zero_db", n=0) and net_text(data=data_layer(str(t / "zero_db"))),
          ["zero_db"])
data_case("lmdb-not-datum", lambda t: make_lmdb(t / "junk_db", raw=b"\xff\xff\xff\xff") and
          net_text(data=data_layer(str(t / "junk_db"))), ["junk_db"])
data_case("leveldb-dir", lambda t: write(t, "ldb/CURRENT", "MANIFEST-000001\n") and
          net_text(data=data_layer(str(t / "ldb"), "LEVELDB")), ["ldb"])
data_case("batch-size-zero", lambda t: make_lmdb(t / "db") and net_text(data=data_layer(str(t / "db"), batch=0)),
          ["batch_size"])
data_case("mean-file-missing", lambda t: make_lmdb(t / "db") and net_text(
    data=data_layer(str(t / "db"), transform=f'transform_param {{ mean_file: "{t}/nomean.binaryproto" }}')),
    ["nomean.binaryproto"])
data_case("mean-file-garbage", lambda t: make_lmdb(t / "db") and write(t, "mean.binaryproto", b"\xff" * 40, "wb")
          and net_text(data=data_layer(str(t / "db"),
                                       transform=f'transform_param {{ mean_file: "{t}/mean.binaryproto" }}')),
          ["mean.binaryproto"])


def _mean_file(t, shape):
    from poseidon_cli.io import array_to_blobproto
    write(t, "mean.binaryproto", array_to_blobproto(np.zeros(shape, np.float32)).SerializeToString(), "wb")
    return str(t / "mean.binaryproto")


data_case("mean-file-wrong-shape", lambda t: make_lmdb(t / "db") and net_text(data=data_layer(
    str(t / "db"), transform=f'transform_param {{ mean_file: "{_mean_file(t, (1, 3, 9, 9))}" }}')),
    ["mean"])
data_case("mean-file-and-value", lambda t: make_lmdb(t / "db") and net_text(data=data_layer(
    str(t / "db"), transform=f'transform_param {{ mean_file: "{_mean_file(t, (1, 1, 4, 4))}" mean_value: 3 }}')),
    ["mean_value"])
data_case("mean-value-count", lambda t: make_lmdb(t / "db", shape=(3, 4, 4)) and net_text(data=data_layer(
    str(t / "db"), transform='transform_param { mean_value: 1 mean_value: 2 }')), ["mean_value"])
data_case("crop-larger-than-image", lambda t: make_lmdb(t / "db") and net_text(data=data_layer(
    str(t / "db"), transform='transform_param { crop_size: 9 }')), ["crop_size"])
data_case("datum-shapes-differ", lambda t: _mixed_db(t) and net_text(data=data_layer(str(t / "mixed"))),
          ["mixed"])


def _mixed_db(t):
    from poseidon_cli.data.datum import array_to_datum
    from poseidon_cli.data.lmdb_source import AtomicLMDBWriter
    with AtomicLMDBWriter(str(t / "mixed")) as w:
        for i in range(6):
            shape = (1, 4, 4) if i % 2 == 0 else (1, 5, 5)
            w.put(f"{i:08d}".encode(), array_to_datum(np.zeros(shape, np.uint8), 0).SerializeToString())
    return True


def image_layer(source, extra=""):
    return layer("data", "ImageData", (), ("data", "label"),
                 f'image_data_param {{ source: "{source}" batch_size: 2 {extra} }}')


data_case("imagelist-missing", lambda t: net_text(data=image_layer(str(t / "list.txt"))), ["list.txt"])
data_case("imagelist-empty", lambda t: write(t, "list.txt", "") and net_text(data=image_layer(str(t / "list.txt"))),
          ["list.txt"])
data_case("imagelist-bad-label", lambda t: write(t, "list.txt", "a.png cat\n") and
          net_text(data=image_layer(str(t / "list.txt"))), ["list.txt"])
data_case("imagelist-image-missing", lambda t: write(t, "list.txt", "missing.png 0\n") and
          net_text(data=image_layer(str(t / "list.txt"), f'root_folder: "{t}/"')), ["missing.png"])
data_case("imagelist-image-garbage", lambda t: write(t, "bad.png", b"not a png", "wb") and
          write(t, "list.txt", "bad.png 0\n") and
          net_text(data=image_layer(str(t / "list.txt"), f'root_folder: "{t}/"')), ["bad.png"])


def _h5(t, name, **datasets):
    import h5py
    with h5py.File(t / name, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return str(t / name)


def h5_layer(source, batch=2):
    return layer("data", "HDF5Data", (), ("data", "label"),
                 f'hdf5_data_param {{ source: "{source}" batch_size: {batch} }}')


data_case("hdf5-list-missing", lambda t: net_text(data=h5_layer(str(t / "h5list.txt"))), ["h5list.txt"])
data_case("hdf5-list-empty", lambda t: write(t, "h5list.txt", "\n") and
          net_text(data=h5_layer(str(t / "h5list.txt"))), ["h5list.txt"])
data_case("hdf5-file-missing", lambda t: write(t, "h5list.txt", f"{t}/none.h5\n") and
          net_text(data=h5_layer(str(t / "h5list.txt"))), ["none.h5"])
data_case("hdf5-not-hdf5", lambda t: write(t, "fake.h5", "plain text") and write(t, "h5list.txt", f"{t}/fake.h5\n")
          and net_text(data=h5_layer(str(t / "h5list.txt"))), ["fake.h5"])
data_case("hdf5-dataset-missing", lambda t: _h5(t, "d.h5", data=np.zeros((4, 3), np.float32)) and
          write(t, "h5list.txt", f"{t}/d.h5\n") and net_text(data=h5_layer(str(t / "h5list.txt"))), ["label"])
data_case("hdf5-row-mismatch", lambda t: _h5(t, "d.h5", data=np.zeros((4, 3), np.float32),
                                             label=np.zeros((3,), np.float32)) and
          write(t, "h5list.txt", f"{t}/d.h5\n") and net_text(data=h5_layer(str(t / "h5list.txt"))), ["d.h5"])
data_case("hdf5-batch-zero", lambda t: _h5(t, "d.h5", data=np.zeros((4, 3), np.float32),
                                           label=np.zeros((4,), np.float32)) and
          write(t, "h5list.txt", f"{t}/d.h5\n") and net_text(data=h5_layer(str(t / "h5list.txt"), 0)),
          ["batch_size"])
data_case("hdf5-list-is-h5", lambda t: _h5(t, "d.h5", data=np.zeros((4, 3), np.float32),
                                           label=np.zeros((4,), np.float32)) and
          net_text(data=h5_layer(str(t / "d.h5"))), ["d.h5"])
data_case("hdf5-string-dataset", lambda t: _h5(t, "d.h5", data=np.array([b"a", b"b"]),
                                               label=np.zeros((2,), np.float32)) and
          write(t, "h5list.txt", f"{t}/d.h5\n") and net_text(data=h5_layer(str(t / "h5list.txt"))), ["data"])
data_case("memorydata-zero-batch", lambda t: net_text(data=layer(
    "data", "MemoryData", (), ("data", "label"),
    "memory_data_param { batch_size: 0 channels: 1 height: 2 width: 2 }")), ["batch_size"])


def data_tool_case(cid, make_args, expect):
    def build(tmp):
        return ["data", *make_args(Path(tmp))], expect, None
    case("data", cid, build)


data_tool_case("compute-mean-missing-db", lambda t: ["compute-mean", str(t / "nodb"), str(t / "m.binaryproto")],
               ["nodb"])
data_tool_case("compute-mean-out-folder-missing", lambda t: [
    "compute-mean", make_lmdb(t / "db"), str(t / "no" / "dir" / "m.binaryproto")], ["no/dir"])
data_tool_case("inspect-missing-db", lambda t: ["inspect", str(t / "nodb")], ["nodb"])
data_tool_case("partition-zero-parts", lambda t: ["partition", make_lmdb(t / "db"), "--parts", "0"], ["--parts"])
data_tool_case("convert-mnist-missing", lambda t: ["convert-mnist", str(t / "imgs"), str(t / "labs"),
                                                    str(t / "out")], ["imgs"])
data_tool_case("convert-mnist-bad-magic", lambda t: [
    "convert-mnist", write(t, "imgs", struct.pack(">IIII", 1234, 1, 2, 2) + b"\0" * 4, "wb"),
    write(t, "labs", struct.pack(">II", 2049, 1) + b"\0", "wb"), str(t / "out")], ["imgs"])
data_tool_case("convert-imageset-list-missing", lambda t: ["convert-imageset", str(t), str(t / "nolist.txt"),
                                                            str(t / "out")], ["nolist.txt"])
data_tool_case("convert-imageset-out-exists", lambda t: [
    "convert-imageset", str(t), write(t, "l.txt", "a.png 0\n"), make_lmdb(t / "existing")], ["existing"])
data_tool_case("convert-cifar-missing", lambda t: ["convert-cifar10", str(t / "nocifar"), str(t)],
               ["nocifar"])
data_tool_case("digits-bad-size", lambda t: ["digits", str(t / "out"), "--size", "0"], ["--size"])


# ------------------------------------------------------------------------------------------------
# Weights and snapshots
# ------------------------------------------------------------------------------------------------

def weights_case(cid, make, expect, command="train"):
    def build(tmp):
        t = Path(tmp)
        flag, value = make(t)
        if command == "train":
            return train_args(tmp) + [flag, value], expect, None
        model = write(tmp, "net.prototxt", net_text())
        return ["test", "--model", model, "--cpu", "--iterations", "1", flag, value], expect, None
    case("weights", cid, build)


def _model(t, name="m.caffemodel", layer_name="out", shape=(3, 192), blobs=2):
    from poseidon_cli._proto import caffe_pb2
    from poseidon_cli.io import array_to_blobproto
    net = caffe_pb2.NetParameter(name="tiny")
    lp = net.layer.add(name=layer_name, type="InnerProduct")
    shapes = [shape, (shape[0],)][:blobs] if blobs <= 2 else [shape, (shape[0],), (1,)]
    for s in shapes:
        lp.blobs.add().CopyFrom(array_to_blobproto(np.zeros(s, np.float32)))
    write(t, name, net.SerializeToString(), "wb")
    return str(t / name)


for _cmd in ("train", "test"):
    weights_case(f"{_cmd}-missing", lambda t: ("--weights", str(t / "gone.caffemodel")), ["gone.caffemodel"], _cmd)
    weights_case(f"{_cmd}-garbage", lambda t: ("--weights", write(t, "g.caffemodel", b"\xff" * 64, "wb")),
                 ["g.caffemodel"], _cmd)
    weights_case(f"{_cmd}-text-file", lambda t: ("--weights", write(t, "t.caffemodel", net_text())),
                 ["t.caffemodel"], _cmd)
    weights_case(f"{_cmd}-no-matching-layer", lambda t: ("--weights", _model(t, layer_name="zzz")),
                 ["m.caffemodel", "name"], _cmd)
    weights_case(f"{_cmd}-shape-mismatch", lambda t: ("--weights", _model(t, shape=(7, 9))),
                 ["m.caffemodel", "out"], _cmd)
    weights_case(f"{_cmd}-blob-count", lambda t: ("--weights", _model(t, blobs=3)),
                 ["m.caffemodel", "out"], _cmd)
    weights_case(f"{_cmd}-empty-file", lambda t: ("--weights", write(t, "e.caffemodel", b"", "wb")),
                 ["e.caffemodel"], _cmd)
    weights_case(f"{_cmd}-mean-file", lambda t: ("--weights", _mean_file(t, (1, 3, 8, 8))),
                 ["mean.binaryproto"], _cmd)
    weights_case(f"{_cmd}-directory", lambda t: ("--weights", str(t)), ["--weights"], _cmd)
    weights_case(f"{_cmd}-h5-garbage", lambda t: ("--weights", write(t, "w.h5", b"nothdf5", "wb")),
                 ["w.h5"], _cmd)

weights_case("list-second-missing", lambda t: ("--weights", _model(t) + "," + str(t / "second.caffemodel")),
             ["second.caffemodel"])
weights_case("snapshot-missing", lambda t: ("--snapshot", str(t / "none.solverstate")), ["none.solverstate"])
weights_case("snapshot-garbage", lambda t: ("--snapshot", write(t, "g.solverstate", b"\xff" * 32, "wb")),
             ["g.solverstate"])
weights_case("snapshot-is-caffemodel", lambda t: ("--snapshot", _model(t, "x.solverstate")), ["x.solverstate"])


def _state(t, learned="", history=0, iter_=1):
    from poseidon_cli._proto import caffe_pb2
    from poseidon_cli.io import array_to_blobproto
    st = caffe_pb2.SolverState(iter=iter_, learned_net=learned)
    for _ in range(history):
        st.history.add().CopyFrom(array_to_blobproto(np.zeros((3, 192), np.float32)))
    write(t, "s.solverstate", st.SerializeToString(), "wb")
    return str(t / "s.solverstate")


weights_case("snapshot-learned-net-missing", lambda t: ("--snapshot", _state(t, learned=str(t / "lost.caffemodel"))),
             ["lost.caffemodel"])
weights_case("snapshot-history-count", lambda t: ("--snapshot", _state(t, history=5)), ["s.solverstate", "history"])
weights_case("snapshot-history-shape", lambda t: ("--snapshot", _state(t, history=2)), ["s.solverstate", "history"])
weights_case("snapshot-negative-iter", lambda t: ("--snapshot", _state(t, iter_=-4)), ["s.solverstate", "iter"])


# ------------------------------------------------------------------------------------------------
# Flags
# ------------------------------------------------------------------------------------------------

def flag_case(cid, flags, expect, command=None):
    def build(tmp):
        if command is None:
            return train_args(tmp, flags=flags), expect, None
        model = write(tmp, "net.prototxt", net_text())
        args = [a.replace("{model}", model).replace("{tmp}", str(tmp)) for a in command]
        return args, expect, None
    case("flags", cid, build)


flag_case("cpu-and-gpu", ("--gpu", "0"), ["--cpu", "--gpu"])
flag_case("snapshot-and-weights", ("--snapshot", "a.solverstate", "--weights", "b.caffemodel"),
          ["--snapshot", "--weights"])
flag_case("staleness-negative-local", ("--staleness", "-1"), ["--staleness"])
flag_case("deadline-negative-local", ("--deadline", "-5"), ["--deadline"])
flag_case("deadline-zero-local", ("--deadline", "0"), ["--deadline"])
flag_case("workers-per-client-negative-local", ("--workers-per-client", "-2"), ["--workers-per-client"])
flag_case("client-id-without-hosts", ("--client-id", "1"), ["--client-id", "--hosts"])
flag_case("output-dir-is-file", (), ["--output-dir"])
CASES[-1] = pytest.param(lambda tmp: (train_args(tmp, flags=("--output-dir", write(tmp, "afile", "x"))),
                                      ["--output-dir"], None), id="flags-output-dir-is-file")
flag_case("output-dir-under-file", (), ["--output-dir"])
CASES[-1] = pytest.param(lambda tmp: (train_args(tmp, flags=(
    "--output-dir", os.path.join(write(tmp, "afile", "x"), "sub"))), ["--output-dir"], None),
    id="flags-output-dir-under-file")
flag_case("staleness-not-int", ("--staleness", "x"), ["--staleness"])
flag_case("svb-bad-choice", ("--svb", "maybe"), ["--svb"])
flag_case("sigint-effect-bad", ("--sigint-effect", "explode"), ["--sigint-effect"])
flag_case("unknown-option", ("--frobnicate",), ["--frobnicate"])
flag_case("deadline-not-number", ("--deadline", "soon"), ["--deadline"])
flag_case("missing-solver", (), ["--solver"], command=("train", "--cpu"))
flag_case("unknown-command", (), ["trian"], command=("trian",))
flag_case("test-iterations-zero", (), ["--iterations"],
          command=("test", "--model", "{model}", "--weights", "w.caffemodel", "--iterations", "0", "--cpu"))
flag_case("test-model-missing", (), ["nomodel.prototxt"],
          command=("test", "--model", "{tmp}/nomodel.prototxt", "--weights", "w", "--cpu"))
flag_case("test-missing-weights-flag", (), ["--weights"], command=("test", "--model", "{model}", "--cpu"))
flag_case("time-iterations-zero", (), ["--iterations"],
          command=("time", "--model", "{model}", "--iterations", "0", "--cpu"))
flag_case("time-iterations-negative", (), ["--iterations"],
          command=("time", "--model", "{model}", "--iterations", "-3", "--cpu"))
flag_case("time-model-missing", (), ["nomodel.prototxt"],
          command=("time", "--model", "{tmp}/nomodel.prototxt", "--cpu"))
flag_case("time-phase-bad", (), ["--phase"], command=("time", "--model", "{model}", "--phase", "VAL"))
flag_case("gpu-not-an-id", (), ["--gpu"], command=("time", "--model", "{model}", "--gpu", "first"))
flag_case("time-cpu-and-gpu", (), ["--cpu", "--gpu"],
          command=("time", "--model", "{model}", "--cpu", "--gpu", "0"))


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------

def check_result(code, stderr, expect, label):
    assert "Traceback" not in stderr, f"{label}: traceback\n{stderr}"
    assert code == 2, f"{label}: exit code {code}, wanted 2\n{stderr}"
    errors = [ln for ln in stderr.splitlines() if "error:" in ln.lower()]
    assert len(errors) == 1, f"{label}: {len(errors)} error lines\n{stderr}"
    line = errors[0]
    assert line.startswith("poseidon: error: "), f"{label}: {line!r}"
    for want in expect or []:
        assert want in line, f"{label}: {want!r} not named in {line!r}"
    assert any(w in line.lower() for w in ACTION_WORDS), f"{label}: says nothing to do: {line!r}"


@pytest.mark.parametrize("build", CASES)
def test_bad_input(build, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    argv, expect, env = build(tmp_path)
    result = CliRunner().invoke(main, argv, env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback
        tb = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"{request.node.callspec.id}: uncaught {result.exception!r}\n{tb}\n{result.stderr}")
    check_result(result.exit_code, result.stderr, expect, request.node.callspec.id)


def test_corpus_size():
    assert len(CASES) >= 150
    cats = {p.id.split("-", 1)[0] for p in CASES}
    assert cats == {"net", "solver", "hosts", "data", "weights", "flags"}


def test_console_script_prints_the_same_one_line(tmp_path):
    """The installed script (not CliRunner) exits 2 with one line, for a runtime-data mistake."""
    args = train_args(tmp_path, net=net_text(data=data_layer(str(tmp_path / "no_lmdb"))))
    exe = Path(sys.executable).with_name("poseidon")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "poseidon_cli.cli"]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    check_result(proc.returncode, proc.stderr, ["no_lmdb"], "console-script")
