"""Neuron layers, Dropout and Softmax against numpy formulas (netspec/layers/activation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError
from netspec.proto import pb

X = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0], [1.5, -1.0, 2.0, -3.0, 0.25]])

FORMULAS = [
    ('type: "ReLU"', lambda x: np.maximum(x, 0)),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.maximum(x, 0) + 0.1 * np.minimum(x, 0)),
    ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x))),
    ('type: "TanH"', np.tanh),
    ('type: "AbsVal"', np.abs),
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x))),
    ('type: "ELU" elu_param { alpha: 0.5 }', lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 4 }', lambda x: (4 + 0.5 * x) ** 2),
    ('type: "Exp"', np.exp),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', lambda x: 2.0 ** (1 + 0.5 * x)),
    ('type: "Log" log_param { shift: 4 }', lambda x: np.log(4 + x)),
    ('type: "Log" log_param { base: 10 scale: 2 shift: 7 }', lambda x: np.log10(7 + 2 * x)),
    ('type: "Threshold" threshold_param { threshold: 0.5 }', lambda x: (x > 0.5).astype(float)),
    ('type: "Clip" clip_param { min: -1 max: 1.5 }', lambda x: np.clip(x, -1, 1.5)),
    ('type: "Swish" swish_param { beta: 2 }', lambda x: x / (1 + np.exp(-2 * x))),
    ('type: "Dropout"', lambda x: x),  # TEST phase: identity
    ('type: "Softmax"', lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)),
    ('type: "Softmax" softmax_param { axis: 0 }', lambda x: np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)),
]


@pytest.mark.parametrize("text, formula", FORMULAS, ids=[t for t, _ in FORMULAS])
def test_formula(text, formula):
    layer = make_layer(text, [X.shape])
    got = layer(torch.from_numpy(X).float())
    assert layer.top_shapes == [X.shape]
    np.testing.assert_allclose(got.detach().numpy(), formula(X), rtol=1e-5, atol=1e-6)


def test_relu_gradient_at_zero_is_the_slope():
    x = torch.zeros(3, requires_grad=True)
    make_layer('type: "ReLU" relu_param { negative_slope: 0.2 }', [x.shape])(x).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 0.2))


def test_prelu_per_channel_and_shared():
    x = torch.randn(2, 3, 4)
    layer = make_layer('type: "PReLU"', [x.shape])
    layer.fill(torch.Generator().manual_seed(0))
    assert layer.slope.tolist() == [0.25] * 3
    with torch.no_grad():
        layer.slope.copy_(torch.tensor([0.1, 0.2, 0.3]))
    want = torch.where(x > 0, x, x * torch.tensor([0.1, 0.2, 0.3])[None, :, None])
    assert torch.allclose(layer(x), want)
    shared = make_layer('type: "PReLU" prelu_param { channel_shared: true }', [x.shape])
    assert tuple(shared.slope.shape) == ()


def test_dropout_train_scales_kept_units():
    torch.manual_seed(0)
    x = torch.ones(100, 100)
    layer = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', [x.shape], phase=pb.TRAIN)
    y = layer(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert 0.67 < kept.float().mean().item() < 0.73


def test_dropout_ratio_range():
    with pytest.raises(NetspecError, match="dropout_ratio"):
        make_layer('type: "Dropout" dropout_param { dropout_ratio: 1 }', [(2, 2)])
