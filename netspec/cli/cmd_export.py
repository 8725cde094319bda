"""`netspec export WEIGHTS.caffemodel OUT.pt`: a .caffemodel's trained blobs as a PyTorch state_dict.

The .pt holds tensors only, keyed `<layer>.<blob index>` (`conv1.0` weight, `conv1.1` bias), so
`torch.load(path, weights_only=True)` reads it. V1 and V0 caffemodels (the BVLC model-zoo files) work
as well; legacy 4-D blob shapes (1×1×4096×9216) are kept as stored. See netspec/io/export.py.
"""
from __future__ import annotations

from ..io.caffemodel import read_weights
from ..io.export import export_state_dict

HELP = "write a .caffemodel's trained blobs as a PyTorch state_dict (.pt of tensors)"
EXAMPLES = "  netspec export bvlc_alexnet.caffemodel alexnet.pt\n"


def add_arguments(p) -> None:
    p.add_argument("weights", help="binary .caffemodel to read")
    p.add_argument("output", help=".pt file to write (keys <layer>.<blob index>)")


def run(args) -> int:
    params = {name: blobs for name, (_, blobs) in read_weights(args.weights).items() if blobs}
    export_state_dict(params, args.output)
    count = sum(b.size for blobs in params.values() for b in blobs)
    print(f"wrote {count:,} parameters of {len(params)} layers to {args.output}")
    return 0
