"""`netspec export -model NET -weights W.caffemodel -o W.pt [--onnx NET.onnx]`: leave Caffe's formats.

Without a net (`netspec export W.caffemodel W.pt`) the file's blobs are written as they are stored
(V1/V0 files and legacy 4-D shapes as stored), under the same keys as with -model: blob names from
the layer type the file records (netspec/formats/export.py), indices where it records none.
With -model, the net of one phase (default TEST) is compiled on the CPU and the weights are copied in by layer
name (Caffe's CopyTrainedLayersFrom rules). `-o` writes the compiled module's state_dict: a plain
dict of float32 tensors keyed `<layer>.<blob name>` exactly as `CompiledNet.state_dict()` names
them (`conv1.weight`, `bn1.variance`; a layer name that is not a Python identifier appears as the
module attribute, '/' and '.' -> '_'), so `torch.load(path, weights_only=True)` reads it and
`compiled.load_state_dict` takes it. `--onnx` writes the graph (netspec/export_onnx.py). Data layers
whose LMDB is not at hand are replaced by Input layers, as `netspec shapes` does (`--input-shape`).
`netspec import` turns such a .pt back into a .caffemodel.
"""
from __future__ import annotations

import logging

from ..errors import NetspecError
from ..proto import pb
from .args import add_input_shapes, add_net_state
from ..graph.inspect import substitute_missing_data
from .cmd_shapes import parse_input_shapes, stages

log = logging.getLogger("netspec.cli.export")

HELP = "write a .caffemodel's weights as a PyTorch state_dict (.pt) and/or the net as ONNX"
EXAMPLES = ("  netspec export -model deploy.prototxt -weights caffenet.caffemodel -o caffenet.pt "
            "--onnx caffenet.onnx\n"
            "  netspec export bvlc_alexnet.caffemodel alexnet.pt\n")


def add_net_arguments(p) -> None:
    """-model, -phase, -level, -stage, --input-shape (shared with `netspec import`)."""
    p.add_argument("--model", help="net prototxt")
    add_net_state(p, "TEST", 0)
    add_input_shapes(p)


def add_arguments(p) -> None:
    p.add_argument("weights_file", nargs="?", metavar="WEIGHTS", help="a .caffemodel (or -weights)")
    p.add_argument("output_file", nargs="?", metavar="OUT.pt", help="the .pt to write (or -o)")
    add_net_arguments(p)
    p.add_argument("--weights", help="trained .caffemodel(s), comma-separated, copied in order")
    p.add_argument("-o", "--output", help="state_dict file to write (.pt)")
    p.add_argument("--onnx", help="ONNX file to write (data layers become graph inputs)")


def compile_for_weights(args):
    """(the phase's NetParameter as the prototxt has it, its CompiledNet on the CPU in which data
    layers whose LMDB is missing are Input layers)."""
    from ..frontend import load_net
    from ..graph import compile_net

    if not args.model:
        raise NetspecError("-model is required: the net prototxt")
    phase = pb.TRAIN if args.phase == "TRAIN" else pb.TEST
    given = parse_input_shapes(args.input_shape)
    param = load_net(args.model, phase=phase, level=args.level, stages=tuple(stages(args.stage)))
    usable, notes = substitute_missing_data(param, phase, args.model, given)
    for _, why in notes.values():
        log.info("%s", why)
    net = compile_net(usable, phase=phase, device_map="cpu", seed=0, source=args.model, input_shapes=given)
    return param, net


def net_state_dict(net) -> dict:
    """The compiled net's parameters as a plain dict of contiguous float32 CPU tensors."""
    import torch

    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}


def export_file_blobs(weights: str, output: str) -> None:
    """No net: every layer's blobs as the .caffemodel stores them, keyed as with -model: the layer's
    module attribute and its blob names from the layer type the file records (indices where it
    records none, as .caffemodel.h5 files)."""
    from ..formats import export_state_dict, read_weights
    from ..graph.compile import _attr_name

    taken: set[str] = set()
    layers = {_attr_name(name, taken): (kind, blobs) for name, (kind, blobs) in read_weights(weights).items()}
    params = {name: blobs for name, (_, blobs) in layers.items() if blobs}
    export_state_dict(params, output, {name: kind for name, (kind, _) in layers.items()})
    count = sum(b.size for blobs in params.values() for b in blobs)
    print(f"wrote {count:,} parameters of {len(params)} layers to {output}")


def run(args) -> int:
    from ..export_onnx import as_deployed, export_onnx
    from ..graph import compile_net
    from ..formats import load_weights
    from ..formats.export import write_state_dict

    args.weights = args.weights or args.weights_file
    args.output = args.output or args.output_file
    if not args.output and not args.onnx:
        raise NetspecError("nothing to write: give -o OUT.pt and/or --onnx OUT.onnx")
    if not args.weights:
        raise NetspecError("-weights is required: the trained .caffemodel to export")
    if not args.model:
        if args.onnx:
            raise NetspecError("--onnx needs -model: the net prototxt whose graph to export")
        export_file_blobs(args.weights, args.output)
        return 0
    param, net = compile_for_weights(args)
    for w in (s.strip() for s in args.weights.split(",") if s.strip()):
        log.info("%s", load_weights(net.params(), w).summary())
    state = net_state_dict(net)
    if args.output:
        write_state_dict(state, args.output)
        print(f"wrote {args.output}: {len(state)} tensors, {sum(t.numel() for t in state.values()):,} values")
    if args.onnx:
        deployed = compile_net(as_deployed(param, net), phase=net.phase, device_map="cpu", seed=0,
                               source=args.model)
        deployed.load_state_dict(net.state_dict())
        how = export_onnx(deployed, args.onnx)
        print(f"wrote {args.onnx} ({how}): inputs {', '.join(deployed.input_names)}; "
              f"outputs {', '.join(deployed.output_names)}")
    return 0
