"""Layer registry: prototxt ``type`` string -> Layer class.

Each layer family lives in its own module here (``type: "InnerProduct"`` ->
``layers/inner_product.py`` -> ``InnerProductLayer``) and registers itself with ``@register``.
Modules are imported on first lookup, so adding a layer means adding a file. CamelCase
attributes of this package are pycaffe's NetSpec layer functions (``layers.Convolution(...)``).
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import NetError
from ..net_checks import layer_location
from .base import TEST, TRAIN, Layer

_REGISTRY: dict[str, type] = {}
_loaded = False


def register(type_name: str):
    """Class decorator: make ``type_name`` build this Layer subclass."""
    def deco(cls):
        if type_name in _REGISTRY and _REGISTRY[type_name] is not cls:
            raise RuntimeError(f"layer type {type_name!r} registered twice")
        cls.type = type_name
        _REGISTRY[type_name] = cls
        return cls
    return deco


def _load_all():
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base" and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def layer_types() -> list[str]:
    """Every registered type string, sorted."""
    _load_all()
    return sorted(_REGISTRY)


def get_layer_class(type_name: str):
    _load_all()
    try:
        return _REGISTRY[type_name]
    except KeyError:
        raise NetError(f"unknown layer type '{type_name}' "
                       f"(known types: {', '.join(sorted(_REGISTRY))})") from None


def create_layer(param, phase: int = TRAIN) -> Layer:
    """Instantiate the layer for ``param`` (a LayerParameter in the current format)."""
    _load_all()
    cls = _REGISTRY.get(param.type)
    if cls is None:
        loc = layer_location(param.name)
        raise NetError(f"{loc + ': ' if loc else ''}layer '{param.name}': unknown layer type "
                       f"'{param.type}'", f"use one of {', '.join(sorted(_REGISTRY))}")
    return cls(param, phase)


def __getattr__(name):
    """pycaffe's ``caffe.layers`` (``L.Convolution(...)``): a CamelCase name that is no module
    here makes a NetSpec layer function (``poseidon_cli.net_spec``)."""
    if name[:1].isupper():
        from ..net_spec import layers as spec_layers
        return getattr(spec_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Layer", "TRAIN", "TEST", "register", "create_layer", "get_layer_class", "layer_types"]
