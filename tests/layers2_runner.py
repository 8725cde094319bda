"""Test helper: run one of real Caffe's layers2 fixture nets (tests/data/caffe/layers2/NAME.*) through
netspec's whole path — the front end, the compiler and pycaffe's Net with the fixture's caffemodel — and
compare every blob, blob diff and parameter diff with what Caffe wrote in NAME.npz.

The net runs with the fixture folder as the current directory (its relative paths are relative to it,
as when Caffe ran), in the phase NAME.json names; Input blobs are fed input/<blob>, then one forward
and, for TRAIN nets, one backward, as Caffe's generator did.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

import netspec
from layer_runner import rel_error

LAYERS2 = Path(__file__).parent / "data" / "caffe" / "layers2"


def run_caffe_net(name: str):
    """(pycaffe Net after forward [+ backward], Caffe's npz arrays, NAME.json)."""
    meta = json.loads((LAYERS2 / f"{name}.json").read_text())
    with np.load(LAYERS2 / f"{name}.npz") as d:
        ref = {k: d[k] for k in d.files}
    phase = netspec.TRAIN if meta["phase"] == "TRAIN" else netspec.TEST
    with contextlib.chdir(LAYERS2):
        net = netspec.Net(os.fspath(LAYERS2 / f"{name}.prototxt"), os.fspath(LAYERS2 / f"{name}.caffemodel"),
                          phase)
        for blob in net.inputs:
            net.blobs[blob].data[...] = ref[f"input/{blob}"]
        net.forward()
        if meta["backward"]:
            net.backward()
    return net, ref, meta


def mismatches(name: str, tol: float = 1e-4) -> list[str]:
    """Every blob, diff and param diff that differs from Caffe's by more than `tol` (relative), as
    messages naming it and the worst error; Caffe's inserted *_split_* blobs are not netspec's."""
    net, ref, meta = run_caffe_net(name)
    bad = []

    def check(what, got, want):
        got = np.asarray(got)
        if got.shape != want.shape:
            bad.append(f"{name}: {what} has shape {got.shape}, Caffe's {want.shape}")
            return
        err = rel_error(got, want)
        if err >= tol:
            bad.append(f"{name}: {what} differs from Caffe's by {err:.2e} (relative)")

    for blob in net.blobs:
        check(f"blob '{blob}'", net.blobs[blob].data, ref[f"blob/{blob}"])
        if meta["backward"]:
            check(f"diff of '{blob}'", net.blobs[blob].diff, ref[f"diff/{blob}"])
    if meta["backward"]:
        for layer, blobs in net.params.items():
            for i, p in enumerate(blobs):
                check(f"param diff {layer}/{i}", p.diff, ref[f"paramdiff/{layer}/{i}"])
    return bad
