"""poseidon: data-parallel training of Caffe-defined CNNs on NumPy/CuPy.

pycaffe-style API::

    import poseidon_cli
    net = poseidon_cli.Net("deploy.prototxt", poseidon_cli.TEST, weights="model.caffemodel")
    out = net.forward(data=batch)
    solver = poseidon_cli.get_solver("solver.prototxt")
    solver.step(100)

Importing the package is cheap and never touches CUDA; the names below load on first use.
"""
__version__ = "0.1.0"

TRAIN, TEST = 0, 1


def __getattr__(name):
    if name == "Net":
        from .net import Net
        return Net
    if name == "get_solver":
        from .solver import get_solver
        return get_solver
    raise AttributeError(f"module 'poseidon_cli' has no attribute {name!r}")


__all__ = ["Net", "get_solver", "TRAIN", "TEST", "__version__"]
