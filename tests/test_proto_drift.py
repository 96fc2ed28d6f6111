"""The committed generated code must be exactly what proto/*.proto produce."""
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "poseidon_cli" / "_proto"


def test_generated_code_matches_proto_sources(tmp_path):
    pytest.importorskip("grpc_tools")
    from poseidon_cli._proto import generate

    written = generate.generate(tmp_path)
    assert written, "protoc produced nothing"
    fresh = {p.name: p.read_text() for p in written}
    committed = {p.name: p.read_text() for p in PKG.glob("*_pb2*.py")}
    assert sorted(fresh) == sorted(committed), "generated file set differs: run python -m poseidon_cli._proto.generate"
    for name, text in fresh.items():
        assert committed[name] == text, f"{name} is stale: run python -m poseidon_cli._proto.generate"
