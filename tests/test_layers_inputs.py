"""Input and DummyData (netspec/layers/inputs.py)."""

from __future__ import annotations

import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError


def test_input_one_shape_or_one_per_top():
    layer = make_layer('type: "Input" input_param { shape { dim: 2 dim: 3 } }', [], tops=2)
    assert layer.input_shapes() == layer.top_shapes == [(2, 3), (2, 3)]
    layer = make_layer(
        'type: "Input" input_param { shape { dim: 6 dim: 3 dim: 19 dim: 19 } shape { dim: 6 } }', [], tops=2
    )
    assert layer.top_shapes == [(6, 3, 19, 19), (6,)]
    data, label = layer()
    assert tuple(data.shape) == (6, 3, 19, 19) and not label.any()
    with pytest.raises(NetspecError, match="2 shapes for 3 tops"):
        make_layer('type: "Input" input_param { shape { dim: 1 } shape { dim: 2 } }', [], tops=3)


def test_dummy_data_shapes_and_fillers():
    torch.manual_seed(0)
    layer = make_layer(
        'type: "DummyData" dummy_data_param { shape { dim: 400 dim: 50 } shape { dim: 3 } '
        'data_filler { type: "gaussian" std: 2 } data_filler { type: "constant" value: 7 } }',
        [],
        tops=2,
    )
    assert layer.is_data and layer.top_shapes == [(400, 50), (3,)]
    first, const = layer()
    second, _ = layer()
    assert const.tolist() == [7.0, 7.0, 7.0]
    assert abs(first.std().item() - 2.0) < 0.05 and not torch.equal(first, second)  # refilled every forward


def test_dummy_data_legacy_dims_and_default_zero():
    layer = make_layer(
        'type: "DummyData" dummy_data_param { num: 2 channels: 3 channels: 1 height: 4 width: 5 }', [], tops=2
    )
    assert layer.top_shapes == [(2, 3, 4, 5), (2, 1, 4, 5)]
    assert all(not t.any() for t in layer())
    with pytest.raises(NetspecError, match="not both"):
        make_layer('type: "DummyData" dummy_data_param { num: 2 shape { dim: 1 } }', [])
