"""NetSpec: write a net in Python, get the NetParameter pycaffe's ``net_spec`` would give.

``layers.<Type>(*bottoms, **kwargs)`` makes a layer of prototxt type ``<Type>`` and returns its
top (one), a tuple of tops (``ntop=k``) or, with ``ntop=0``, the layer itself. ``in_place=True``
makes its tops the bottoms' names. ``params.<Type>.<ENUM>`` reads an enum value of
``<Type>Parameter`` (``params.Pooling.MAX``).

Keyword arguments, pycaffe's rules:

* a name ending in ``param`` (``param``, ``convolution_param``, ``transform_param``) is a field
  of the LayerParameter itself; any other name is a field of the layer type's own parameter
  message (``num_output`` -> ``convolution_param.num_output``) when the type has one and the field
  exists there, else of the LayerParameter (``loss_weight``, ``include``, ``name``, ``top``...);
* a dict fills a message field; a list fills a repeated field (a list of dicts adds one message
  per dict); a single value given to a repeated field is a one-element list
  (``kernel_size=5``, ``include=dict(phase=TEST)``).

Naming (``NetSpec.to_proto``): a top assigned to the NetSpec (``n.conv1 = ...``) is named like
the attribute; a layer is named like its first top (an ``ntop=0`` layer like the attribute it was
assigned to); anything else gets ``<Type><k>``, k counting per type from 1 in the order the
net is written out. Layers appear in the order their tops were assigned, each after the layers
producing its bottoms. ``to_proto(*tops)`` does the same with no assigned names.

Errors: ``TypeError`` for a bottom that is not a top; ``AttributeError`` (naming the field and the
layer type) for a keyword no message has.
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from ._proto import caffe_pb2

__all__ = ["NetSpec", "layers", "params", "to_proto", "Top", "Function"]


def _param_message_names():
    """{layer type: LayerParameter field prefix}: ``"InnerProduct": "inner_product"``."""
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[: -len("Parameter")]] = field.name[: -len("_param")]
    return out


_PARAM_OF_TYPE = _param_message_names()


def _assign(msg, name, value):
    """Set field ``name`` of ``msg`` from a Python value (see the module docstring)."""
    if name not in msg.DESCRIPTOR.fields_by_name:
        raise AttributeError(f"{msg.DESCRIPTOR.name} has no field '{name}'")
    field = msg.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        items = value if isinstance(value, (list, tuple)) else [value]
        target = getattr(msg, name)
        for item in items:
            if field.message_type is not None:
                sub = target.add()
                if isinstance(item, dict):
                    for k, v in item.items():
                        _assign(sub, k, v)
                else:
                    sub.CopyFrom(item)
            else:
                target.append(item)
    elif field.message_type is not None:
        sub = getattr(msg, name)
        if isinstance(value, dict):
            for k, v in value.items():
                _assign(sub, k, v)
        else:
            sub.CopyFrom(value)
    else:
        setattr(msg, name, value)


class Top:
    """Output number ``n`` of layer ``fn``."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, bottoms (Tops) and keyword parameters."""

    def __init__(self, type_name, inputs, params):
        for i, top in enumerate(inputs):
            if not isinstance(top, Top):
                raise TypeError(f"{type_name} bottom {i} is not a top (got {type(top).__name__})")
        self.type_name = type_name
        self.inputs = tuple(inputs)
        params = dict(params)
        self.ntop = int(params.pop("ntop", 1))
        self.in_place = bool(params.pop("in_place", False))
        self.params = params
        self.tops = tuple(Top(self, k) for k in range(self.ntop))

    def _autoname(self, autonames):
        autonames[self.type_name] += 1
        return f"{self.type_name}{autonames[self.type_name]}"

    def _top_name(self, top, names, autonames):
        if top not in names:
            names[top] = self._autoname(autonames)
        return names[top]

    def _layer_name(self, names, autonames):
        if self not in names:
            names[self] = (self._top_name(self.tops[0], names, autonames) if self.ntop
                           else self._autoname(autonames))
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for top in self.inputs:
            top._to_proto(layers, names, autonames)
            bottoms.append(layers[top.fn].top[top.n])
        lp = caffe_pb2.LayerParameter()
        lp.type = self.type_name
        lp.bottom.extend(bottoms)
        if self.in_place:
            lp.top.extend(lp.bottom)
        else:
            lp.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        lp.name = self._layer_name(names, autonames)
        own = _PARAM_OF_TYPE.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param") or own is None:
                _assign(lp, key, value)
                continue
            sub = getattr(lp, own + "_param")
            if key in sub.DESCRIPTOR.fields_by_name:
                _assign(sub, key, value)
            elif key in lp.DESCRIPTOR.fields_by_name:
                _assign(lp, key, value)
            else:
                raise AttributeError(f"layer type {self.type_name}: neither {own}_param nor "
                                     f"LayerParameter has a field '{key}'")
        layers[self] = lp


class NetSpec:
    """Named tops: ``n.name = top`` (or ``n["name"] = top``); ``to_proto()`` writes the net."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, name, value):
        self.tops[name] = value

    def __getitem__(self, name):
        return self.tops[name]

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def to_proto(self):
        names = {value: name for name, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for value in self.tops.values():
            value._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """The net that computes ``tops`` (every name generated)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class _Layers:
    """``layers.Convolution(...)`` -> a layer function of that type."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def make(*bottoms, **kwargs):
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        make.__name__ = type_name
        return make


class _EnumsOf:
    def __init__(self, type_name):
        self._message = getattr(caffe_pb2, type_name + "Parameter")

    def __getattr__(self, name):
        return getattr(self._message, name)


class _Params:
    """``params.Pooling.MAX`` -> ``PoolingParameter.MAX``."""

    def __getattr__(self, type_name):
        if type_name.startswith("__"):
            raise AttributeError(type_name)
        return _EnumsOf(type_name)


layers = _Layers()
params = _Params()
