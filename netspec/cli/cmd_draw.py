"""`netspec draw NET.prototxt OUT.{svg,png,pdf,dot}`: the net as a graph (Caffe's python/draw_net.py).

Layers are boxes with their key parameters, filled by type with draw_net's colours; blobs are
octagons with their shapes; logical devices stand in columns, framed in their colour. The net is
compiled on the CPU as `netspec shapes` does (data layers whose LMDB is missing are drawn with
assumed shapes). Pictures are laid out and drawn by netspec itself (netspec/diagram_layout.py), so
Graphviz is not needed; OUT.dot writes DOT text for Graphviz's own layout (`dot -Tpng OUT.dot`).
draw_net.py's flags work: --rankdir, --phase (ALL draws every layer without compiling, as draw_net
does, so without shapes) and --display_lrm.
"""
from __future__ import annotations

import logging

from .args import add_input_shapes, add_net_state
from .cmd_shapes import fmt_shape, parse_input_shapes, stages

log = logging.getLogger("netspec.cli.draw")

HELP = "draw a net as a graph of layers and blobs (SVG, PNG, PDF or Graphviz DOT; no Graphviz needed)"
EXAMPLES = ("  netspec draw models/alexnet/deploy.prototxt alexnet.svg\n"
            "  netspec draw models/caffenet/train_val.prototxt caffenet.png -phase TRAIN --rankdir LR\n"
            "  netspec draw models/caffenet/train_val.prototxt caffenet.dot --phase ALL --display_lrm\n")


def add_arguments(p) -> None:
    p.add_argument("net", help="net prototxt")
    p.add_argument("out", help="output file: .svg, .png or .pdf (a picture), or .dot (Graphviz text)")
    add_net_state(p, "TEST", None, what="draw (ALL: every layer, no shapes)", phases=("TRAIN", "TEST", "ALL"))
    p.add_argument("--rankdir", default="TB", type=str.upper, choices=["TB", "LR", "BT", "RL"],
                   help="direction of the graph (default TB, top to bottom; draw_net.py's default is LR)")
    p.add_argument("--display-lrm", "--display_lrm", dest="display_lrm", action="store_true",
                   help="show the lr_mult of Convolution, Deconvolution and InnerProduct layers")
    add_input_shapes(p)


def _all_layers(path: str):
    """The net as written, every phase's layers (draw_net's --phase ALL), upgraded but not filtered."""
    from ..frontend import read_net, upgrade_if_needed

    param, source = read_net(path)
    return upgrade_if_needed(param, source or path)


def run(args) -> int:
    from ..diagram import write_drawing
    from ..graph.inspect import compile_for_inspection

    if args.phase == "ALL":
        net = _all_layers(args.net)
    else:
        net, notes = compile_for_inspection(args.net, args.phase, args.level, stages(args.stage),
                                            parse_input_shapes(args.input_shape))
        for _, why in notes.values():
            log.warning("%s", why)
    path = write_drawing(net, args.out, args.rankdir, fmt_shape, args.display_lrm)
    print(f"wrote {path}")
    return 0
