"""A TEST net's inference graph fused by oneDNN Graph, for the blobs a user reads.

The per-layer inference graph (inference.py) computes every blob, as Caffe's forward does; each
convolution is a framework call with a fresh output tensor. oneDNN Graph instead compiles chains of
them into one partition (ResNet's "residual_conv_blocks": a whole stage, the residual add and ReLU
inside the convolution, buffers reused): ResNet-50 at batch 1 on this project's 2-core machine
52-55 ms -> 35-40 ms (benchmarks/RESULTS.md). Fused, the intermediate blobs no longer exist, so a
fused graph computes only the blobs asked for; pycaffe's Net computes the others from the per-layer
graph when one is read (netspec/pycaffe/net.py).

Whether it pays depends on the net, the batch and the machine (CaffeNet at batch 1 runs as fast
per-layer; GoogLeNet at batch 10 ran 1.2x slower fused until pooling was left to oneDNN Graph), so
`FusedInference` times the two graphs on the net's own forwards, in turn, and keeps the
faster. The fused graph is a TorchScript trace with the weights frozen in: it is made again when a
weight changes, for each set of outputs and input shapes, at most MAX_BUILDS times a net.
NETSPEC_FUSED=0 never fuses, =1 always does (where the net allows it; for tests).
"""
from __future__ import annotations

import ctypes
import logging
import math
import os
import time
import warnings

import torch

from ..proto import pb
from .inference import BlobsSeen, _Folded, inference_module

log = logging.getLogger("netspec")

# Layers whose forward is torch calls only (no host values, no randomness at TEST), so a trace records it.
TRACEABLE = {"Input", "Convolution", "Deconvolution", "InnerProduct", "Pooling", "LRN", "ReLU", "PReLU", "ELU",
             "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log", "Softmax", "Concat", "Eltwise", "Dropout",
             "Split", "Slice", "Crop", "Reshape", "Flatten", "BatchNorm", "Scale", "Bias"}
MIN_MACS = 100e6       # below this a trace costs more than fusion can save (LeNet: 2.3M, CaffeNet: 1.1G an image)
MAX_EXTRA = 8          # blobs beyond the net's outputs a fused graph hands out
MAX_BUILDS = 4         # traces per net (a user reading another blob each forward would retrace each time)
TRIALS = 3             # timed forwards of each graph before choosing (the fastest of each compared:
                       # other work on the machine only ever adds time)


def _mode() -> str:
    return os.environ.get("NETSPEC_FUSED", "auto")


def _macs(net) -> float:
    """Multiply-adds of the net's convolutions and inner products: a top value each costs one weight
    row (a convolution's filter over its group's channels, an inner product's inputs)."""
    total = 0.0
    for step in net.steps:
        if step.layer.type in ("Convolution", "InnerProduct") and step.tops:
            per_value = step.layer.weight[0].numel()
            total += math.prod(net.blob_shapes[step.tops[0]]) * per_value
    return total


def fusable(net) -> bool:
    """Whether oneDNN Graph may run this net: a TEST net on the CPU in float32 of traceable layers,
    big enough to pay for its trace."""
    if _mode() == "0" or net.phase != pb.TEST or not torch.backends.mkldnn.is_available() \
            or not hasattr(torch._C, "_jit_llga_enabled"):
        return False
    for step in net.steps:
        if step.transfers or step.device.type != "cpu" or step.layer.type not in TRACEABLE:
            return False
        if any(t.dtype != torch.float32 for t in step.layer.blobs):
            return False
    return _mode() == "1" or _macs(net) >= MIN_MACS


def trace_fused(net, outputs: list[str], inputs: list[torch.Tensor]):
    """The inference graph for `outputs`, traced at these inputs' shapes, weights frozen, and run
    twice with oneDNN Graph fusion on (TorchScript's profiling executor fuses on its second call and
    keeps that plan; the global switch is put back)."""
    gm = inference_module(net, outputs, pack=False)
    learning = [p for p in net.parameters() if p.requires_grad]
    before = torch._C._jit_llga_enabled()
    try:
        # frozen constants may not require grad: the Parameters are the constants (no copy of the
        # weights), so they stop requiring it until the fused plan exists
        for p in learning:
            p.requires_grad_(False)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")          # TorchScript's deprecation notices
            module = torch.jit.freeze(torch.jit.trace(gm, tuple(inputs), strict=False, check_trace=False).eval())
            torch.jit.enable_onednn_fusion(True)
            for _ in range(2):
                module(*inputs)
    finally:
        torch.jit.enable_onednn_fusion(before)
        for p in learning:
            p.requires_grad_(True)
    _trim_heap()
    return module


def _trim_heap() -> None:
    """Hand the trace's freed scratch back to the system: glibc keeps it otherwise, and ResNet-50's
    process stays 500 MB larger than it needs to be."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):      # not glibc
        pass


class _Candidate:
    def __init__(self, net, outputs, inputs, choice: str | None):
        self.weights = BlobsSeen(net.parameters())     # the weights frozen into the trace
        self.module = trace_fused(net, outputs, inputs)
        self.times = {"fused": [], "layers": []}
        self.choice = "fused" if _mode() == "1" else choice


class FusedInference:
    """Runs a TEST forward through the per-layer graph (every blob) or a fused one (only the blobs
    wanted), whichever measured faster for these outputs and input shapes."""

    def __init__(self, net):
        self.net = net
        self.enabled = fusable(net)
        self.candidates: dict = {}
        self.seen: set = set()
        self.builds = 0
        self.last: _Candidate | None = None

    def run(self, layers, inputs: list[torch.Tensor], wanted: list[str]) -> tuple[dict, bool]:
        """{blob: tensor} and whether every blob is in it. Call under torch.no_grad()."""
        cand = self._candidate(inputs, wanted) if self.enabled and len(wanted) <= MAX_EXTRA + len(
            self.net.output_names) else None
        choice = "layers" if cand is None else cand.choice or min(cand.times, key=lambda k: len(cand.times[k]))
        start = time.perf_counter()
        if choice == "layers":
            out = layers(*inputs)
        else:
            try:
                out = cand.module(*inputs)
            except RuntimeError as e:      # a oneDNN Graph partition it cannot run: never again here
                log.warning("net '%s': fused inference graph failed (%s); per-layer graph from now on",
                            self.net.name, str(e).splitlines()[0] if str(e) else type(e).__name__)
                self.enabled, self.candidates, self.last = False, {}, None
                return layers(*inputs), True
        if cand is not None and cand.choice is None:
            cand.times[choice].append(time.perf_counter() - start)
            if all(len(v) >= TRIALS for v in cand.times.values()):
                cand.choice = min(cand.times, key=lambda k: min(cand.times[k]))
                self._release(cand, layers)
                log.debug("net '%s': %s inference graph chosen (%s)", self.net.name, cand.choice,
                          {k: f"{1000 * min(v):.1f} ms" for k, v in cand.times.items()})
        self.last = cand if choice == "fused" else None
        return out, choice == "layers"

    @staticmethod
    def _release(cand: _Candidate, layers) -> None:
        """Free the weights of the graph not chosen (ResNet-50: 200 MB of folded and packed copies)."""
        if cand.choice == "layers":
            cand.module = None
        else:
            for m in layers.modules():
                if isinstance(m, _Folded):
                    m.release()
        _trim_heap()

    def weights_unchanged(self) -> bool:
        """Whether the net's weights are still those the last fused forward ran with."""
        return self.last is None or self.last.weights.current()

    def _candidate(self, inputs, wanted) -> _Candidate | None:
        key = (tuple(wanted), tuple((tuple(t.shape), t.dtype, t.device.type, t.is_contiguous()) for t in inputs))
        cand = self.candidates.get(key)
        if cand is not None and (cand.choice == "layers" or cand.weights.current()):
            return cand
        if cand is None and key not in self.seen:
            self.seen.add(key)       # a net forwarded once (one image to classify) never pays for a trace
            return None
        if self.builds >= MAX_BUILDS or not all(t.is_contiguous() and t.dtype == torch.float32 for t in inputs):
            return None
        self.builds += 1
        try:
            # new weights, same shapes: the choice made stands
            cand = _Candidate(self.net, wanted, inputs, cand.choice if cand is not None else None)
        except Exception as e:       # a TorchScript without this support: the per-layer graph it is
            log.debug("net '%s': no fused inference graph (%s)", self.net.name, e)
            self.enabled = False
            return None
        self.candidates[key] = cand
        return cand
