"""User-facing errors.

A ``PoseidonError`` is a mistake the user can fix (bad prototxt, missing file, malformed hosts file,
unknown layer type, shape mismatch, port in use...). Its message is one line naming the file / layer /
field / host and what to do. The CLI prints ``poseidon: error: <message>`` and exits with ``exit_code``
(2), with no traceback unless ``--debug``. Internal bugs raise ordinary exceptions and are not caught.
"""
from __future__ import annotations


class PoseidonError(Exception):
    """Base class: a problem in the user's input or environment, reported as one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")

    def one_line(self) -> str:
        text = str(self)
        return " ".join(text.split())  # never more than one line


class ConfigError(PoseidonError):
    """Bad prototxt / solver / binary proto file, or a path that does not exist."""


class NetError(PoseidonError):
    """A net that cannot be built: unknown layer type, arity, missing bottom, shape mismatch."""


class DataError(PoseidonError):
    """Missing / empty / malformed database, mean file or converter input."""


class SolverError(PoseidonError):
    """Bad solver settings, snapshot that does not match the net, NaN loss."""


class ClusterError(PoseidonError):
    """Hosts file, rank discovery, unreachable peer, dead worker, deadline expired.

    Structured fields, so that code naming the failed peer never parses the wording:
    ``lost_workers``: the worker ids the raiser knows to be dead (sorted tuple, empty if none);
    ``shard``: the parameter-server shard that raised it or that could not be reached (None if
    none). A shard fills them; the gRPC and TCP transports carry them to the worker, whose client
    re-raises with them.
    """

    def __init__(self, message: str, hint: str | None = None, *, lost_workers=(), shard: int | None = None):
        super().__init__(message, hint)
        self.lost_workers = tuple(sorted(int(w) for w in lost_workers))
        self.shard = None if shard is None else int(shard)


class Interrupted(PoseidonError):
    """The run was interrupted on request (a signal) after doing what was asked, e.g. writing a
    snapshot; exit code 130 as for Ctrl-C."""
    exit_code = 130
