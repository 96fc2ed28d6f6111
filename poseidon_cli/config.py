"""Reading Caffe's files: net / solver prototxt (text), .caffemodel / .binaryproto / .solverstate
(binary), with the legacy-format upgrades Caffe applies, and path resolution.

Public contract:
- ``read_text(path, message)`` / ``read_binary(path, message)``: parse into ``message`` (a protobuf
  instance) and return it; any problem raises ``ConfigError`` with ``file:line:col`` where known.
- ``load_net_param(path)``: a prototxt in any format (V0, V1 ``layers``, current ``layer``) upgraded
  to the current format, relative data paths resolved (see ``resolve_path``).
- ``load_solver_param(path)``: SolverParameter with ``solver_type`` upgraded to ``type`` and the
  ``net``/``train_net``/``test_net``/``snapshot_prefix`` paths resolved.
- ``load_caffemodel(path)`` / ``load_blobproto(path)`` / ``load_solverstate(path)``.
- ``upgrade_net(net)``: in-place upgrade (V0 -> V1, data transform fields, V1 -> current,
  legacy ``input``/``input_dim``/``input_shape`` -> an Input layer, BatchNorm param specs), returns
  ``net``. Idempotent: upgrading an upgraded net changes nothing.
- ``upgrade_solver(solver)``: legacy ``solver_type`` enum -> ``type`` string.
- ``resolve_path(path, base_dir)``: ``CAFFE_ROOT``/``POSEIDON_ROOT`` at the start of a path are
  replaced by that environment variable when it is set; a relative path is taken relative to the
  prototxt's folder, unless it exists only relative to the working directory (Caffe's own rule,
  which the BVLC example files rely on).
- ``resolve_snapshot_prefix(prefix, base_dir)``: relative to the working directory as in Caffe
  when the prefix's folder exists there, else beside the solver file.
"""
from __future__ import annotations

import os
import re

from google.protobuf import message as pb_message
from google.protobuf import text_format

from . import net_checks
from ._proto import caffe_pb2
from .errors import ConfigError

# ------------------------------------------------------------------------------------------------
# Parsing
# ------------------------------------------------------------------------------------------------

_LOC = re.compile(r"^(\d+):(\d+)\s*:\s*(.*)$", re.S)


def _hint_for(msg: str) -> str:
    if "has no field named" in msg:
        return ("check the spelling against Caffe's caffe.proto; Poseidon-only fields are "
                "shared_file_system in data_param/image_data_param")
    if "Expected" in msg or "Couldn't parse" in msg:
        return "check the value's type and the surrounding braces"
    return "fix the file and run again"


def read_text(path, message):
    """Parse prototxt ``path`` into protobuf ``message``; ConfigError names file:line:col."""
    return read_text_source(path, message)[0]


def read_text_source(path, message):
    """``read_text`` that also returns the file's text: ``(message, text)``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", "check the path") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read as prototxt text ({exc.__class__.__name__})",
                          "give a text .prototxt file") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: holds NUL bytes, not prototxt text",
                          "give a text .prototxt file (is it a binary .caffemodel?)")
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        msg = str(exc)
        m = _LOC.match(msg)
        where = f"{path}:{m.group(1)}:{m.group(2)}" if m else path
        detail = m.group(3) if m else msg
        raise ConfigError(f"{where}: {detail.strip()}", _hint_for(detail)) from None
    return message, text


def read_binary(path, message, what: str | None = None):
    """Parse binary protobuf ``path`` into ``message``; ConfigError if it is not that message."""
    path = os.fspath(path)
    what = what or message.DESCRIPTOR.name
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file", "check the path") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    try:
        message.ParseFromString(data)
    except (pb_message.DecodeError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a binary {what} ({exc})",
                          "is it a text prototxt or a different kind of file?") from None
    return message


def write_text(message, path):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text_format.MessageToString(message))


def write_binary(message, path):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(message.SerializeToString())
    os.replace(tmp, path)  # a reader never sees a half-written snapshot


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------

_PLACEHOLDERS = ("CAFFE_ROOT", "POSEIDON_ROOT")


def expand_placeholders(path: str) -> str:
    for name in _PLACEHOLDERS:
        if path == name or path.startswith(name + "/"):
            value = os.environ.get(name)
            if value:
                return value.rstrip("/") + path[len(name):]
    return path


def resolve_path(path: str, base_dir: str | None) -> str:
    """See module docstring. Empty paths stay empty."""
    if not path:
        return path
    path = expand_placeholders(path)
    if os.path.isabs(path) or base_dir is None:
        return path
    beside = os.path.normpath(os.path.join(base_dir, path))
    if not os.path.exists(beside) and os.path.exists(path):
        return path
    return beside


def resolve_snapshot_prefix(prefix: str, base_dir: str | None) -> str:
    """Caffe's rule: a relative prefix names a path from the working directory; that holds
    whenever the prefix's folder exists there (a bare name always does). Otherwise, where Caffe
    could not write at all, it is taken beside the solver file."""
    prefix = expand_placeholders(prefix)
    if os.path.isabs(prefix) or base_dir is None:
        return prefix
    folder = os.path.dirname(prefix)
    if not folder or os.path.isdir(folder):
        return prefix
    return os.path.normpath(os.path.join(base_dir, prefix))


def _resolve_layer_paths(net, base_dir):
    for layer in net.layer:
        if layer.HasField("data_param") and layer.data_param.source:
            layer.data_param.source = resolve_path(layer.data_param.source, base_dir)
        if layer.HasField("image_data_param") and layer.image_data_param.source:
            p = layer.image_data_param
            p.source = resolve_path(p.source, base_dir)
            if p.root_folder:
                p.root_folder = resolve_path(p.root_folder, base_dir)
                if not p.root_folder.endswith("/"):
                    p.root_folder += "/"
        if layer.HasField("hdf5_data_param") and layer.hdf5_data_param.source:
            layer.hdf5_data_param.source = resolve_path(layer.hdf5_data_param.source, base_dir)
        if layer.HasField("window_data_param") and layer.window_data_param.source:
            layer.window_data_param.source = resolve_path(layer.window_data_param.source, base_dir)
        if layer.HasField("transform_param") and layer.transform_param.mean_file:
            tp = layer.transform_param
            tp.mean_file = resolve_path(tp.mean_file, base_dir)


# ------------------------------------------------------------------------------------------------
# Net upgrades (Caffe's upgrade_proto rules)
# ------------------------------------------------------------------------------------------------

V1 = caffe_pb2.V1LayerParameter

#: V1 enum -> current type string
V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

#: V0 type string -> V1 enum
V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V1 fields that carry over to the current LayerParameter under the same name.
_V1_SHARED_PARAMS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
)


def net_needs_v0_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def net_needs_data_upgrade(net) -> bool:
    for l in net.layers:
        for kind, field in ((V1.DATA, "data_param"), (V1.IMAGE_DATA, "image_data_param"),
                            (V1.WINDOW_DATA, "window_data_param")):
            if l.type == kind:
                p = getattr(l, field)
                if any(p.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror")):
                    return True
    return False


def _upgrade_v0_layer(v0, out, where):
    """Copy one V0 layer (nested ``layer``) into V1LayerParameter ``out``."""
    kind = V0_TYPES.get(v0.type)
    if kind is None:
        raise ConfigError(f"{where}: unknown V0 layer type '{v0.type}'",
                          "this pre-2014 net cannot be upgraded; convert it by hand")
    out.name = v0.name
    out.type = kind
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    conv, ip = kind == V1.CONVOLUTION, kind == V1.INNER_PRODUCT
    pool = kind == V1.POOLING
    tgt = out.convolution_param if conv else out.inner_product_param if ip else None
    if tgt is not None:
        if v0.HasField("num_output"):
            tgt.num_output = v0.num_output
        if v0.HasField("biasterm"):
            tgt.bias_term = v0.biasterm
        if v0.HasField("weight_filler"):
            tgt.weight_filler.CopyFrom(v0.weight_filler)
        if v0.HasField("bias_filler"):
            tgt.bias_filler.CopyFrom(v0.bias_filler)
    if conv:
        if v0.HasField("pad"):
            out.convolution_param.pad.append(v0.pad)
        if v0.HasField("kernelsize"):
            out.convolution_param.kernel_size.append(v0.kernelsize)
        if v0.HasField("stride"):
            out.convolution_param.stride.append(v0.stride)
        if v0.HasField("group"):
            out.convolution_param.group = v0.group
    if pool:
        for src, dst in (("pad", "pad"), ("kernelsize", "kernel_size"), ("stride", "stride"),
                         ("pool", "pool")):
            if v0.HasField(src):
                setattr(out.pooling_param, dst, getattr(v0, src))
    if kind == V1.DROPOUT and v0.HasField("dropout_ratio"):
        out.dropout_param.dropout_ratio = v0.dropout_ratio
    if kind == V1.LRN:
        for f in ("local_size", "alpha", "beta", "k"):
            if v0.HasField(f):
                setattr(out.lrn_param, f, getattr(v0, f))
    src_param = {V1.DATA: "data_param", V1.HDF5_DATA: "hdf5_data_param",
                 V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param",
                 V1.INFOGAIN_LOSS: "infogain_loss_param"}.get(kind)
    if src_param and v0.HasField("source"):
        getattr(out, src_param).source = v0.source
    if src_param and src_param != "infogain_loss_param" and v0.HasField("batchsize"):
        getattr(out, src_param).batch_size = v0.batchsize
    if kind in (V1.DATA, V1.IMAGE_DATA) and v0.HasField("rand_skip"):
        getattr(out, src_param).rand_skip = v0.rand_skip
    if kind == V1.IMAGE_DATA:
        if v0.HasField("shuffle_images"):
            out.image_data_param.shuffle = v0.shuffle_images
        if v0.HasField("new_height"):
            out.image_data_param.new_height = v0.new_height
        if v0.HasField("new_width"):
            out.image_data_param.new_width = v0.new_width
    if kind == V1.CONCAT and v0.HasField("concat_dim"):
        out.concat_param.concat_dim = v0.concat_dim
    if kind == V1.WINDOW_DATA:
        wd = out.window_data_param
        for src, dst in (("det_fg_threshold", "fg_threshold"), ("det_bg_threshold", "bg_threshold"),
                         ("det_fg_fraction", "fg_fraction"), ("det_context_pad", "context_pad"),
                         ("det_crop_mode", "crop_mode")):
            if v0.HasField(src):
                setattr(wd, dst, getattr(v0, src))
    if kind == V1.HDF5_OUTPUT and v0.HasField("hdf5_output_param"):
        out.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    for src, dst in (("scale", "scale"), ("meanfile", "mean_file"), ("cropsize", "crop_size"),
                     ("mirror", "mirror")):
        if v0.HasField(src):
            setattr(out.transform_param, dst, getattr(v0, src))


def upgrade_v0_net(net, where="net"):
    """V0 (nested ``layer``) -> V1, folding "padding" layers into their consumer's pad."""
    old = list(net.layers)
    del net.layers[:]
    pad_of = {}   # top blob of a padding layer -> (its bottom, pad)
    for i, l in enumerate(old):
        v0 = l.layer
        if v0.type == "padding":
            if len(l.bottom) != 1 or len(l.top) != 1:
                raise ConfigError(f"{where}: padding layer '{v0.name}' must have one bottom and top")
            pad_of[l.top[0]] = (l.bottom[0], v0.pad)
            continue
        out = net.layers.add()
        bottoms = list(l.bottom)
        for j, b in enumerate(bottoms):
            if b in pad_of:
                if v0.type not in ("conv", "pool") or len(bottoms) != 1:
                    raise ConfigError(f"{where}: padding feeds layer '{v0.name}' of type "
                                      f"'{v0.type}'; only conv/pool can absorb it")
                bottoms[j], pad = pad_of[b]
                v0 = type(v0)()
                v0.CopyFrom(l.layer)
                v0.pad = pad
        out.bottom.extend(bottoms)
        out.top.extend(l.top)
        _upgrade_v0_layer(v0, out, f"{where}: layer '{v0.name}'")


def upgrade_data_transform(net):
    """Move scale/mean_file/crop_size/mirror from V1 data params into transform_param."""
    for l in net.layers:
        field = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param",
                 V1.WINDOW_DATA: "window_data_param"}.get(l.type)
        if not field:
            continue
        p = getattr(l, field)
        for f in ("scale", "mean_file", "crop_size", "mirror"):
            if p.HasField(f):
                setattr(l.transform_param, f, getattr(p, f))
                p.ClearField(f)


def upgrade_v1_net(net, where="net"):
    """V1 ``layers`` -> current ``layer`` (type enum -> string, blobs_lr -> param specs)."""
    if net.layer:
        raise ConfigError(f"{where}: uses both 'layer' and 'layers'",
                          "a net must be entirely in one format")
    for l in net.layers:
        new = net.layer.add()
        new.name = l.name
        new.bottom.extend(l.bottom)
        new.top.extend(l.top)
        new.include.extend(l.include)
        new.exclude.extend(l.exclude)
        new.blobs.extend(l.blobs)
        new.loss_weight.extend(l.loss_weight)
        if l.type not in V1_TYPE_NAMES:
            raise ConfigError(f"{where}: layer '{l.name}' has unknown V1 type {l.type}")
        new.type = V1_TYPE_NAMES[l.type]
        n = max(len(l.blobs_lr), len(l.weight_decay), len(l.param), len(l.blob_share_mode))
        for i in range(n):
            spec = new.param.add()
            if i < len(l.param):
                spec.name = l.param[i]
            if i < len(l.blob_share_mode):
                spec.share_mode = l.blob_share_mode[i]
            if i < len(l.blobs_lr):
                spec.lr_mult = l.blobs_lr[i]
            if i < len(l.weight_decay):
                spec.decay_mult = l.weight_decay[i]
        for f in _V1_SHARED_PARAMS:
            if l.HasField(f):
                getattr(new, f).CopyFrom(getattr(l, f))
    del net.layers[:]


def upgrade_net_input(net):
    """Legacy ``input``/``input_dim``/``input_shape`` -> an Input layer placed first."""
    if not net.input:
        if net.input_dim or net.input_shape:
            raise ConfigError("net: input_dim/input_shape given without 'input' names")
        return
    if net.input_shape and len(net.input_shape) != len(net.input):
        raise ConfigError(f"net: {len(net.input)} input(s) but {len(net.input_shape)} input_shape(s)")
    if not net.input_shape and len(net.input_dim) != 4 * len(net.input):
        raise ConfigError(f"net: {len(net.input)} input(s) need {4 * len(net.input)} input_dim "
                          f"values, got {len(net.input_dim)}")
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    for i, name in enumerate(net.input):
        layer.top.append(name)
        shape = layer.input_param.shape.add()
        if net.input_shape:
            shape.CopyFrom(net.input_shape[i])
        else:
            shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
    rest = list(net.layer)
    del net.layer[:]
    net.layer.append(layer)
    net.layer.extend(rest)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")


def upgrade_batchnorm(net):
    """BatchNorm's statistics are not learned: drop old ``param { lr_mult: 0 }`` specs."""
    for l in net.layer:
        if l.type == "BatchNorm" and len(l.param) == 3:
            del l.param[:]


def upgrade_net(net, where: str = "net"):
    """Apply every needed upgrade in Caffe's order; returns ``net`` (modified in place)."""
    if net_needs_v0_upgrade(net):
        upgrade_v0_net(net, where)
    if net_needs_data_upgrade(net):
        upgrade_data_transform(net)
    if net.layers:
        upgrade_v1_net(net, where)
    upgrade_net_input(net)
    upgrade_batchnorm(net)
    return net


def needs_upgrade(net) -> bool:
    return bool(net.layers or net.input or net.input_dim or net.input_shape or
                any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer))


# ------------------------------------------------------------------------------------------------
# Solver upgrade
# ------------------------------------------------------------------------------------------------

SOLVER_TYPE_NAMES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}
SOLVER_TYPES = tuple(SOLVER_TYPE_NAMES.values())


def upgrade_solver(solver, where="solver"):
    if solver.HasField("solver_type"):
        legacy = SOLVER_TYPE_NAMES[solver.solver_type]
        if solver.HasField("type") and solver.type != legacy:
            raise ConfigError(f"{where}: solver_type {caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)} "
                              f"conflicts with type \"{solver.type}\"", "keep only `type`")
        solver.type = legacy
        solver.ClearField("solver_type")
    return solver


# ------------------------------------------------------------------------------------------------
# Loading entry points
# ------------------------------------------------------------------------------------------------

def load_net_param(path, resolve: bool = True):
    """Read a net prototxt, upgrade it to the current format, resolve data paths."""
    path = os.fspath(path)
    net, text = read_text_source(path, caffe_pb2.NetParameter())
    upgrade_net(net, where=path)
    net_checks.remember(path, text, net)
    net_checks.check_net_param(net, path, text)
    if resolve:
        _resolve_layer_paths(net, os.path.dirname(os.path.abspath(path)))
    return net


def resolve_net_paths(net, base_dir):
    """Resolve data/mean paths of an (upgraded) inline net against ``base_dir``."""
    _resolve_layer_paths(net, base_dir)
    return net


def load_solver_param(path):
    """Read a solver prototxt; upgrade solver_type; resolve net and snapshot paths."""
    path = os.fspath(path)
    solver, text = read_text_source(path, caffe_pb2.SolverParameter())
    upgrade_solver(solver, where=path)
    base = os.path.dirname(os.path.abspath(path))
    if solver.net:
        solver.net = resolve_path(solver.net, base)
    if solver.train_net:
        solver.train_net = resolve_path(solver.train_net, base)
    for i, t in enumerate(solver.test_net):
        solver.test_net[i] = resolve_path(t, base)
    if solver.snapshot_prefix:
        solver.snapshot_prefix = resolve_snapshot_prefix(solver.snapshot_prefix, base)
    for field in ("net_param", "train_net_param"):
        if solver.HasField(field):
            upgrade_net(getattr(solver, field), where=f"{path}: {field}")
            _inline_net_checks(getattr(solver, field), path, text)
            _resolve_layer_paths(getattr(solver, field), base)
    for tn in solver.test_net_param:
        upgrade_net(tn, where=f"{path}: test_net_param")
        _inline_net_checks(tn, path, text)
        _resolve_layer_paths(tn, base)
    return solver


def _inline_net_checks(net, path, text):
    net_checks.remember(path, text, net)
    net_checks.check_net_param(net, path, text)


def load_caffemodel(path):
    """Binary NetParameter with blobs, upgraded (V1 caffemodels from Poseidon load too)."""
    net = read_binary(path, caffe_pb2.NetParameter(), "NetParameter (.caffemodel)")
    if not net.layer and not net.layers:
        raise ConfigError(f"{path}: a .caffemodel with no layers",
                          "is it really a trained model, not a mean file or solverstate?")
    upgrade_net(net, where=path)
    return net


def load_blobproto(path):
    """A BlobProto file such as mean.binaryproto."""
    blob = read_binary(path, caffe_pb2.BlobProto(), "BlobProto (.binaryproto)")
    if not blob.data and not blob.double_data:
        raise ConfigError(f"{path}: BlobProto holds no data", "is it a mean file made by compute-mean?")
    return blob


def load_solverstate(path):
    return read_binary(path, caffe_pb2.SolverState(), "SolverState (.solverstate)")


def blob_shape(blob) -> tuple:
    """Shape of a BlobProto, as Caffe's ``Blob::FromProto`` reads it: the legacy 4-D
    num/channels/height/width when any of them is set, else ``shape.dim`` (no dims at all, or no
    ``shape`` message, is a 0-d blob holding one value: a channel-shared PReLU slope)."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(int(d) for d in blob.shape.dim)
