"""`netspec upgrade-net IN OUT`: Caffe's tools/upgrade_net_proto_text and upgrade_net_proto_binary —
rewrite a legacy net (V1 `layers { type: CONVOLUTION }`, net-level `input_dim:`, data-layer
transformation fields, old BatchNorm ParamSpecs) in the current format, with the upgrade netspec
applies when it loads a net (netspec.frontend.upgrade). A .caffemodel (or --binary) is read and
written as binary protobuf, its weights carried along; anything else as prototxt. A file already in
the current format is written unchanged, as Caffe's tools do.
"""
from __future__ import annotations

import logging

from ..frontend import read_text_file, write_text_file
from ..frontend.upgrade import needs_upgrade, upgrade_net
from ..proto import pb

HELP = "upgrade a legacy (V1) net prototxt or caffemodel to the current format (upgrade_net_proto_*)"
EXAMPLES = ("  netspec upgrade-net old_deploy.prototxt deploy.prototxt\n"
            "  netspec upgrade-net old.caffemodel new.caffemodel\n")
log = logging.getLogger("netspec")


def add_arguments(p) -> None:
    p.add_argument("input", help="legacy net: prototxt, or a .caffemodel")
    p.add_argument("output", help="where to write the upgraded net")
    p.add_argument("--binary", action="store_true",
                   help="binary protobuf in and out (upgrade_net_proto_binary); implied by .caffemodel")


def run(args) -> int:
    binary = args.binary or str(args.input).endswith(".caffemodel")
    if binary:
        from ..formats import atomic_write, read_caffemodel
        net = read_caffemodel(args.input)
    else:
        net = read_text_file(args.input, pb.NetParameter())
    if needs_upgrade(net):
        net = upgrade_net(net, str(args.input))
    else:
        log.warning("File already in latest proto format: %s", args.input)
    if binary:
        atomic_write(args.output, net.SerializeToString())
    else:
        write_text_file(args.output, net)
    print(f"Wrote upgraded NetParameter {'binary' if binary else 'text'} proto to {args.output}")
    return 0
