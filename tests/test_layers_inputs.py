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


def test_dummy_data_constant_tops_are_filled_once_and_kept():
    """Caffe fills constant tops at setup only, so what a user writes into them survives forwards;
    other fillers draw anew every forward."""
    layer = make_layer(
        'type: "DummyData" dummy_data_param { shape { dim: 3 dim: 2 } shape { dim: 3 } '
        'data_filler { type: "gaussian" } data_filler { type: "constant" value: 4 } }',
        [],
        tops=2,
    )
    data1, label1 = layer()
    label1[...] = torch.tensor([0.0, 2.0, 1.0])       # a user's labels, written in place
    data2, label2 = layer()
    assert label2 is label1 and label2.tolist() == [0.0, 2.0, 1.0]
    assert not torch.equal(data1, data2)
    kept = layer.constant_tops()
    assert list(kept) == [1] and kept[1] is label1
    assert not any(name.startswith("_top") for name in layer.state_dict())   # not a weight


def test_dummy_data_single_filler_decides_for_every_top():
    layer = make_layer('type: "DummyData" dummy_data_param { shape { dim: 2 } data_filler { value: 3 } }',
                       [], tops=2)
    assert sorted(layer.constant_tops()) == [0, 1]    # a filler with no type is "constant"
    a, b = layer()
    assert a.tolist() == b.tolist() == [3.0, 3.0] and a is not b
