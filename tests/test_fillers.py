"""Fillers: distributions, fan sizes and determinism (netspec/fillers.py, Caffe's filler.hpp)."""

from __future__ import annotations

import math

import pytest
import torch
from google.protobuf import text_format

from netspec.errors import NetspecError
from netspec.fillers import fill, make
from netspec.proto import pb


def F(text: str) -> pb.FillerParameter:
    return text_format.Parse(text, pb.FillerParameter())


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_none_is_constant_zero_and_constant_value():
    assert not make((2, 3), None).any()
    assert torch.equal(make((4,), F("type: 'constant' value: 2.5")), torch.full((4,), 2.5))
    t = torch.empty(2, 2)
    assert fill(t, F("value: -1"), gen()) is t and torch.equal(t, torch.full((2, 2), -1.0))


def test_uniform_range_and_determinism():
    fp = F("type: 'uniform' min: -0.3 max: 0.7")
    a, b, c = make((10000,), fp, gen(1)), make((10000,), fp, gen(1)), make((10000,), fp, gen(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -0.3 and a.max() < 0.7 and abs(a.mean().item() - 0.2) < 0.01


def test_gaussian_moments():
    x = make((200, 100), F("type: 'gaussian' mean: 1 std: 0.5"), gen())
    assert abs(x.mean().item() - 1) < 0.01 and abs(x.std().item() - 0.5) < 0.01


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    x = make((50, 400), F("type: 'gaussian' sparse: 10"), gen())
    assert abs((x != 0).float().mean().item() - 10 / 50) < 0.01


@pytest.mark.parametrize(
    "norm, n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 8 * 5 * 5), ("AVERAGE", (75 + 200) / 2)]
)
def test_xavier_and_msra_fans(norm, n):
    """For an (8, 3, 5, 5) blob Caffe's fan_in = count / shape[0] = 75, fan_out = count / shape[1] = 200."""

    def draws(kind):
        return torch.cat(
            [make((8, 3, 5, 5), F(f"type: '{kind}' variance_norm: {norm}"), gen(s)) for s in range(20)]
        )

    bound = math.sqrt(3 / n)
    x = draws("xavier")
    assert x.abs().max() <= bound and x.abs().max() > 0.99 * bound
    y = draws("msra")
    assert abs(y.std().item() / math.sqrt(2 / n) - 1) < 0.03


def test_bilinear_kernel():
    x = make((2, 1, 4, 4), F("type: 'bilinear'"))
    t = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert torch.allclose(x[1, 0], t[:, None] * t[None, :])
    x = make((1, 1, 3, 3), F("type: 'bilinear'"))  # f = 2, c = 0.75 (Caffe's formula)
    t = torch.tensor([0.25, 0.75, 0.75])
    assert torch.allclose(x[0, 0], t[:, None] * t[None, :])


def test_positive_unitball_rows_sum_to_one():
    x = make((4, 2, 3), F("type: 'positive_unitball'"), gen())
    assert (x >= 0).all() and torch.allclose(x.reshape(4, -1).sum(1), torch.ones(4))


@pytest.mark.parametrize(
    "text, message",
    [
        ("type: 'nope'", "unknown filler type 'nope'"),
        ("type: 'uniform' sparse: 3", "sparse"),
    ],
)
def test_errors(text, message):
    with pytest.raises(NetspecError, match=message):
        make((2, 2), F(text), gen())


def test_layer_fill_is_deterministic_per_generator():
    from layer_runner import make_layer

    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 '
        'weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.2 } }',
        [(1, 2, 5, 5)],
    )
    layer.fill(gen(3))
    w = layer.weight.detach().clone()
    layer.fill(gen(3))
    assert torch.equal(w, layer.weight) and torch.equal(layer.bias, torch.full((4,), 0.2))
