"""pycaffe's ``caffe.proto`` package: ``poseidon_cli.proto.caffe_pb2`` is the generated Caffe
schema module (``poseidon_cli._proto.caffe_pb2``, the one home of the generated code)."""
from . import caffe_pb2  # noqa: F401

__all__ = ["caffe_pb2"]
