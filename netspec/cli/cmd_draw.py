"""`netspec draw NET.prototxt OUT.{png,svg,pdf,dot}`: the net as a graph (Caffe's python/draw_net.py).

Layers are boxes with their key parameters, blobs ellipses with their shapes, each filled with its
logical device's colour. The net is compiled on the CPU as `netspec shapes` does (data layers whose
LMDB is missing are drawn with assumed shapes). Pictures need Graphviz's `dot` program; without it
the DOT text is written next to the requested file (same name, .dot) and the command exits 1, since
the picture asked for was not made. Asking for OUT.dot never needs Graphviz.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..diagram import net_to_dot, write_drawing
from .args import add_input_shapes, add_net_state
from ..graph.inspect import compile_for_inspection
from .cmd_shapes import fmt_shape, parse_input_shapes, stages

HELP = "draw a net as a graph of layers and blobs (PNG/SVG/PDF with Graphviz, or DOT text)"
EXAMPLES = ("  netspec draw models/alexnet/deploy.prototxt alexnet.png\n"
            "  netspec draw models/caffenet/train_val.prototxt caffenet.dot -phase TRAIN --rankdir LR\n")


def add_arguments(p) -> None:
    p.add_argument("net", help="net prototxt")
    p.add_argument("out", help="output file: .png, .svg or .pdf (rendered by Graphviz's dot), or .dot")
    add_net_state(p, "TEST", None, what="draw")
    p.add_argument("--rankdir", default="TB", choices=["TB", "LR", "BT", "RL"],
                   help="direction of the graph (default TB, top to bottom)")
    add_input_shapes(p)


def run(args) -> int:
    net, notes = compile_for_inspection(args.net, args.phase, args.level, stages(args.stage),
                                        parse_input_shapes(args.input_shape))
    for _, why in notes.values():
        print(f"note: {why}", file=sys.stderr)
    path, rendered = write_drawing(net_to_dot(net, args.rankdir, fmt_shape), args.out)
    if path != Path(args.out):
        print(f"netspec draw: Graphviz's 'dot' program is not installed, so {args.out} was not made; "
              f"the graph is in {path} (install Graphviz, e.g. 'apt install graphviz', then run "
              f"'dot -T{Path(args.out).suffix[1:]} {path} -o {args.out}')", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
