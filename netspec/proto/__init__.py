"""netspec's protobuf schema (protos/netspec.proto, Caffe-compatible) as Python classes.

`pb` is the generated module: `pb.NetParameter`, `pb.LayerParameter`, `pb.TRAIN`, ...
Regenerate with `python tools/gen_proto.py` after editing the .proto file. `v1types` maps the legacy
V1/V0 layer type enums to today's type strings (used by the front end's upgrade and the caffemodel
reader alike).
"""
from . import netspec_pb2 as pb
from . import caffe_pb2  # noqa: F401,E402  (pycaffe's name for the same module)

__all__ = ["pb", "param_name_dict"]


def param_name_dict() -> dict[str, str]:
    """Layer type → its parameter field, from LayerParameter (ConvolutionParameter → convolution_param).

    As in pycaffe, every `*_param` field whose message is named `<X>Parameter` maps type X; some
    entries (Transformation, Loss) are no layer type, which is harmless.
    """
    names = {}
    for field in pb.LayerParameter.DESCRIPTOR.fields:
        kind = field.message_type.name if field.message_type is not None else ""
        if field.name.endswith("_param") and kind.endswith("Parameter"):
            names[kind[: -len("Parameter")]] = field.name
    return names
