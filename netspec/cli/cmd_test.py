"""`netspec test -model NET -weights W.caffemodel`: Caffe's `caffe test` (tools/caffe.cpp test()).

The net of the TEST phase (or -phase) is compiled, on the CPU unless -gpu, the weights are copied in
by layer name (several files, comma-separated, in order), and it runs -iterations times (default 50).
stdout gets Caffe's lines: "Batch i, blob = v" for every element of every output blob, then
"Loss: L" and each element's mean "blob = m", with " (* w = w*m loss)" for loss blobs; then
"top-1 error = ..." / "top-5 error = ..." for Accuracy layers with top_k 1 / 5.

netspec extensions: `--input NAME=FILE.npy` feeds an Input blob the same array every iteration
(Caffe feeds such nets zeros, which is what an unfed input gets here too); `--oversample` adds the
paper's 10-view test (netspec/evaluate.py says exactly how) for a net read by a cropping Data layer.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .args import add_net_state
from .cmd_shapes import stages

if TYPE_CHECKING:
    import torch

log = logging.getLogger("netspec.cli.test")

HELP = "score a trained net: Caffe's per-batch and mean outputs, loss, top-1/top-5 error (caffe test)"
EXAMPLES = ("  netspec test -model models/caffenet/train_val.prototxt -weights caffenet.caffemodel "
            "-iterations 1000 -gpu 0\n"
            "  netspec test -model deploy.prototxt -weights w.caffemodel --input data=x.npy -iterations 1\n"
            "  netspec test -model train_val.prototxt -weights w.caffemodel --oversample\n")


def add_arguments(p) -> None:
    p.add_argument("--model", help="net prototxt to score")
    p.add_argument("--weights", help="trained .caffemodel(s), comma-separated, copied in order")
    p.add_argument("--iterations", type=int, default=50, help="number of forward passes (default 50)")
    p.add_argument("--gpu", help="GPU id to run on (default: CPU); of a list only the first is used")
    add_net_state(p, "TEST", 0)
    p.add_argument("--input", action="append", default=[], metavar="BLOB=FILE.npy",
                   help="feed an Input blob from a .npy array on every iteration (repeatable)")
    p.add_argument("--oversample", action="store_true",
                   help="also the 10-view test (corner and centre crops, mirrored, softmax averaged)")
    p.add_argument("--no-batch-lines", action="store_true", help="print only the means, not every batch")


def device_of(flag: str | None) -> torch.device:
    """-gpu '' -> CPU; '0', '1,2' or 'all' -> the first GPU, as caffe test uses one."""
    import torch

    if not flag:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    first = flag.split(",")[0].strip()
    if first == "all":
        first = "0"
    if not first.isdigit() or int(first) >= count:
        raise NetspecError(f"-gpu {flag}: this machine has {count} CUDA device(s)"
                           + ("" if count else " (drop -gpu to run on the CPU)"))
    if "," in flag or flag.strip() == "all" and count > 1:
        log.info("Not using GPUs other than %s for single-GPU function", first)
    return torch.device("cuda", int(first))


def read_inputs(items: list[str]) -> dict[str, np.ndarray]:
    """--input data=x.npy -> {'data': float32 array}."""
    out = {}
    for item in items:
        name, _, path = item.partition("=")
        if not name or not path:
            raise NetspecError(f"--input '{item}': expected BLOB=FILE.npy")
        try:
            out[name.strip()] = np.asarray(np.load(path, allow_pickle=False), np.float32)
        except FileNotFoundError:
            raise NetspecError("no such file (expected a .npy array for --input)", file=path) from None
        except (ValueError, OSError) as e:
            raise NetspecError(f"not a .npy array: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                               file=path) from None
    return out


def load_trained_net(model: str | None, weights: str | None, phase: int, level: int, stage_list,
                     device: torch.device, input_shapes: dict | None = None):
    """Compile `model` for `phase` on `device` and copy in the comma-separated `weights`."""
    from ..frontend import load_net
    from ..graph import compile_net
    from ..formats import load_weights

    if not model:
        raise NetspecError("-model is required: the net prototxt to score")
    if not weights:
        raise NetspecError("-weights is required: the trained .caffemodel to score")
    files = [w.strip() for w in weights.split(",") if w.strip()]
    for w in files:  # before compiling, which may open LMDBs: a missing file is the likelier slip
        if not Path(w).is_file():
            raise NetspecError("no such file (expected a binary .caffemodel)", file=w)
    param = load_net(model, phase=phase, level=level, stages=tuple(stage_list))
    net = compile_net(param, phase=phase, device_map=str(device), device=device, source=model,
                      input_shapes=input_shapes)
    copied: set[str] = set()
    for w in files:
        report = load_weights(net.params(), w)
        log.info("%s", report.summary())
        copied.update(report.copied)
    missing = [n for n in net.params() if n not in copied]
    if missing:
        log.warning("layers absent from the weights keep their filler values: %s", ", ".join(missing))
    return net


def _fed_inputs(net, arrays: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
    unknown = [n for n in arrays if n not in net.input_names]
    if unknown:
        raise NetspecError(f"--input {', '.join(unknown)}: net '{net.name}' has no such input blob "
                           f"(its inputs: {', '.join(net.input_names) or 'none'})")
    import torch

    fed = {}
    for b in net.input_names:
        if b in arrays:
            fed[b] = torch.from_numpy(arrays[b]).to(device)
        else:
            log.warning("input blob '%s' is not fed (--input %s=FILE.npy): it holds zeros, as in Caffe", b, b)
            fed[b] = torch.zeros(net.blob_shapes[b], device=device)
    return fed


def run(args) -> int:
    from .. import evaluate

    device = device_of(args.gpu)
    arrays = read_inputs(args.input)
    phase = pb.TRAIN if args.phase == "TRAIN" else pb.TEST
    net = load_trained_net(args.model, args.weights, phase, args.level, stages(args.stage), device,
                           {b: a.shape for b, a in arrays.items()})
    inputs = _fed_inputs(net, arrays, device)
    log.info("Running for %d iterations.", args.iterations)

    def show(i, values):
        if not args.no_batch_lines:
            print("\n".join(evaluate.batch_lines(i, values)), flush=True)

    try:
        scores = evaluate.score(net, args.iterations, inputs, show)
        for line in evaluate.summary_lines(scores) + evaluate.error_lines(net, scores):
            print(line)
        if args.oversample:
            print("\n".join(evaluate.oversample(net, args.iterations).lines()))
    finally:
        net.close()
    return 0
