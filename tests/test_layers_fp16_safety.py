"""Layers that would overflow float16 compute in float32 (issue: LRN squared fp16 activations of
AlexNet's conv1, |x| >= 256 -> inf, and the loss scaler shrank for ever): LRN, Softmax,
SoftmaxWithLoss and EuclideanLoss take half-precision bottoms and give finite values and gradients
equal to the float32 computation (to float16's precision)."""
import numpy as np
import pytest
import torch

from netspec.proto import pb
from layer_runner import make_layer

LRN = ['type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }',
       'type: "LRN" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 norm_region: WITHIN_CHANNEL }']


def _half_and_float(layer, *xs):
    outs = []
    for dtype in (torch.float16, torch.float32):
        ins = [x.detach().to(dtype).clone().requires_grad_(x.is_floating_point()) for x in xs]
        y = layer(*ins)
        y = y[0] if isinstance(y, tuple) else y
        y.float().sum().backward()
        outs.append((y.detach().float(), ins[0].grad.float()))
    return outs


@pytest.mark.parametrize("spec", LRN)
def test_lrn_on_float16_activations_of_300_stays_finite(spec):
    x = torch.linspace(-400, 400, 2 * 6 * 4 * 4).reshape(2, 6, 4, 4)      # |x| up to 400 > 256
    layer = make_layer(spec, [tuple(x.shape)])
    (half, ghalf), (full, gfull) = _half_and_float(layer, x)
    assert torch.isfinite(half).all() and torch.isfinite(ghalf).all()
    np.testing.assert_allclose(half.numpy(), full.numpy(), rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(ghalf.numpy(), gfull.numpy(), rtol=2e-2, atol=1e-3)


def test_euclidean_loss_of_float16_differences_of_300_is_finite():
    a, b = torch.full((4, 3), 300.0), torch.zeros(4, 3)
    layer = make_layer('type: "EuclideanLoss"', [(4, 3), (4, 3)])
    (half, _), (full, _) = _half_and_float(layer, a, b)
    assert float(half) == float(full) == 300.0 ** 2 * 12 / 8


def test_softmax_with_loss_of_float16_scores_matches_float32():
    x = torch.tensor([[60000.0, 0.0, -60000.0], [1.0, 2.0, 3.0]])
    label = torch.tensor([0.0, 2.0])
    layer = make_layer('type: "SoftmaxWithLoss"', [(2, 3), (2,)])
    (half, ghalf), (full, gfull) = _half_and_float(layer, x, label)
    assert torch.isfinite(half) and torch.isfinite(ghalf).all()
    np.testing.assert_allclose(float(half), float(full), rtol=1e-3)
    softmax = make_layer('type: "Softmax"', [(2, 3)])
    y = softmax(x.half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    np.testing.assert_allclose(y.detach().float().numpy(), torch.softmax(x, 1).numpy(), atol=1e-3)
