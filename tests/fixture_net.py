"""Test helper: run one of real Caffe's layers2 fixture nets (tests/data/caffe/layers2/NAME.*) with
netspec's layer classes and compare every blob, diff and parameter diff with what Caffe wrote.

Input and Parameter layers are fed from the fixture's npz (input/<blob>, param/<layer>/0); the other
layers are built from their LayerParameter and bottom shapes, take their parameters from the npz, run
in net order, and one backward of Σ loss_weight·loss follows, as Caffe's Net::Backward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from layer_runner import load_prototxt, rel_error

from netspec.layers import layer_class

LAYERS2 = Path(__file__).parent / "data" / "caffe" / "layers2"


def run_fixture(name: str):
    """(npz arrays, blobs by name, layers by name) after forward and one backward."""
    net = load_prototxt(LAYERS2 / f"{name}.prototxt")
    with np.load(LAYERS2 / f"{name}.npz") as d:
        ref = {k: d[k] for k in d.files}
    blobs, layers, loss = {}, {}, 0.0
    for lp in net.layer:
        if lp.type in ("Input", "Parameter"):
            for top in lp.top:
                value = ref[f"input/{top}"] if lp.type == "Input" else ref[f"param/{lp.name}/0"]
                blobs[top] = torch.tensor(value, dtype=torch.float32, requires_grad=True)
            continue
        layer = layer_class(lp.type)(lp, [tuple(blobs[b].shape) for b in lp.bottom], 0)
        with torch.no_grad():
            for i, blob in enumerate(layer.blobs):
                blob.copy_(torch.as_tensor(ref[f"param/{lp.name}/{i}"]))
        out = layer(*[blobs[b] for b in lp.bottom])
        out = list(out) if isinstance(out, (tuple, list)) else [out]
        weights = list(lp.loss_weight) or [layer.default_loss_weight]
        for top, value, w in zip(lp.top, out, weights + [0.0] * len(out)):
            value = value.view_as(value)  # a top's diff is what its consumers send, not the layer's inside
            value.retain_grad()
            blobs[top] = value
            loss = loss + w * value.sum()
        layers[lp.name] = layer
    loss.backward()
    return ref, blobs, layers


def assert_matches_caffe(name: str, tol: float = 1e-4) -> None:
    """Forward blobs, blob diffs (Caffe's zero diff where netspec has no gradient) and param diffs."""
    ref, blobs, layers = run_fixture(name)
    for blob, value in blobs.items():
        err = rel_error(value, ref[f"blob/{blob}"])
        assert err < tol, f"{name}: blob '{blob}' differs from Caffe's by {err:.2e} (relative)"
        want = ref[f"diff/{blob}"]
        if value.ndim == 0:  # a loss top: Caffe's diff is its loss weight, not a gradient
            continue
        got = value.grad if value.grad is not None else torch.zeros_like(value)
        err = rel_error(got, want)
        assert err < tol, f"{name}: diff of '{blob}' differs from Caffe's by {err:.2e} (relative)"
    for lname, layer in layers.items():
        for i, p in enumerate(layer.blobs):
            err = rel_error(p.grad, ref[f"paramdiff/{lname}/{i}"])
            assert err < tol, f"{name}: param diff {lname}/{i} differs from Caffe's by {err:.2e}"
