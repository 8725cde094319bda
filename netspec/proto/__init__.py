"""netspec's protobuf schema (protos/netspec.proto, Caffe-compatible) as Python classes.

`pb` is the generated module: `pb.NetParameter`, `pb.LayerParameter`, `pb.TRAIN`, ...
Regenerate with `python tools/gen_proto.py` after editing the .proto file. `v1types` maps the legacy
V1/V0 layer type enums to today's type strings (used by the front end's upgrade and the caffemodel
reader alike).
"""
from . import netspec_pb2 as pb

__all__ = ["pb"]
