"""Progress bars for long conversions: shown on stderr only when stderr is a terminal, so logs and
tests stay clean."""
from __future__ import annotations

import contextlib
import sys

import click


class _Silent:
    def update(self, n: int = 1):
        pass


@contextlib.contextmanager
def progress(length: int | None, label: str):
    """``with progress(n, "converting") as bar: bar.update(1)``; a no-op unless stderr is a TTY."""
    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        yield _Silent()
        return
    with click.progressbar(length=length, label=label, file=stream, show_pos=True,
                           show_eta=True) as bar:
        yield bar
