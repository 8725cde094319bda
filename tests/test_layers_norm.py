"""LRN, BatchNorm, Scale and Bias against numpy formulas (netspec/layers/norm.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError
from netspec.fillers import fill
from netspec.proto import pb


def test_lrn_across_channels():
    x = np.random.default_rng(0).normal(size=(2, 7, 3, 4))
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    layer = make_layer(
        f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}', [x.shape]
    )
    padded = np.zeros((2, 7 + size - 1, 3, 4))
    padded[:, 2:9] = x**2
    window_sum = np.stack([padded[:, c : c + size].sum(axis=1) for c in range(7)], axis=1)
    want = x * (k + alpha / size * window_sum) ** -beta
    np.testing.assert_allclose(layer(torch.from_numpy(x).float()).numpy(), want, rtol=1e-5)


def _lrn_gradient_float64(x, dy, size, alpha, beta, k):
    """d(LRN across channels)/dx · dy by autograd through the formula in float64."""
    x = x.detach().double().requires_grad_()
    pre = (size - 1) // 2
    padded = torch.nn.functional.pad(x * x, (0, 0, 0, 0, pre, pre))
    window = sum(padded[:, c:c + x.shape[1]] for c in range(size))
    (x * (k + alpha / size * window) ** -beta).backward(dy.double())
    return x.grad


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_lrn_across_channels_backward_is_the_formulas_gradient(dtype, tol):
    """Training takes Caffe's closed-form backward; against autograd through the formula in float64
    (alpha large enough that the second term matters), for float32 and bf16 (autocast) inputs."""
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.normal(0, 3, (2, 9, 3, 4))).to(dtype).requires_grad_()
    dy = torch.tensor(rng.normal(size=(2, 9, 3, 4))).to(dtype)
    layer = make_layer(f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}',
                       [tuple(x.shape)])
    y = layer(x)
    y.backward(dy)
    want = _lrn_gradient_float64(x, dy, size, alpha, beta, k)
    assert y.dtype == dtype and x.grad.dtype == dtype
    err = float((x.grad.double() - want).abs().max() / want.abs().max())
    assert err <= tol, f"worst difference {err:.2g} of the largest gradient"


def test_lrn_within_channel_ignores_k():
    """Caffe computes (1 + alpha/n² Σ_{nxn} x²)^-beta with zero padding: k plays no part."""
    x = np.random.default_rng(1).normal(size=(1, 2, 5, 6))
    size, alpha, beta = 3, 0.4, 0.6
    layer = make_layer(
        f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: 7 '
        "norm_region: WITHIN_CHANNEL }",
        [x.shape],
    )
    padded = np.pad(x**2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window_sum = sum(padded[:, :, i : i + 5, j : j + 6] for i in range(3) for j in range(3))
    want = x * (1 + alpha / size**2 * window_sum) ** -beta
    np.testing.assert_allclose(layer(torch.from_numpy(x).float()).numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("channels, height, region", [(3, 4, "ACROSS_CHANNELS"), (1, 2, "ACROSS_CHANNELS"),
                                                     (4, 2, "WITHIN_CHANNEL")])
def test_lrn_windows_longer_than_the_blob(channels, height, region):
    """Fewer channels (or rows) than local_size: Caffe zero-pads, so the window still divides by n."""
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    x = np.random.default_rng(2).normal(size=(2, channels, height, 3))
    layer = make_layer(f'type: "LRN" lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} '
                       f"norm_region: {region} }}", [x.shape])
    if region == "ACROSS_CHANNELS":
        padded = np.pad(x**2, ((0, 0), (2, 2), (0, 0), (0, 0)))
        window_sum = np.stack([padded[:, c:c + size].sum(axis=1) for c in range(channels)], axis=1)
        want = x * (k + alpha / size * window_sum) ** -beta
    else:
        padded = np.pad(x**2, ((0, 0), (0, 0), (2, 2), (2, 2)))
        window_sum = sum(padded[:, :, i:i + height, j:j + 3] for i in range(size) for j in range(size))
        want = x * (1 + alpha / size**2 * window_sum) ** -beta
    np.testing.assert_allclose(layer(torch.from_numpy(x).float()).numpy(), want, rtol=1e-5)


def test_lrn_rejects_even_size():
    with pytest.raises(NetspecError, match="odd"):
        make_layer('type: "LRN" lrn_param { local_size: 4 }', [(1, 4, 2, 2)])


def _bn(text, shape, phase):
    layer = make_layer(f'type: "BatchNorm" {text}', [shape], phase=phase)
    return layer


def test_batchnorm_global_stats_divide_by_scale_factor():
    x = torch.randn(2, 3, 4, 4)
    layer = _bn("", x.shape, pb.TEST)
    assert layer.use_global_stats and [tuple(b.shape) for b in layer.blobs] == [(3,), (3,), (1,)]
    assert not any(b.requires_grad for b in layer.blobs)
    with torch.no_grad():
        layer.mean.copy_(torch.tensor([2.0, -4.0, 0.0]))
        layer.variance.copy_(torch.tensor([8.0, 2.0, 4.0]))
        layer.scale_factor.fill_(2.0)
    mean, var = np.array([1.0, -2.0, 0.0]), np.array([4.0, 1.0, 2.0])
    want = (x.numpy() - mean[None, :, None, None]) / np.sqrt(var + 1e-5)[None, :, None, None]
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        layer.scale_factor.zero_()  # a zero factor reads as zero statistics
    np.testing.assert_allclose(layer(x).numpy(), x.numpy() / np.sqrt(1e-5), rtol=1e-5)


def test_batchnorm_train_normalises_and_accumulates():
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(4, 3, 2, 5))
    layer = _bn("batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }", x.shape, pb.TRAIN)
    assert not layer.use_global_stats
    fill(layer.mean, None), fill(layer.variance, None), fill(layer.scale_factor, None)
    mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    want = (x - mu[None, :, None, None]) / np.sqrt(var + 1e-3)[None, :, None, None]
    got = layer(torch.from_numpy(x).float())
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    m = 4 * 2 * 5
    np.testing.assert_allclose(layer.scale_factor.numpy(), [1.0])
    np.testing.assert_allclose(layer.mean.numpy(), mu, rtol=1e-5)
    np.testing.assert_allclose(layer.variance.numpy(), var * m / (m - 1), rtol=1e-5)
    layer(torch.from_numpy(x).float())
    np.testing.assert_allclose(layer.scale_factor.numpy(), [1.9])
    np.testing.assert_allclose(layer.mean.numpy(), 1.9 * mu, rtol=1e-5)


def test_batchnorm_explicit_global_stats_in_train_and_2d_bottom():
    layer = _bn("batch_norm_param { use_global_stats: true }", (5, 3), pb.TRAIN)
    assert layer.use_global_stats
    layer = _bn("", (6, 3), pb.TRAIN)
    x = torch.randn(6, 3)
    want = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(layer(x), want, atol=1e-5)


def test_batchnorm_statistics_are_not_learned():
    with pytest.raises(NetspecError, match="lr_mult"):
        _bn("param { lr_mult: 1 }", (1, 2, 3, 3), pb.TRAIN)


def test_scale_with_bias_and_axes():
    x = torch.randn(2, 3, 4, 5)
    layer = make_layer('type: "Scale" scale_param { axis: 1 num_axes: 2 bias_term: true }', [x.shape])
    assert layer.blob_names == ("scale", "bias")
    assert [tuple(b.shape) for b in layer.blobs] == [(3, 4), (3, 4)]
    with torch.no_grad():
        layer.scale.normal_(), layer.bias.normal_()
    want = x * layer.scale[None, :, :, None] + layer.bias[None, :, :, None]
    assert torch.allclose(layer(x), want)


def test_scale_defaults_fill_one_and_zero():
    layer = make_layer('type: "Scale" scale_param { bias_term: true }', [(2, 3, 4)])
    layer.fill(torch.Generator().manual_seed(0))
    assert layer.scale.tolist() == [1.0, 1.0, 1.0] and layer.bias.tolist() == [0.0, 0.0, 0.0]


def test_scale_two_bottoms_and_scalar():
    x, s = torch.randn(2, 3, 4), torch.randn(3, 4)
    layer = make_layer('type: "Scale"', [x.shape, s.shape])
    assert layer.blob_names == ()
    assert torch.allclose(layer(x, s), x * s[None])
    scalar = make_layer('type: "Scale" scale_param { num_axes: 0 }', [x.shape])
    assert tuple(scalar.scale.shape) == ()
    with torch.no_grad():
        scalar.scale.fill_(3.0)
    assert torch.allclose(scalar(x), 3 * x)
    with pytest.raises(NetspecError, match=r"\(3, 5\).*does not match"):
        make_layer('type: "Scale"', [x.shape, (3, 5)])


def test_bias_layer():
    x = torch.randn(2, 3, 4)
    layer = make_layer('type: "Bias" bias_param { axis: -1 }', [x.shape])
    assert tuple(layer.bias.shape) == (4,)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.allclose(layer(x), x + torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_lrn_gradient_is_the_same_under_torch_compile():
    """torch 2.11's dynamo sent the training Function's gradient to the wrong output (all zeros)
    when its forward returned `.to()` of a tensor already in the right dtype."""
    layer = make_layer('type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }', [(2, 8, 4, 4)])
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(0, 3, (2, 8, 4, 4)), dtype=torch.float32, requires_grad=True)
    dy = torch.tensor(rng.normal(size=(2, 8, 4, 4)), dtype=torch.float32)
    layer(x).backward(dy)
    want, x.grad = x.grad.clone(), None
    torch.compile(lambda t: layer(t), backend="eager", fullgraph=True)(x).backward(dy)
    torch._dynamo.reset()
    assert want.abs().max() > 0.1 and torch.allclose(x.grad, want, rtol=1e-5, atol=1e-6)
