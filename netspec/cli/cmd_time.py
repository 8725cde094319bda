"""`netspec time -model NET`: Caffe's `caffe time` (tools/caffe.cpp time()), per-layer timing.

The net is compiled for -phase (default TRAIN, as caffe time) on the CPU or -gpu, runs one
untimed forward and backward, then -iterations (default 50) timed ones; stdout gets Caffe's lines:
"Iteration: j forward-backward time: X ms." for each, then every layer's mean "<name>\tforward: X ms."
and "<name>\tbackward: Y ms.", "Average Forward pass", "Average Backward pass",
"Average Forward-Backward" and "Total Time". How the backward is cut into layers, and what a net
without a loss does, is in netspec/timing.py.

Caffe times a net as it stands, feeding nothing (its Input blobs hold zeros). netspec feeds Input
blobs standard normal values (labels: zeros), and a data layer whose LMDB cannot be opened is
replaced by such an input, with the shape `--input-shape` gives or its batch_size and crop_size
(as `netspec shapes` does); a data layer with its data at hand reads it, and is timed doing so.
"""
from __future__ import annotations

import logging

from ..errors import NetspecError
from ..proto import pb
from .args import add_input_shapes, add_net_state
from ..graph.inspect import substitute_missing_data
from .cmd_shapes import parse_input_shapes, stages
from .cmd_test import device_of

log = logging.getLogger("netspec.cli.time")

HELP = "time a net's forward and backward passes, layer by layer (caffe time)"
EXAMPLES = ("  netspec time -model models/alexnet/train_val.prototxt -iterations 10\n"
            "  netspec time -model models/caffenet/deploy.prototxt -gpu 0 --input-shape data=128,3,227,227\n")


def add_arguments(p) -> None:
    p.add_argument("--model", help="net prototxt to time")
    p.add_argument("--iterations", type=int, default=50, help="number of timed iterations (default 50)")
    p.add_argument("--gpu", help="GPU id to run on (default: CPU); of a list only the first is used")
    add_net_state(p, "TRAIN", 0)
    add_input_shapes(p)


def compile_for_timing(model: str, phase_name: str, level: int, stage_list, given: dict, device):
    """The net on `device`, data layers without their data replaced by inputs; and the labels among
    the replaced layers' tops (every top after the first)."""
    from ..frontend import load_net
    from ..graph import compile_net

    phase = pb.TRAIN if phase_name == "TRAIN" else pb.TEST
    param = load_net(model, phase=phase, level=level, stages=tuple(stage_list))
    param, notes = substitute_missing_data(param, phase, model, given)
    for name, (kind, why) in notes.items():
        log.warning("%s layer '%s' replaced by an input of random values: %s", kind, name, why)
    labels = {t for lp in param.layer if lp.name in notes for t in lp.top[1:]}
    net = compile_net(param, phase=phase, device_map=str(device), device=device, source=model,
                      input_shapes=given)
    return net, labels


def run(args) -> int:
    from .. import timing

    if not args.model:
        raise NetspecError("-model is required: the net prototxt to time")
    if args.iterations <= 0:
        raise NetspecError(f"-iterations must be positive, got {args.iterations}")
    device = device_of(args.gpu)
    print("Use CPU." if device.type == "cpu" else f"Use GPU with device ID {device.index}")
    net, labels = compile_for_timing(args.model, args.phase, args.level, stages(args.stage),
                                     parse_input_shapes(args.input_shape), device)
    inputs = timing.synthetic_inputs(net, device, labels)
    try:
        timing.warm_up(net, inputs, say=print)
        print("*** Benchmark begins ***")
        print(f"Testing for {args.iterations} iterations.")
        result = timing.time_net(net, args.iterations, inputs, on_iteration=lambda j, ms: print(
            f"Iteration: {j + 1} forward-backward time: {ms:g} ms.", flush=True))
        print("\n".join(result.lines()))
        print("*** Benchmark ends ***")
    finally:
        net.close()
    return 0
