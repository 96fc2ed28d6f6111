"""Regenerate ``poseidon_cli/_proto/*_pb2*.py`` from ``proto/*.proto`` (needs grpcio-tools).

Usage: ``python -m poseidon_cli._proto.generate [OUT_DIR]`` (default: this package's folder).
The generated gRPC stubs import their messages as top-level modules; the import is rewritten to a
relative one so the package needs nothing on ``sys.path``.
"""
from __future__ import annotations

import pathlib
import re
import sys

PROTO_DIR = pathlib.Path(__file__).resolve().parents[2] / "proto"
PKG_DIR = pathlib.Path(__file__).resolve().parent


def generate(out_dir: pathlib.Path = PKG_DIR) -> list[pathlib.Path]:
    from grpc_tools import protoc  # dev/test dependency only

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    args += [str(p) for p in protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(out_dir.glob("*_pb2*.py")):
        text = path.read_text()
        fixed = re.sub(r"^import (\w+_pb2) as ", r"from . import \1 as ", text, flags=re.M)
        if fixed != text:
            path.write_text(fixed)
        written.append(path)
    # Message-only protos get an empty *_pb2_grpc.py; drop those to keep the folder honest.
    for path in list(written):
        if path.name.endswith("_pb2_grpc.py") and "class " not in path.read_text():
            path.unlink()
            written.remove(path)
    return written


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PKG_DIR
    for p in generate(out):
        print(p.name)
