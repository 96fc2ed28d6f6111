"""poseidon: data-parallel training of Caffe-defined CNNs on NumPy/CuPy.

pycaffe's interface: a script written for pycaffe runs with ``import poseidon_cli as caffe``::

    import poseidon_cli as caffe
    from poseidon_cli import layers as L, params as P
    n = caffe.NetSpec()
    ...
    solver = caffe.SGDSolver("solver.prototxt")
    solver.step(100)
    net = caffe.Net("deploy.prototxt", "model.caffemodel", caffe.TEST)

``poseidon_cli.layers`` is both the layer package and pycaffe's NetSpec ``layers`` (its CamelCase
attributes, ``layers.Convolution``, make NetSpec layers). Importing the package is cheap and never
touches CUDA; every name below loads on first use (README, "Python (pycaffe-style)", lists where
poseidon differs from pycaffe).
"""
import importlib

from .context import TEST, TRAIN

__version__ = "0.1.0"

# name -> (module, attribute); attribute None means the module itself
_LAZY = {
    "Net": ("net", "Net"),
    "NetSpec": ("net_spec", "NetSpec"),
    "params": ("net_spec", "params"),
    "to_proto": ("net_spec", "to_proto"),
    "Layer": ("layers.python_layer", "UserLayer"),
    "Classifier": ("classifier", "Classifier"),
    "Detector": ("detector", "Detector"),
    "io": ("io", None),
    "draw": ("draw", None),
    "proto": ("proto", None),
    "get_solver": ("pycaffe", "get_solver"),
    "SGDSolver": ("pycaffe", "SGDSolver"),
    "NesterovSolver": ("pycaffe", "NesterovSolver"),
    "AdaGradSolver": ("pycaffe", "AdaGradSolver"),
    "RMSPropSolver": ("pycaffe", "RMSPropSolver"),
    "AdaDeltaSolver": ("pycaffe", "AdaDeltaSolver"),
    "AdamSolver": ("pycaffe", "AdamSolver"),
    "layer_type_list": ("pycaffe", "layer_type_list"),
    "set_mode_cpu": ("pycaffe", "set_mode_cpu"),
    "set_mode_gpu": ("pycaffe", "set_mode_gpu"),
    "set_device": ("pycaffe", "set_device"),
    "set_random_seed": ("pycaffe", "set_random_seed"),
    "has_nccl": ("pycaffe", "has_nccl"),
}


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'poseidon_cli' has no attribute {name!r}") from None
    mod = importlib.import_module(f"{__name__}.{module}")
    return mod if attr is None else getattr(mod, attr)


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(["TRAIN", "TEST", "__version__", "layers", *_LAZY])
