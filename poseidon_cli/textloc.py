"""Where a field or a layer sits in a prototxt, so an error can name ``file:line``.

``field_line(text, field, nth=0, top_level=False)``: 1-based line of the ``nth`` ``field:`` (or
``field {``), ignoring ``#`` comments, at any depth or (``top_level``) outside every ``{ }``
block; None when absent.
``layer_line(text, name)``: line of the first ``name: "<name>"`` (a layer's name); None if absent.
``where(path, line)``: ``"path:line"``, or ``path`` when the line is unknown.
"""
from __future__ import annotations

import re


def _lines(text: str):
    for no, raw in enumerate(text.splitlines(), 1):
        yield no, raw.split("#", 1)[0]


def field_line(text: str, field: str, nth: int = 0, top_level: bool = False) -> int | None:
    pat = re.compile(rf"(?:^|[\s{{}}]){re.escape(field)}\s*[:{{]")
    seen, depth = 0, 0
    for no, line in _lines(text or ""):
        for m in pat.finditer(line):
            start = m.start() + (0 if line[m.start():].startswith(field) else 1)
            level = depth + line.count("{", 0, start) - line.count("}", 0, start)
            if top_level and level != 0:
                continue
            if seen == nth:
                return no
            seen += 1
        depth += line.count("{") - line.count("}")
    return None


def layer_line(text: str, name: str) -> int | None:
    pat = re.compile(r"(?:^|[\s{])name\s*:\s*[\"']" + re.escape(name) + r"[\"']")
    for no, line in _lines(text or ""):
        if pat.search(line):
            return no
    return None


def where(path: str, line: int | None) -> str:
    return f"{path}:{line}" if line else path
