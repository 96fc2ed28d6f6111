"""Generated protobuf / gRPC code. Never edit by hand: run ``python -m poseidon_cli._proto.generate``.

``tests/test_proto_drift.py`` regenerates into a temporary folder and fails when the committed files
differ from what ``proto/*.proto`` produce.
"""
