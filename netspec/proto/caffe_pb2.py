"""pycaffe's `caffe.proto.caffe_pb2`: netspec's generated module under Caffe's name, so that
`from netspec.proto import caffe_pb2` and `caffe.proto.caffe_pb2.BlobProto()` work. The schema is
Caffe's caffe.proto plus netspec's extensions (field numbers >= 10000), so every Caffe message,
enum and field is here; this module *is* netspec_pb2 (one set of classes, not a copy)."""
import sys

from . import netspec_pb2

sys.modules[__name__] = netspec_pb2
