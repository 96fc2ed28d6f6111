"""Alias of ``poseidon_cli._proto.caffe_pb2`` so ``from caffe.proto import caffe_pb2`` works
unchanged: importing this module yields the generated module itself (one set of classes)."""
import sys

from .._proto import caffe_pb2 as _generated

sys.modules[__name__] = _generated
