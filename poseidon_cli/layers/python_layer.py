"""Python: a layer whose code is a user's Python class (pycaffe's ``type: "Python"``).

Fields: ``python_param { module layer param_str share_in_parallel }``. ``module`` is imported
with ``importlib`` from ``sys.path``; when it is not found there the working directory is tried
too (as running a script from that directory would). ``layer`` names a class in it, normally a
subclass of :class:`UserLayer` (exported as ``poseidon_cli.Layer``, pycaffe's ``caffe.Layer``).

The user's class is built as ``cls(layer_param)`` and, before its ``setup`` runs, given:

* ``self.param_str``: ``python_param.param_str`` (a string the layer parses itself);
* ``self.phase``: 0 (TRAIN) or 1 (TEST);
* ``self.blobs``: the layer's parameter blobs; ``self.blobs.add_blob(*shape)`` appends a zero
  Blob. Blobs added in ``setup`` are learnable params like any layer's: ``param { lr_mult }``
  applies, solvers update them, snapshots and ``Net.save`` store them, ``copy_from`` loads them.

Calls, with Caffe's order: ``setup(bottom, top)`` once, ``reshape(bottom, top)`` after setup and
before every ``forward(bottom, top)``, ``backward(top, propagate_down, bottom)``. When ``reshape``
changes the tops' shapes, the Net reshapes the layers after it (``net_pycaffe``). ``bottom`` and
``top`` are lists of ``Blob`` (``.data``, ``.diff``, ``.reshape(*shape)``, ``.shape``, ``.num``,
``.count``); their arrays are always NumPy, as in Caffe (whose Python layers run on the CPU):
when the net runs on a GPU the layer sees host copies of its bottoms, tops and parameter blobs,
copied back after each call (tops' data and shapes after reshape/forward, bottoms' diffs after
backward, parameters' data and diffs after every call). A Python layer is no loss unless its
prototxt gives ``loss_weight``, as in Caffe.

``share_in_parallel`` is accepted and has no effect: every worker process builds its own
instance of the class.

The Net's layer object is an adapter: attributes of the user's object read and write through it
(``net.layers[i].my_field``, ``net.layers[i].set_data(x)``); ``.user_layer`` is the object itself.

Errors: ``NetError`` for a missing module or class; an exception raised inside the user's code
becomes :class:`PythonLayerError` naming the layer, the module and class and the method, chained
to (``from``) the original so its traceback stays; the CLI prints the user's frames under the
one-line message.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback

import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import NetError, PoseidonError
from . import register
from .base import Layer


class BlobVec(list):
    """A layer's parameter blobs as pycaffe shows them: a list with ``add_blob(*shape)``."""

    def __init__(self, make_blob):
        super().__init__()
        self._make_blob = make_blob

    def add_blob(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        blob = self._make_blob(tuple(int(s) for s in shape))
        self.append(blob)
        return blob


class UserLayer:
    """Base class for Python layers (``poseidon_cli.Layer``). Override what the layer needs;
    the defaults do nothing (a layer without ``backward`` passes no gradient)."""

    def __init__(self, param=None):
        self.layer_param = param

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


class PythonLayerError(NetError):
    """An exception raised inside a Python layer's own code. ``user_traceback`` holds the
    formatted frames of the user's code (the CLI prints them below the one-line message)."""

    def __init__(self, message, user_traceback: str):
        super().__init__(message)
        self.user_traceback = user_traceback

    def one_line(self) -> str:
        head = super().one_line()
        return f"{head}\n{self.user_traceback.rstrip()}" if self.user_traceback else head


def _ours(tb) -> bool:
    name = tb.tb_frame.f_code.co_filename
    return name == __file__ or name.startswith("<frozen") or f"{os.sep}importlib{os.sep}" in name


def _user_frames(exc) -> str:
    """The traceback of ``exc`` from the first frame of the user's code on (ours and
    importlib's frames dropped)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and _ours(tb):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _find_module(name, layer):
    """The module, or None when ``name`` itself is not found (other errors are the user's)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name in (name, name.split(".")[0]):
            return None
        raise _wrap(layer, "import", exc) from exc
    except PoseidonError:
        raise
    except Exception as exc:  # the user's module failed while importing: their traceback
        raise _wrap(layer, "import", exc) from exc


def _import_module(name, layer):
    module = _find_module(name, layer)
    cwd = os.getcwd()
    if module is None and cwd not in sys.path:
        sys.path.append(cwd)
        module = _find_module(name, layer)
    if module is None:
        raise NetError(f"{layer.describe()}: cannot import python_param.module '{name}' (not on "
                       f"sys.path nor in the working directory {cwd})",
                       "run from the module's folder or add it to PYTHONPATH")
    return module


def _wrap(layer, method, exc):
    pp = layer.param.python_param
    where = f"{layer.describe()} [python_param module '{pp.module}' layer '{pp.layer}']"
    text = str(exc).strip().splitlines()
    msg = f"{where}: {method} raised {type(exc).__name__}" + (f": {text[0]}" if text else "")
    return PythonLayerError(msg, _user_frames(exc))


@register("Python")
class PythonLayer(Layer):
    """Adapter running the user's class (see the module docstring)."""

    #: hand the user host copies of the blobs (None: whenever the net's arrays are not NumPy)
    host_mirror = None

    def __init__(self, param, phase=0):
        super().__init__(param, phase)
        self.blobs = BlobVec(self.new_blob)
        self.__dict__["_user"] = None
        self._host_params = None

    def _mirroring(self) -> bool:
        return self.host_mirror if self.host_mirror is not None else self.xp is not np

    def __getattr__(self, name):
        user = self.__dict__.get("_user")
        if user is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(user, name)

    def __setattr__(self, name, value):
        # net.layers[i].field = v reaches the user's object (pycaffe's layers[i] *is* it);
        # the adapter's own attributes stay here.
        user = self.__dict__.get("_user")
        if user is None or name in self.__dict__ or hasattr(type(self), name):
            object.__setattr__(self, name, value)
        else:
            setattr(user, name, value)

    @property
    def user_layer(self):
        """The instance of the user's class (built at setup)."""
        return self.__dict__["_user"]

    def _call(self, method, *args):
        try:
            return getattr(self.user_layer, method)(*args)
        except PoseidonError:
            raise
        except Exception as exc:
            raise _wrap(self, method, exc) from exc

    def layer_setup(self, bottom, top):
        pp = self.param.python_param
        if not pp.module or not pp.layer:
            raise self.error("python_param needs module and layer (the Python module and class "
                             "implementing the layer)")
        module = _import_module(pp.module, self)
        cls = getattr(module, pp.layer, None)
        if cls is None:
            raise self.error(f"module '{pp.module}' ({getattr(module, '__file__', '?')}) has no "
                             f"class '{pp.layer}'")
        try:
            user = cls(self.param)
        except Exception as exc:
            raise _wrap(self, "__init__", exc) from exc
        user.param_str = pp.param_str
        user.phase = self.phase
        if self._mirroring():
            self._host_params = BlobVec(lambda shape: Blob(shape, xp=np, dtype=self.dtype))
            user.blobs = self._host_params
        else:
            user.blobs = self.blobs
        self.__dict__["_user"] = user
        self._run("setup", bottom, top)
        if self._host_params is not None:     # the Net trains device blobs mirroring them
            for hb in self._host_params:
                db = self.new_blob(hb.shape)
                db.data[...] = self.xp.asarray(hb.data)
                self.blobs.append(db)

    def reshape(self, bottom, top):
        self._run("reshape", bottom, top)

    def forward(self, bottom, top):
        self._run("reshape", bottom, top)   # Caffe's Layer::Forward reshapes first
        self._run("forward", bottom, top)

    def backward(self, top, propagate_down, bottom):
        self._run("backward", bottom, top, list(propagate_down))

    # -- calls, with host copies when the net's arrays live on a device ---------------------------
    def _run(self, method, bottom, top, propagate_down=None):
        if not self._mirroring():
            args = (top, propagate_down, bottom) if method == "backward" else (bottom, top)
            return self._call(method, *args)
        hosts = {}

        def host(blob):
            if id(blob) not in hosts:       # an in-place top is its bottom's host copy too
                h = Blob(blob.shape, xp=np, dtype=blob.dtype)
                h.data[...] = backend.to_host(blob.data)
                h.diff[...] = backend.to_host(blob.diff)
                hosts[id(blob)] = h
            return hosts[id(blob)]

        hb, ht = [host(b) for b in bottom], [host(t) for t in top]
        pairs = list(zip(self.blobs, self._host_params or []))
        for dev, h in pairs:
            h.data[...] = backend.to_host(dev.data)
            h.diff[...] = backend.to_host(dev.diff)
        if method == "backward":
            self._call(method, ht, propagate_down, hb)
            for dev, h, down in zip(bottom, hb, propagate_down):
                if down:
                    dev.diff[...] = self.xp.asarray(h.diff)
        else:
            self._call(method, hb, ht)
            for dev, h in zip(top, ht):
                if dev.shape != h.shape:
                    dev.reshape(h.shape)
                if method == "forward":
                    dev.data[...] = self.xp.asarray(h.data)
        for dev, h in pairs:
            dev.data[...] = self.xp.asarray(h.data)
            dev.diff[...] = self.xp.asarray(h.diff)
