"""The parameter server: one front door (ps/README.md has the rules, each with its test).

    from poseidon_cli.ps import PSClient, ShardServer, ShardStore, make_transport

Worker side: :class:`PSClient` over one transport per shard (:func:`make_transport` for the
network, ``local_transport.LocalTransport`` in-process). Shard side: a :class:`ShardStore` (state,
no I/O) served by a :class:`ShardServer` (gRPC + the TCP data plane). The names load on first use,
so importing a light module (``ps.keys``, ``ps.consistency``) does not load gRPC.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"PSClient": ".client", "make_transport": ".client", "ShardStore": ".store",
            "ShardServer": ".server"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
