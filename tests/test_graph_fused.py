"""netspec/graph/fused.py and pycaffe's deferred blobs: a TEST forward through the oneDNN-fused graph
returns the outputs (and the blobs asked for or handed out) equal to the per-layer graph's, every
other blob is worked out from that forward's inputs when first read, weights changed after a fused
forward are seen, and the per-layer graph is kept where it timed faster or the net cannot be traced."""
from pathlib import Path

import numpy as np
import pytest
import torch

import netspec as caffe
from netspec.graph import fused

NET = """name: "fusable"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 20 dim: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "sc2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }
layer { name: "relu2" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "b1" type: "Convolution" bottom: "norm" top: "b1" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "b2" type: "Convolution" bottom: "norm" top: "b2" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "cat" type: "Concat" bottom: "b1" bottom: "b2" top: "cat" }
layer { name: "ip" type: "InnerProduct" bottom: "cat" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""

INTERMEDIATE = ["conv1", "conv2", "sum", "pool", "norm", "b1", "b2", "cat", "ip"]

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available() or not hasattr(torch._C, "_jit_llga_enabled"),
                                reason="this torch has no oneDNN Graph")


def make_net(tmp_path, mode: str, monkeypatch, text: str = NET):
    monkeypatch.setenv("NETSPEC_FUSED", mode)
    path = tmp_path / f"net_{mode}.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(3)
    for name, blobs in net.params.items():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.1, b.data.shape)
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.2
            blobs[2].data[...] = 1.5
    return net


def image(seed: int):
    return np.random.default_rng(seed).normal(0, 1, (2, 3, 20, 20)).astype(np.float32)


def reference(tmp_path, monkeypatch, x, text: str = NET, change=None):
    ref = make_net(tmp_path, "0", monkeypatch, text)
    if change:
        change(ref)
    ref.blobs["data"].data[...] = x
    ref.forward()
    values = {b: ref.blobs[b].data.copy() for b in ref.blobs}
    return values


def close(got, want, rel=1e-5):
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * max(float(np.abs(want).max()), 1e-30))


def fused_forward(net, x):
    """Two forwards: the first runs the per-layer graph (a net forwarded once is never traced), the
    second traces and runs the fused graph (NETSPEC_FUSED=1)."""
    net.blobs["data"].data[...] = x
    net.forward()
    net.forward()
    cand, = net._fusion.candidates.values()
    assert cand.choice == "fused"


def test_fused_forward_equals_the_per_layer_graph(tmp_path, monkeypatch):
    x = image(1)
    want = reference(tmp_path, monkeypatch, x)
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, x)
    assert torch.jit.last_executed_optimized_graph() is not None
    assert "oneDNNFusionGroup" in str(torch.jit.last_executed_optimized_graph())   # oneDNN Graph ran it
    assert all(net.blobs[b]._deferred is not None for b in INTERMEDIATE)
    assert net.blobs["prob"]._deferred is None
    close(net.blobs["prob"].data, want["prob"])
    assert net.blobs["cat"].shape == want["cat"].shape and net.blobs["cat"].count == want["cat"].size
    assert net.blobs["cat"]._deferred is not None           # shape and count need no values
    for b in INTERMEDIATE:                                   # worked out on first read, each its own value
        close(net.blobs[b].data, want[b])
    assert all(net.blobs[b]._deferred is None for b in net.blobs)


def test_deferred_blobs_are_the_forward_inputs_values(tmp_path, monkeypatch):
    x, y = image(1), image(2)
    want = reference(tmp_path, monkeypatch, x)
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, x)
    net.blobs["data"].data[...] = y                         # the next batch fed, not yet forwarded
    close(net.blobs["sum"].data, want["sum"])
    close(net.blobs["ip"].data, want["ip"])


def test_blobs_asked_for_or_handed_out_come_from_the_fused_graph(tmp_path, monkeypatch):
    x, y = image(1), image(2)
    net = make_net(tmp_path, "1", monkeypatch)
    net.blobs["data"].data[...] = x
    net.forward(blobs=["norm"])
    out = net.forward(blobs=["norm"])                       # traced with 'norm' among its outputs
    assert ("norm", "prob") == tuple(sorted(out))
    keys = [k[0] for k in net._fusion.candidates]
    assert ("norm", "prob") in [tuple(sorted(k)) for k in keys]
    close(out["norm"], reference(tmp_path, monkeypatch, x)["norm"])
    held = net.blobs["b2"].data                             # an array handed out stays this blob's memory
    net.blobs["data"].data[...] = y
    net.forward()
    net.forward()
    assert net.blobs["b2"]._deferred is None and net.blobs["conv1"]._deferred is not None
    want = reference(tmp_path, monkeypatch, y)
    close(held, want["b2"])
    close(net.blobs["prob"].data, want["prob"])


def test_weights_changed_after_a_fused_forward_are_used(tmp_path, monkeypatch):
    x = image(1)
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, x)

    def change(n):
        n.params["conv2"][0].data[...] *= -1.5              # through numpy: no torch version bump
        n.params["bn1"][0].data[...] += 0.25
    change(net)
    net.forward()
    want = reference(tmp_path, monkeypatch, x, change=change)
    close(net.blobs["prob"].data, want["prob"])
    close(net.blobs["sum"].data, want["sum"])
    with torch.no_grad():                                    # through torch
        net.params["ip"][1]._data[0] += 3.0
    net.forward()
    assert 0.05 < want["prob"].max() < 0.95           # not saturated: a changed bias shows
    assert not np.allclose(net.blobs["prob"].data, want["prob"])

    def change2(n):
        change(n)
        n.params["ip"][1].data[0] += 3.0
    close(net.blobs["prob"].data, reference(tmp_path, monkeypatch, x, change=change2)["prob"])


def test_the_faster_graph_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(fused, "_mode", lambda: "auto")
    monkeypatch.setattr(fused, "MIN_MACS", 0)
    x = image(1)
    net = make_net(tmp_path, "auto", monkeypatch)
    net.blobs["data"].data[...] = x
    net.forward()
    net.forward()                                            # traced; now timed in turn
    cand, = net._fusion.candidates.values()
    real = cand.module

    def slow(*a):
        import time
        time.sleep(0.05)
        return real(*a)
    cand.module = slow
    cand.times = {"fused": [], "layers": []}                # timed from here
    for _ in range(2 * fused.TRIALS + 1):
        net.forward()
    assert cand.choice == "layers"
    assert all(net.blobs[b]._deferred is None for b in net.blobs)   # the per-layer graph computes every blob
    calls = []
    cand.module = lambda *a: calls.append(1) or real(*a)
    net.forward()
    assert not calls


def test_nets_it_cannot_trace_or_that_are_too_small_are_never_fused(tmp_path, monkeypatch):
    argmax = NET + 'layer { name: "am" type: "ArgMax" bottom: "prob" top: "am" }\n'   # not in TRACEABLE
    net = make_net(tmp_path, "1", monkeypatch, argmax)
    assert not fused.fusable(net.compiled)
    small = make_net(tmp_path, "auto", monkeypatch)
    assert fused._macs(small.compiled) < fused.MIN_MACS and not fused.fusable(small.compiled)
    off = make_net(tmp_path, "0", monkeypatch)
    assert not fused.fusable(off.compiled)
    for n in (net, small):
        n.blobs["data"].data[...] = image(1)
        n.forward()
        n.forward()
        assert not n._fusion.candidates and all(n.blobs[b]._deferred is None for b in n.blobs)


def test_many_handed_out_blobs_use_the_per_layer_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(fused, "MAX_EXTRA", 3)
    net = make_net(tmp_path, "1", monkeypatch)
    net.blobs["data"].data[...] = image(1)
    for b in net.blobs:                                     # a tutorial's `for k, v in net.blobs.items(): v.data.shape`
        _ = net.blobs[b].data.shape
    net.forward()
    net.forward()
    assert not net._fusion.candidates


def test_macs_of_caffenet():
    net = caffe.Net(str(Path(__file__).resolve().parents[1] / "models/caffenet/deploy.prototxt"), caffe.TEST)
    # the single-column deploy net, per image: conv1 55²·96·363, conv2 27²·256·2400, conv3 13²·384·2304,
    # conv4 13²·384·3456, conv5 13²·256·3456, fc6 4096·9216, fc7 4096², fc8 1000·4096; batch 10
    per_image = (55**2 * 96 * 363 + 27**2 * 256 * 2400 + 13**2 * 384 * 2304 + 13**2 * 384 * 3456
                 + 13**2 * 256 * 3456 + 4096 * 9216 + 4096**2 + 1000 * 4096)
    assert fused._macs(net.compiled) == 10 * per_image


def test_a_reshaped_net_traces_again_and_defers_blobs_of_the_new_shapes(tmp_path, monkeypatch):
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, image(1))
    net.blobs["data"].reshape(1, 3, 20, 20)
    net.reshape()
    x = np.random.default_rng(5).normal(0, 1, (1, 3, 20, 20)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    net.forward()
    assert len(net._fusion.candidates) == 2
    assert net.blobs["cat"]._deferred is not None and net.blobs["cat"].shape == (1, 16, 10, 10)
    ref = make_net(tmp_path, "0", monkeypatch)
    ref.blobs["data"].reshape(1, 3, 20, 20)
    ref.reshape()
    ref.blobs["data"].data[...] = x
    ref.forward()
    for b in ("cat", "prob"):
        close(net.blobs[b].data, ref.blobs[b].data)


def test_a_fused_graph_that_fails_hands_over_to_the_per_layer_graph(tmp_path, monkeypatch, caplog):
    x = image(1)
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, x)
    cand, = net._fusion.candidates.values()

    def broken(*a):
        raise RuntimeError("oneDNN Graph: no kernel")
    cand.module = broken
    net.forward()
    assert "fused inference graph failed (oneDNN Graph: no kernel)" in caplog.text
    assert not net._fusion.enabled and all(net.blobs[b]._deferred is None for b in net.blobs)
    close(net.blobs["prob"].data, reference(tmp_path, monkeypatch, x)["prob"])


def test_a_blob_read_after_the_weights_changed_says_so(tmp_path, monkeypatch, caplog):
    net = make_net(tmp_path, "1", monkeypatch)
    fused_forward(net, image(1))
    net.params["conv1"][0].data[...] *= 2
    _ = net.blobs["conv1"].data
    assert "worked out with the weights as changed since that forward" in caplog.text
    caplog.clear()
    net.forward()
    _ = net.blobs["conv2"].data
    assert "changed since" not in caplog.text


def test_choosing_the_fused_graph_frees_the_per_layer_graphs_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(fused, "_mode", lambda: "auto")
    monkeypatch.setattr(fused, "MIN_MACS", 0)
    x = image(1)
    want = reference(tmp_path, monkeypatch, x)
    net = make_net(tmp_path, "auto", monkeypatch)
    net.blobs["data"].data[...] = x
    net.forward()
    net.forward()
    layers = net._inference
    real = layers.forward

    def slow(*a):
        import time
        time.sleep(0.05)
        return real(*a)
    layers.forward = slow
    cand, = net._fusion.candidates.values()
    cand.times = {"fused": [], "layers": []}
    for _ in range(2 * fused.TRIALS + 1):
        net.forward()
    cand, = net._fusion.candidates.values()
    assert cand.choice == "fused"
    folded = [m for m in layers.modules() if isinstance(m, fused._Folded)]
    assert folded and all(m.weight is None and m._packed is None for m in folded)
    for b in ("conv1", "conv2", "prob"):                   # worked out again for a deferred blob
        close(net.blobs[b].data, want[b])


HEAD = """name: "one_more_layer"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
"""
TAIL = """layer { name: "conv2" type: "Convolution" bottom: "{top}" top: "out" convolution_param { num_output: 4 kernel_size: 3 } }
"""
MIDDLE = {
    "Power": 'layer { name: "m" type: "Power" bottom: "conv1" top: "m" power_param { power: 2 scale: 0.5 shift: 1 } }',
    "AbsVal": 'layer { name: "m" type: "AbsVal" bottom: "conv1" top: "m" }',
    "ELU": 'layer { name: "m" type: "ELU" bottom: "conv1" top: "m" elu_param { alpha: 0.5 } }',
    "PReLU": 'layer { name: "m" type: "PReLU" bottom: "conv1" top: "m" }',
    "BNLL": 'layer { name: "m" type: "BNLL" bottom: "conv1" top: "m" }',
    "Exp": 'layer { name: "m" type: "Exp" bottom: "conv1" top: "m" exp_param { base: 2 scale: 0.1 } }',
    "Log": 'layer { name: "m" type: "Log" bottom: "conv1" top: "m" log_param { scale: 0.01 shift: 100 } }',
    "Bias": 'layer { name: "m" type: "Bias" bottom: "conv1" top: "m" }',
    "Deconvolution": 'layer { name: "m" type: "Deconvolution" bottom: "conv1" top: "m" '
                     'convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 } }',
    "Crop": 'layer { name: "up" type: "Deconvolution" bottom: "conv1" top: "up" '
            'convolution_param { num_output: 6 kernel_size: 4 stride: 2 } }\n'
            'layer { name: "m" type: "Crop" bottom: "up" bottom: "data" top: "m" crop_param { axis: 2 offset: 3 } }',
    "Reshape": 'layer { name: "m" type: "Reshape" bottom: "conv1" top: "m" '
               'reshape_param { shape { dim: 0 dim: 16 dim: 6 dim: -1 } } }',
    "Slice": 'layer { name: "m" type: "Slice" bottom: "conv1" top: "m" top: "rest" slice_param { slice_point: 3 } }\n'
             'layer { name: "conv3" type: "Convolution" bottom: "rest" top: "out3" convolution_param { num_output: 2 kernel_size: 1 } }',
}


@pytest.mark.parametrize("kind", sorted(MIDDLE))
def test_more_layer_types_fuse_with_the_per_layer_graphs_values(tmp_path, monkeypatch, kind):
    text = HEAD + MIDDLE[kind] + "\n" + TAIL.replace("{top}", "m")
    x = image(4)[:, :, :12, :12].copy()
    ref = make_net(tmp_path, "0", monkeypatch, text)
    ref.blobs["data"].data[...] = x
    ref.forward()
    net = make_net(tmp_path, "1", monkeypatch, text)
    assert fused.fusable(net.compiled)
    net.blobs["data"].data[...] = x
    net.forward()
    net.forward()
    cand, = net._fusion.candidates.values()
    assert cand.choice == "fused" and net.blobs["m"]._deferred is not None
    for b in net.blobs:
        want = ref.blobs[b].data
        assert np.isfinite(want).all()
        close(net.blobs[b].data, want)
