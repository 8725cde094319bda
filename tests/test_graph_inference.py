"""netspec/graph/inference.py: the inference rewrites keep every blob a user can read equal to the eager
net's (folded convolution + BatchNorm + Scale chains, a BatchNorm read by two layers, lone BatchNorms,
Dropout, in-place ReLU next to views), and the folded weights follow later weight changes."""
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.frontend import prepare_net
from netspec.graph import compile_net
from netspec.graph.inference import _Folded, inference_module
from netspec.proto import pb

NET = """name: "resnetish"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 1 bias_term: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "sc2" type: "Scale" bottom: "bn2" top: "bn2" scale_param { bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "bn2" bottom: "conv1" top: "sum" }
layer { name: "other" type: "Power" bottom: "bn2" top: "other" power_param { scale: 2 } }
layer { name: "bn3" type: "BatchNorm" bottom: "sum" top: "sum" }
layer { name: "sc3" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: true } }
layer { name: "relu3" type: "ReLU" bottom: "sum" top: "sum" relu_param { negative_slope: 0.1 } }
layer { name: "conv4" type: "Convolution" bottom: "sum" top: "conv4" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "flat" type: "Flatten" bottom: "conv4" top: "flat" }
layer { name: "relu4" type: "ReLU" bottom: "flat" top: "flat" }
layer { name: "ip" type: "InnerProduct" bottom: "flat" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "relu5" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" dropout_param { dropout_ratio: 0.5 } }
layer { name: "drop2" type: "Dropout" bottom: "ip" top: "dropped" }
layer { name: "relu6" type: "ReLU" bottom: "dropped" top: "dropped" }
layer { name: "prob" type: "Softmax" bottom: "dropped" top: "prob" }
"""


def compiled(text: str = NET):
    net = pb.NetParameter()
    text_format.Parse(text, net)
    net = prepare_net(net, pb.NetState(phase=pb.TEST), None)
    cn = compile_net(net, pb.TEST, seed=5)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for name, blobs in cn.params().items():
            for t in blobs:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)
            if cn.layers[name].type == "BatchNorm":
                blobs[1].abs_().add_(0.1)           # variances
                blobs[2].fill_(2.0)                 # scale factor
    return cn


def assert_close_blobs(got: dict, want: dict, rel: float = 1e-5):
    assert set(got) == set(want)
    for b, w in want.items():
        g = got[b]
        scale = float(w.abs().max()) or 1.0
        err = float((g - w).abs().max())
        assert err <= rel * scale, f"blob {b}: worst error {err:g} of max {scale:g}"


def test_every_blob_equals_the_eager_net():
    cn = compiled()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = {b: t.clone() for b, t in cn(x).items()}
    gm = inference_module(cn)
    with torch.inference_mode():
        got = gm(x)
    assert_close_blobs(got, want)
    # The chains that were folded: conv1+bn1+sc1+relu1 into one convolution; bn2 (read by two layers)
    # and sum's bn3+sc3 as affines; conv2 and conv4 alone are packed convolutions (on the CPU).
    folds = [m.chain for m in gm.modules() if isinstance(m, _Folded)]
    name = lambda layer: layer.name if layer is not None else None   # noqa: E731
    assert [(name(c.conv), name(c.bn), name(c.scale), c.relu is not None) for c in folds] \
        == [("conv1", "bn1", "sc1", True), ("conv2", None, None, False), (None, "bn2", "sc2", False),
            (None, "bn3", "sc3", False), ("conv4", None, None, False)]
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    assert not any("drop" in str(t) or "bn" in str(t) or "sc" in str(t) for t in called)


def test_views_and_aliases_are_not_overwritten_in_place():
    cn = compiled()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = cn(x)
    with torch.inference_mode():
        got = inference_module(cn)(x)
    # flat is a view of conv4, rewritten in place by relu4; dropped aliases ip before relu6
    assert (want["conv4"] < 0).sum() > 10 and (got["flat"] >= 0).all() and (got["ip"] >= 0).all()
    assert_close_blobs({b: got[b] for b in ("conv4", "flat", "ip", "dropped")},
                       {b: want[b] for b in ("conv4", "flat", "ip", "dropped")})


def test_outputs_can_be_a_folded_chains_blob():
    cn = compiled()
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = cn(x)
    with torch.inference_mode():
        got = inference_module(cn, ["conv1", "bn2", "prob"])(x)
    assert list(got) == ["conv1", "bn2", "prob"]
    assert_close_blobs(got, {b: want[b] for b in got})


def test_folded_weights_follow_weight_changes():
    cn = compiled()
    gm = inference_module(cn, ["conv1", "sum", "conv4"])
    x = torch.randn(2, 3, 12, 12)
    with torch.inference_mode():
        gm(x)
    with torch.no_grad():
        cn.layers["conv1"].weight.mul_(-1.5)             # a torch update (e.g. a solver step)
        cn.layers["bn3"].variance.mul_(4.0)
        cn.layers["conv4"].weight.mul_(0.5)              # a convolution the graph calls directly
    with torch.no_grad():
        want = cn(x)
    with torch.inference_mode():
        got = gm(x)
    assert_close_blobs(got, {b: want[b] for b in got})
    # A write through numpy (as pycaffe's net.params[...][0].data[...] = ...) bumps no version counter:
    # blobs pycaffe has handed out are compared with the copies the fold used.
    w = cn.layers["sc1"].scale
    w._netspec_exposed = True
    with torch.inference_mode():
        gm(x)
    w.detach().numpy()[...] = np.linspace(-1, 1, w.numel(), dtype=np.float32)
    with torch.no_grad():
        want = cn(x)
    with torch.inference_mode():
        got = gm(x)
    assert_close_blobs(got, {b: want[b] for b in got})


def test_cpu_convolutions_are_onednn_with_packed_weights_and_channels_last_results():
    """The packed path is what runs (not a fallback), its channels-last results reach layers that
    need contiguous bottoms as contiguous tensors (Flatten's view), and a second batch size reuses the
    packed weights with the right numbers."""
    cn = compiled()
    gm = inference_module(cn)
    with torch.inference_mode():
        got = gm(torch.randn(2, 3, 12, 12))
    packed = [m for m in gm.modules() if isinstance(m, _Folded) and m.chain.conv is not None]
    assert len(packed) == 3 and all(m._packed is not None and m._packed.is_mkldnn for m in packed)
    assert got["conv1"].is_contiguous(memory_format=torch.channels_last) and not got["conv1"].is_contiguous()
    contiguous = [n for n in gm.graph.nodes if n.op == "call_method" and n.target == "contiguous"]
    assert [n.args[0].name for n in contiguous] == ["conv4"]        # before Flatten only
    assert got["flat"].is_contiguous()
    first = [m._packed for m in packed]
    x = torch.randn(5, 3, 12, 12)
    with torch.no_grad():
        want = cn(x)
    with torch.inference_mode():
        got = gm(x)
    assert [m._packed for m in packed] == first
    assert_close_blobs(got, want)


def test_packed_convolutions_fall_back_off_the_fast_path():
    """float64 (and any tensor oneDNN's packed call does not take) runs F.conv2d with the same weights."""
    cn = compiled().double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        want = cn(x)
    gm = inference_module(cn)
    with torch.inference_mode():
        got = gm(x)
    assert all(m._packed is None for m in gm.modules() if isinstance(m, _Folded))
    assert_close_blobs(got, want)


@pytest.mark.filterwarnings("ignore:TF32")
def test_packed_path_off_when_onednn_is_disabled():
    cn = compiled()
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        want = cn(x)
    with torch.backends.mkldnn.flags(enabled=False):
        gm = inference_module(cn)
        with torch.inference_mode():
            got = gm(x)
    assert not any(isinstance(m, _Folded) and m.chain.bn is None for m in gm.modules())
    assert_close_blobs(got, want)


@pytest.mark.parametrize("batch", [1, 3])
def test_bvlc_style_googlenet_block(batch):
    """An inception block: 1x1/3x3/5x5 branches, LRN, pooling, concat, dropout."""
    text = f"""name: "inception"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: 4 dim: 9 dim: 9 }} }} }}
layer {{ name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param {{ local_size: 3 alpha: 0.0001 beta: 0.75 }} }}
layer {{ name: "b1" type: "Convolution" bottom: "norm" top: "b1" convolution_param {{ num_output: 4 kernel_size: 1 }} }}
layer {{ name: "b1r" type: "ReLU" bottom: "b1" top: "b1" }}
layer {{ name: "b3" type: "Convolution" bottom: "norm" top: "b3" convolution_param {{ num_output: 6 kernel_size: 3 pad: 1 }} }}
layer {{ name: "b3r" type: "ReLU" bottom: "b3" top: "b3" }}
layer {{ name: "pool" type: "Pooling" bottom: "norm" top: "pool" pooling_param {{ pool: MAX kernel_size: 3 stride: 1 pad: 1 }} }}
layer {{ name: "cat" type: "Concat" bottom: "b1" bottom: "b3" bottom: "pool" top: "cat" }}
layer {{ name: "gap" type: "Pooling" bottom: "cat" top: "gap" pooling_param {{ pool: AVE global_pooling: true }} }}
layer {{ name: "drop" type: "Dropout" bottom: "gap" top: "gap" }}
layer {{ name: "fc" type: "InnerProduct" bottom: "gap" top: "fc" inner_product_param {{ num_output: 3 }} }}
"""
    cn = compiled(text)
    x = torch.randn(batch, 4, 9, 9)
    with torch.no_grad():
        want = cn(x)
    gm = inference_module(cn)
    with torch.inference_mode():
        got = gm(x)
    assert_close_blobs(got, want, rel=1e-6)
    # poolings and the inner product are torch calls in the graph, the convolutions packed ones
    assert {n.target for n in gm.graph.nodes if n.op == "call_module"} == {"net.norm", "net.cat", "net.gap",
                                                                          "fold1", "fold2"}


def test_pycaffe_forward_takes_the_inference_path_and_keeps_every_blob(tmp_path):
    import netspec as caffe

    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TEST)
    for name, blobs in compiled().params().items():      # the same weights as compiled() gives
        for b, t in zip(net.params[name], blobs):
            b.data[...] = t.detach().numpy()
    x = np.random.default_rng(0).normal(size=(2, 3, 12, 12)).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward(blobs=["conv1", "bn2", "sum"])
    assert net._inference is not None
    with torch.no_grad():
        want = net.compiled(torch.from_numpy(x))
    assert_close_blobs({b: torch.from_numpy(v) for b, v in out.items()}, {b: want[b] for b in out})
    assert_close_blobs({b: torch.from_numpy(net.blobs[b].data) for b in ("other", "flat", "dropped")},
                       {b: want[b] for b in ("other", "flat", "dropped")})
    # a channels-last result handed out is a C-ordered array (pycaffe's blobs are), kept across forwards
    conv2 = net.blobs["conv2"].data
    assert conv2.flags["C_CONTIGUOUS"]
    net.forward()
    assert net.blobs["conv2"].data is conv2
    assert_close_blobs({"conv2": torch.from_numpy(conv2)}, {"conv2": want["conv2"]})
    # net surgery through numpy after a forward: the next forward uses the new weights
    net.params["conv1"][0].data[...] *= -1
    net.params["bn1"][1].data[...] *= 3
    out = net.forward(blobs=["conv1"])
    with torch.no_grad():
        want = net.compiled(torch.from_numpy(x))
    assert_close_blobs({b: torch.from_numpy(v) for b, v in out.items()}, {b: want[b] for b in out})
