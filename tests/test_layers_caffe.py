"""Every layer against real Caffe 1.0's outputs (tests/data/caffe), without the compiler.

layers_net (TEST phase): each layer is fed Caffe's own bottom blobs where the npz holds the version
the layer reads, so a layer's error does not carry into the next. Caffe's npz holds only the final
version of each blob, so a layer whose top is later overwritten in place (conv1, then relu1) is run
together with those in-place followers and checked on the final blob; an in-place layer reads the
earlier version from a full netspec run of the net.
loss_net (TRAIN phase): forward, autograd backward of the loss, and blob and parameter gradients.
"""

from __future__ import annotations

import pytest
import torch

from layer_runner import (
    FIXTURES,
    build,
    forward,
    load_caffemodel,
    load_npz,
    load_prototxt,
    rel_error,
    writers,
)
from netspec.proto import pb

TOL = 1e-4


@pytest.fixture(scope="module")
def layers_net():
    net = load_prototxt(FIXTURES / "layers_net.prototxt")
    ref = load_npz(FIXTURES / "layers_net_blobs.npz")
    run = build(net, pb.TEST, load_caffemodel(FIXTURES / "layers_net.caffemodel"))
    forward(run, {"data": torch.from_numpy(ref["data"])})
    return run, ref


LAYERS = [lp.name for lp in load_prototxt(FIXTURES / "layers_net.prototxt").layer if lp.type != "Input"]


def _in_place_chain(run, name):
    """`name` and the later layers that overwrite its tops in place."""
    names = list(run.layers)
    chain, blobs = [name], set(run.layers[name].lp.top)
    for later in names[names.index(name) + 1 :]:
        lp = run.layers[later].lp
        if set(lp.top) & blobs and list(lp.bottom) == list(lp.top):
            chain.append(later)
    return chain


@pytest.mark.parametrize("name", LAYERS)
def test_layer_matches_caffe(layers_net, name):
    run, ref = layers_net
    names = list(run.layers)
    blobs = {}
    for blob, netspec_value in zip(run.layers[name].lp.bottom, run.bottoms[name]):
        later_writers = [w for w in writers(run, blob) if names.index(w) >= names.index(name)]
        blobs[blob] = netspec_value if later_writers else torch.from_numpy(ref[blob])
    chain = _in_place_chain(run, name)
    with torch.no_grad():
        for layer_name in chain:
            layer = run.layers[layer_name]
            out = layer(*[blobs[b] for b in layer.lp.bottom])
            blobs.update(zip(layer.lp.top, out if isinstance(out, tuple) else (out,)))
    for top in run.layers[name].lp.top:
        assert tuple(blobs[top].shape) == run.shapes[top] == ref[top].shape, top
        err = rel_error(blobs[top], ref[top])
        assert err < TOL, f"blob '{top}' (layers {chain}): worst relative error {err:.3g}"


@pytest.fixture(scope="module")
def loss_net():
    net = load_prototxt(FIXTURES / "loss_net.prototxt")
    ref = load_npz(FIXTURES / "loss_net_blobs.npz")
    run = build(net, pb.TRAIN, load_caffemodel(FIXTURES / "loss_net.caffemodel"))
    forward(run, {"data": torch.from_numpy(ref["data"]), "label": torch.from_numpy(ref["label"])})
    for versions in run.versions.values():
        for v in versions:
            if v.requires_grad:
                v.retain_grad()
    run.blobs["loss"].backward()
    return run, ref


def test_loss_net_forward(loss_net):
    run, ref = loss_net
    for blob, value in run.blobs.items():
        err = rel_error(value, ref[blob])
        assert err < TOL, f"blob '{blob}': worst relative error {err:.3g}"


def test_loss_net_blob_gradients(loss_net):
    """Caffe's diff of an in-place blob is what its first writer's backward reads: the in-place
    layers' backward passes overwrite the diff in turn, so conv1's diff after relu1's backward is the
    gradient w.r.t. the convolution's output. netspec's equivalent is the first version's gradient.
    Not comparable: `data` and `label` (Caffe computes no diff for net inputs no layer needs, they stay
    0; autograd gives data's real gradient), `acc` (no gradient), Caffe's split blobs (netspec has
    none; their sum is the source's diff, checked through `ip1`)."""
    run, _ = loss_net
    diffs = load_npz(FIXTURES / "loss_net_blob_diffs.npz")
    for blob in ("conv1", "norm1", "pool1", "conv2", "ip1", "loss"):
        first = run.versions[blob][0]
        err = rel_error(first.grad, diffs[blob])
        assert err < TOL, f"gradient of blob '{blob}': worst relative error {err:.3g}"
    assert diffs["loss"] == 1.0  # Caffe seeds the loss blob's diff with its loss weight


def test_loss_net_param_gradients(loss_net):
    run, _ = loss_net
    diffs = load_npz(FIXTURES / "loss_net_param_diffs.npz")
    assert sorted(diffs) == sorted(
        f"{n}/{i}" for n, layer in run.layers.items() for i in range(len(layer.blobs))
    )
    for key, want in diffs.items():
        layer, index = key.split("/")
        err = rel_error(run.layers[layer].blobs[int(index)].grad, want)
        assert err < TOL, f"gradient of param '{key}': worst relative error {err:.3g}"
