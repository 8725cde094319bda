"""`netspec import IN.pt OUT.caffemodel [--model NET.prototxt]`: a state_dict back to a .caffemodel.

Keys are `<layer>.<blob index>` (what `netspec export` writes) or netspec's blob names
(`conv1.weight`, `bn1.variance`). With `--model` the file carries each layer's definition from the
net, as Caffe's own snapshots do; without it, layers carry only their names and blobs, which is all
Caffe's CopyTrainedLayersFrom and `netspec train -weights` read. See netspec/io/export.py.
"""
from __future__ import annotations

from ..frontend import load_net
from ..io.caffemodel import write_caffemodel
from ..io.export import import_state_dict
from ..proto import pb

HELP = "write a .pt state_dict (from netspec export) as a Caffe .caffemodel"
EXAMPLES = ("  netspec import alexnet.pt alexnet.caffemodel\n"
            "  netspec import alexnet.pt alexnet.caffemodel --model models/alexnet/deploy.prototxt\n")


def add_arguments(p) -> None:
    p.add_argument("state_dict", help=".pt file of tensors keyed <layer>.<blob index>")
    p.add_argument("output", help=".caffemodel to write")
    p.add_argument("--model", help="net prototxt whose layer definitions to write with the blobs")
    p.add_argument("--phase", default="TRAIN", type=str.upper, choices=["TRAIN", "TEST"],
                   help="phase of the --model net to keep (default TRAIN, as Caffe's snapshots)")


def run(args) -> int:
    blobs = import_state_dict(args.state_dict)
    phase = pb.Phase.Value(args.phase)
    if args.model:
        net = load_net(args.model, phase=phase)
    else:
        net = pb.NetParameter(layer=[pb.LayerParameter(name=name) for name in blobs])
    write_caffemodel(args.output, net, blobs, phase=phase)
    print(f"wrote {sum(len(b) for b in blobs.values())} blobs of {len(blobs)} layers to {args.output}")
    return 0
