"""Caffe image lists (``<path> <label>`` per line) and reading the images they name.

- ``read_image_list(path) -> [(image path, label)]``: the label is the last space-separated token,
  so paths may contain spaces; blank lines and ``#`` comments are skipped; a malformed line raises
  ``DataError`` naming ``file:line``.
- ``load_image(path, color, height, width) -> CHW uint8``: Pillow; colour as B, G, R planes (what
  OpenCV gives Caffe), else one gray plane; resized bilinearly when height and width are > 0.
  Missing or undecodable files raise ``DataError`` naming the file.
"""
from __future__ import annotations

import os

from ..errors import DataError
from .datum import _pil, pil_to_chw


def read_image_list(list_path):
    """[(path, label)] from a Caffe image list (DataError naming the bad line)."""
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataError(f"image list '{list_path}': no such file")
    entries = []
    with open(list_path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path, sep, label = text.rpartition(" ")
            try:
                if not sep or not path.strip():
                    raise ValueError
                entries.append((path.strip(), int(label)))
            except ValueError:
                raise DataError(f"{list_path}:{lineno}: expected '<image path> <integer label>', "
                                f"got {text!r}") from None
    if not entries:
        raise DataError(f"image list '{list_path}' has no entries")
    return entries


def load_image(path, color: bool = True, height: int = 0, width: int = 0, where: str = ""):
    """Read an image file as CHW uint8 (BGR planes or one gray plane), optionally resized."""
    Image = _pil()
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"{where}'{path}': no such image file") from None
    except Exception as exc:
        raise DataError(f"{where}'{path}': cannot decode image ({exc.__class__.__name__})") from None
    img = img.convert("RGB" if color else "L")
    if height > 0 and width > 0 and img.size != (width, height):
        img = img.resize((width, height), Image.BILINEAR)
    return pil_to_chw(img, color)
