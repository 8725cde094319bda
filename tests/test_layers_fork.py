"""Single fork layers (netspec/layers/fork.py) and Pooling's ceil_mode: SegNet's own Upsample test
case (test_upsample_layer.cpp, ported as a fact), hand-worked ShuffleChannel orders, numpy
references for ConvolutionDepthwise and Axpy, float64 gradient checks, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from layer_runner import make_layer

import netspec
from netspec.errors import NetspecError


def one_line_error(text, shapes, message):
    with pytest.raises(NetspecError, match=message) as e:
        make_layer(text, shapes)
    assert "\n" not in str(e.value)


# ---- Upsample --------------------------------------------------------------------------------------
def test_upsample_as_segnets_forward_square():
    x = torch.tensor([[1.0, 2.0], [9.0, 4.0]]).expand(4, 3, 2, 2)
    mask = torch.tensor([[2.0, 5.0], [12.0, 14.0]]).expand(4, 3, 2, 2)
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', [(4, 3, 2, 2)] * 2)
    assert layer.top_shapes == [(4, 3, 4, 4)]
    want = [[0, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [9, 0, 4, 0]]
    np.testing.assert_array_equal(layer(x, mask).numpy(), np.broadcast_to(want, (4, 3, 4, 4)))


@pytest.mark.parametrize("params, size", [("scale_h: 2 scale_w: 3", (4, 9)), ("upsample_h: 5 upsample_w: 7", (5, 7)),
                                          ("scale: 2 pad_out_h: true", (3, 6))])
def test_upsample_output_sizes(params, size):
    layer = make_layer(f'type: "Upsample" upsample_param {{ {params} }}', [(1, 2, 2, 3)] * 2)
    assert layer.top_shapes == [(1, 2) + size]


def test_upsample_last_write_wins_and_every_element_gets_its_targets_diff():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[[[0.0, 5.0], [5.0, 15.0]]]])   # elements 1 and 2 both name position 5
    top = make_layer('type: "Upsample" upsample_param { scale: 2 }', [(1, 1, 2, 2)] * 2)(x, mask)
    assert top[0, 0].flatten()[[0, 5, 15]].tolist() == [1.0, 3.0, 4.0]   # the fork's loop: element 2 last
    grad = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    top.backward(grad)
    assert x.grad.flatten().tolist() == [0.0, 5.0, 5.0, 15.0]


def test_upsample_gradient():
    rng = np.random.default_rng(0)
    mask = torch.tensor([[[[(2 * i + rng.integers(2)) * 4 + 2 * j + rng.integers(2) for j in range(2)]
                           for i in range(2)]] * 3] * 2, dtype=torch.float64)
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', [(2, 3, 2, 2)] * 2)
    assert check_gradients(layer, [torch.randn(2, 3, 2, 2), mask], check=[0]) == 24


def test_upsample_mask_out_of_range_is_one_line():
    layer = make_layer('type: "Upsample" upsample_param { scale: 2 }', [(1, 1, 2, 2)] * 2)
    with pytest.raises(NetspecError, match="names position 16") as e:
        layer(torch.ones(1, 1, 2, 2), torch.tensor([[[[0.0, 1.0], [2.0, 16.0]]]]))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("params, shapes, message", [
    ("scale: 1", [(1, 1, 2, 2)] * 2, "scale must be > 1"),
    ("scale: 2 scale_h: 2 scale_w: 2", [(1, 1, 2, 2)] * 2, "or scale_h and scale_w together"),
    ("scale: 3 pad_out_w: true", [(1, 1, 2, 2)] * 2, "pad_out_w needs scale 2"),
    ("upsample_h: 1 upsample_w: 4", [(1, 1, 2, 2)] * 2, "must be > 1"),
    ("scale: 2", [(1, 1, 2, 2), (1, 1, 2, 3)], "two equal N×C×H×W"),
])
def test_upsample_bad_parameters(params, shapes, message):
    one_line_error(f'type: "Upsample" upsample_param {{ {params} }}', shapes, message)


# ---- ShuffleChannel ----------------------------------------------------------------------------------
def test_shuffle_channel_order_by_hand():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    layer = make_layer('type: "ShuffleChannel" shuffle_channel_param { group: 2 }', [(1, 6, 1, 1)])
    # channels as 2 groups of 3 [0 1 2 | 3 4 5], read column by column
    assert layer(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    g3 = make_layer('type: "ShuffleChannel" shuffle_channel_param { group: 3 }', [(1, 6, 1, 1)])
    assert g3(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert check_gradients(g3, [torch.randn(2, 6, 2, 1)]) == 24


@pytest.mark.parametrize("group, message", [(4, "group 4 must divide"), (0, "must be > 0")])
def test_shuffle_channel_bad_group(group, message):
    one_line_error(f'type: "ShuffleChannel" shuffle_channel_param {{ group: {group} }}', [(1, 6, 2, 2)], message)


# ---- ConvolutionDepthwise ----------------------------------------------------------------------------
def depthwise_ref(x, w, b, stride, pad, dilation):
    """The fork's Forward_cpu: each channel with its own k×k filter, out-of-map taps skipped."""
    n, c, h, wd = x.shape
    k = w.shape[2:]
    oh = (h + 2 * pad[0] - (dilation[0] * (k[0] - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (k[1] - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(k[0]):
        for j in range(k[1]):
            for y in range(oh):
                for x_ in range(ow):
                    hi, wi = y * stride[0] - pad[0] + i * dilation[0], x_ * stride[1] - pad[1] + j * dilation[1]
                    if 0 <= hi < h and 0 <= wi < wd:
                        out[:, :, y, x_] += w[:, 0, i, j] * x[:, :, hi, wi]
    return out + b.reshape(1, -1, 1, 1)


def test_convolution_depthwise_matches_the_forks_loops_and_its_gradient():
    text = ('type: "ConvolutionDepthwise" convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 '
            'stride: 2 pad_h: 1 pad_w: 0 dilation: 1 weight_filler { type: "gaussian" } '
            'bias_filler { type: "gaussian" } }')
    layer = make_layer(text, [(2, 3, 5, 5)])
    layer.fill(torch.Generator().manual_seed(0))
    assert tuple(layer.weight.shape) == (3, 1, 3, 2) and tuple(layer.bias.shape) == (3,)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    layer = layer.double()
    want = depthwise_ref(x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), (2, 2), (1, 0), (1, 1))
    got = layer(x).detach().numpy()
    assert got.shape == layer.top_shapes[0] == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert check_gradients(layer, [x]) == 150 + 18 + 3


def test_convolution_depthwise_ignores_group_and_refuses_a_wrong_num_output():
    layer = make_layer('type: "ConvolutionDepthwise" convolution_param { kernel_size: 3 group: 1 bias_term: false }',
                       [(1, 4, 3, 3)])
    assert tuple(layer.weight.shape) == (4, 1, 3, 3) and layer.top_shapes == [(1, 4, 1, 1)]
    one_line_error('type: "ConvolutionDepthwise" convolution_param { num_output: 8 kernel_size: 3 }',
                   [(1, 4, 3, 3)], "num_output 8 is not the 4 channels")


# ---- Axpy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape", [(2, 3, 1, 1), (2, 3)])
def test_axpy_matches_numpy_and_its_gradient(a_shape):
    a, x, y = torch.randn(a_shape, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64), \
        torch.randn(2, 3, 2, 2, dtype=torch.float64)
    layer = make_layer('type: "Axpy"', [a_shape, (2, 3, 2, 2), (2, 3, 2, 2)])
    want = a.numpy().reshape(2, 3, 1, 1) * x.numpy() + y.numpy()
    np.testing.assert_allclose(layer(a, x, y).numpy(), want, rtol=1e-15)
    assert check_gradients(layer, [a, x, y]) == 6 + 24 + 24


@pytest.mark.parametrize("shapes", [[(2, 3, 2, 1), (2, 3, 2, 2), (2, 3, 2, 2)], [(2, 3), (2, 3, 2, 2), (2, 3, 2, 1)]])
def test_axpy_bad_shapes(shapes):
    one_line_error('type: "Axpy"', shapes, "Axpy needs")


# ---- Pooling ceil_mode -------------------------------------------------------------------------------
@pytest.mark.parametrize("params, size", [("ceil_mode: true", 3), ("ceil_mode: false", 2),
                                          ("ceil_mode: false round_mode: FLOOR", 2), ("round_mode: FLOOR", 2), ("", 3)])
def test_pooling_ceil_mode_names_the_rounding(params, size):
    # 6 wide, kernel 3, stride 2: (6 - 3) / 2 = 1.5 windows past the first
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 {params} }}', [(1, 1, 6, 6)])
    assert layer.top_shapes == [(1, 1, size, size)]
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert layer(x)[0, 0, -1, -1].item() == (35.0 if size == 3 else 28.0)


def test_pooling_ceil_mode_contradicting_round_mode_is_one_line():
    one_line_error('type: "Pooling" pooling_param { kernel_size: 3 stride: 2 ceil_mode: true round_mode: FLOOR }',
                   [(1, 1, 6, 6)], "ceil_mode: true contradicts round_mode: FLOOR")


def test_net_spec_routes_fork_parameters_to_their_messages():
    from netspec import layers as L
    n = netspec.NetSpec()
    n.data = L.Input(shape={"dim": [1, 6, 8, 8]})
    n.pool = L.Pooling(n.data, kernel_size=3, stride=2, ceil_mode=False)
    n.shuffle = L.ShuffleChannel(n.pool, group=3)
    # as Deconvolution in pycaffe, a type borrowing another's message names it
    n.dw = L.ConvolutionDepthwise(n.shuffle, convolution_param={"kernel_size": 3, "pad": 1})
    net = n.to_proto()
    assert net.layer[1].pooling_param.ceil_mode is False and net.layer[1].pooling_param.HasField("ceil_mode")
    assert net.layer[2].shuffle_channel_param.group == 3
    assert list(net.layer[3].convolution_param.kernel_size) == [3]


def test_convolution_depthwise_zero_stride_is_one_line(tmp_path):
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
        'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" '
        'convolution_param { kernel_size: 3 stride: 0 } }\n')
    with pytest.raises(NetspecError, match="net.prototxt:2.*stride") as e:
        netspec.Net(str(tmp_path / "net.prototxt"), netspec.TEST)
    assert "\n" not in str(e.value)


def test_normalize_needs_two_axes():
    one_line_error('type: "Normalize"', [(4,)], "Normalize needs 2\\+ axes")
