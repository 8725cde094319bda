"""`netspec import -model NET -i W.pt -o W.caffemodel`: a PyTorch state_dict back to a .caffemodel.

With -model every key is matched to a blob of the compiled net: `<layer>.<blob name>` under the
Caffe layer name or the module attribute (what `netspec export -model` writes), or
`<layer>.<blob index>` (what `netspec export` without a net writes). Every layer with blobs must get
all of them, each of the net's shape; a key the net lacks, a missing blob or a shape that differs
is a one-line error naming the layer, and nothing is written. The file carries each layer's
definition from the net, as Caffe's snapshots do.

Without a net (`netspec import W.pt W.caffemodel`) layers carry only their names and blobs, which is
all Caffe's CopyTrainedLayersFrom reads (netspec/formats/export.py maps the keys).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from ..errors import NetspecError
from ..proto import pb
from .cmd_export import add_net_arguments, compile_for_weights

HELP = "write a .pt state_dict (from netspec export) as a Caffe .caffemodel"
EXAMPLES = ("  netspec import -model deploy.prototxt -i caffenet.pt -o caffenet.caffemodel\n"
            "  netspec import alexnet.pt alexnet.caffemodel\n")


def add_arguments(p) -> None:
    p.add_argument("state_dict", nargs="?", metavar="IN.pt", help="the .pt state_dict (or -i)")
    p.add_argument("output_file", nargs="?", metavar="OUT.caffemodel",
                   help="the .caffemodel to write (or -o)")
    add_net_arguments(p)
    p.set_defaults(phase="TRAIN")
    p.add_argument("-i", "--input", help="the .pt state_dict to read")
    p.add_argument("-o", "--output", help="the .caffemodel to write")


def blob_keys(net) -> dict[str, tuple[str, int]]:
    """Every key that names a blob -> (Caffe layer name, blob index)."""
    keys = {}
    for step in net.steps:
        layer = step.layer
        for prefix in (step.attr, layer.name):  # the Caffe name wins over a clashing attribute
            for i, blob in enumerate(layer.blob_names):
                keys[f"{prefix}.{blob}"] = keys[f"{prefix}.{i}"] = (layer.name, i)
    return keys


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def params_from_state_dict(net, state: Mapping, path) -> OrderedDict:
    """layer name -> its blobs (float32 arrays) from `state`, checked against the compiled `net`."""
    import torch

    keys, found = blob_keys(net), {}
    for key, value in state.items():
        where = keys.get(str(key))
        if where is None:
            raise NetspecError(f"key '{key}' names no blob of net '{net.name}' (keys are <layer>.<blob "
                               "name> such as conv1.weight, or <layer>.<blob index>)", file=path)
        if not isinstance(value, torch.Tensor):
            raise NetspecError(f"key '{key}' holds a {type(value).__name__}, expected a tensor", file=path)
        if where in found:
            raise NetspecError(f"key '{key}' gives blob {where[1]} a second time", file=path, layer=where[0])
        found[where] = value
    out = OrderedDict()
    for name, layer in net.layers.items():
        blobs = []
        for i, blob in enumerate(layer.blob_names):
            if (name, i) not in found:
                raise NetspecError(f"blob {i} ({blob}) is missing from the file", file=path, layer=name)
            have, want = tuple(found[name, i].shape), tuple(getattr(layer, blob).shape)
            if have != want:
                raise NetspecError(f"blob {i} ({blob}) has shape {_dims(have)} in the file but {_dims(want)} "
                                   "in the net", file=path, layer=name)
            blobs.append(found[name, i].detach().to(torch.float32).numpy())
        if blobs:
            out[name] = blobs
    return out


def run(args) -> int:
    from ..formats import import_state_dict, write_caffemodel
    from ..formats.export import read_state_dict

    source, output = args.input or args.state_dict, args.output or args.output_file
    if not source or not output:
        raise NetspecError("give the .pt to read (-i IN.pt) and the .caffemodel to write (-o OUT.caffemodel)")
    phase = pb.TRAIN if args.phase == "TRAIN" else pb.TEST
    if args.model:
        net_param, net = compile_for_weights(args)
        blobs = params_from_state_dict(net, read_state_dict(source), source)
    else:
        blobs = import_state_dict(source)
        net_param = pb.NetParameter(layer=[pb.LayerParameter(name=name) for name in blobs])
    write_caffemodel(output, net_param, blobs, phase=phase)
    print(f"wrote {sum(len(b) for b in blobs.values())} blobs of {len(blobs)} layers to {output}")
    return 0
