"""netspec's protobuf schema (protos/netspec.proto, Caffe-compatible) as Python classes.

`pb` is the generated module: `pb.NetParameter`, `pb.LayerParameter`, `pb.TRAIN`, ...
Regenerate with `python tools/gen_proto.py` after editing the .proto file.
"""
from . import netspec_pb2 as pb

__all__ = ["pb"]
