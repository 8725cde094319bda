"""ONNX's reference evaluator with its LRN corrected, for tests that run exported nets.

onnx 1.23's reference LRN (onnx/reference/ops/op_lrn.py) loops `for c in range(x.shape[0])`, over the
batch instead of the channels, so every channel past the batch size gets no window sum. This one follows
the ONNX operator's definition, y = x / (bias + alpha/size * sum of x^2 over channels
[c - floor((size-1)/2), c + ceil((size-1)/2)])^beta, which is Caffe's ACROSS_CHANNELS LRN; onnxruntime's
LRN gives netspec's numbers within 1.1e-7 relative on an exported LRN net (checked by hand, 2026-11-30).
"""
from __future__ import annotations

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun


class LRN(OpRun):
    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        sq = x.astype(np.float64) ** 2
        channels, before, after = x.shape[1], (size - 1) // 2, size // 2
        total = np.zeros_like(sq)
        for c in range(channels):
            total[:, c] = sq[:, max(0, c - before):min(channels, c + after + 1)].sum(axis=1)
        return ((x / (bias + (alpha / size) * total) ** beta).astype(x.dtype),)


def evaluator(model) -> ReferenceEvaluator:
    return ReferenceEvaluator(model, new_ops=[LRN])
