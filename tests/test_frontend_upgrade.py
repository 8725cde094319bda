"""Legacy Caffe nets upgrade to the current format as Caffe's upgrade_proto.cpp does."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from netspec.errors import NetspecError
from netspec.frontend.upgrade import V1_LAYER_TYPES, needs_upgrade, upgrade_net, upgrade_v1_layer
from netspec.proto import pb

CAFFE = Path(__file__).parent / "data" / "caffe"


def parse_net(text: str) -> pb.NetParameter:
    return text_format.Parse(text, pb.NetParameter())


def assert_same_net(got: pb.NetParameter, expected: pb.NetParameter) -> None:
    assert got == expected, f"upgraded net differs:\n--- got\n{got}\n--- expected\n{expected}"


# A deploy net as the 2014 model zoo wrote it (bvlc_alexnet style), shortened.
V1_ALEXNET_DEPLOY = """
name: "AlexNet"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 227
input_dim: 227
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 96
    kernel_size: 11
    stride: 4
  }
}
layers {
  name: "relu1"
  type: RELU
  bottom: "conv1"
  top: "conv1"
}
layers {
  name: "norm1"
  type: LRN
  bottom: "conv1"
  top: "norm1"
  lrn_param {
    local_size: 5
    alpha: 0.0001
    beta: 0.75
  }
}
layers {
  name: "pool1"
  type: POOLING
  bottom: "norm1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 3
    stride: 2
  }
}
layers {
  name: "conv2"
  type: CONVOLUTION
  bottom: "pool1"
  top: "conv2"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 256
    pad: 2
    kernel_size: 5
    group: 2
  }
}
layers {
  name: "fc6"
  type: INNER_PRODUCT
  bottom: "conv2"
  top: "fc6"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  inner_product_param {
    num_output: 4096
  }
}
layers {
  name: "drop6"
  type: DROPOUT
  bottom: "fc6"
  top: "fc6"
  dropout_param {
    dropout_ratio: 0.5
  }
}
layers {
  name: "prob"
  type: SOFTMAX
  bottom: "fc6"
  top: "prob"
}
"""

CURRENT_ALEXNET_DEPLOY = """
name: "AlexNet"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "conv2" top: "fc6"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 4096 } }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "prob" type: "Softmax" bottom: "fc6" top: "prob" }
"""


def test_v1_alexnet_deploy_upgrades_to_current_format():
    v1 = parse_net(V1_ALEXNET_DEPLOY)
    assert needs_upgrade(v1)
    got = upgrade_net(v1)
    assert_same_net(got, parse_net(CURRENT_ALEXNET_DEPLOY))
    assert not needs_upgrade(got)
    assert len(v1.layers) == 8 and not v1.layer, "upgrade_net must not modify its argument"


# A train/val net in the older V1 style: transformation fields inside data_param, phase rules,
# shared weights by param name, a loss weight, and learned blobs carried in the layer.
V1_TRAIN_VAL = """
name: "CaffeNetish"
layers {
  name: "data" type: DATA top: "data" top: "label"
  data_param { source: "train_lmdb" backend: LMDB batch_size: 256
               mean_file: "mean.binaryproto" crop_size: 227 mirror: true scale: 0.5 }
  include: { phase: TRAIN }
}
layers {
  name: "data" type: IMAGE_DATA top: "data" top: "label"
  image_data_param { source: "val.txt" batch_size: 50 new_height: 256 new_width: 256 crop_size: 227 }
  transform_param { mean_value: 104 mean_value: 117 mean_value: 123 }
  include: { phase: TEST }
}
layers {
  name: "fc_a" type: INNER_PRODUCT bottom: "data" top: "fc_a"
  param: "shared_w" param: "shared_b" blob_share_mode: PERMISSIVE
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.01 } }
  blobs { shape { dim: 1 } data: 0.25 }
}
layers {
  name: "fc_b" type: INNER_PRODUCT bottom: "data" top: "fc_b"
  param: "shared_w" param: "shared_b"
  inner_product_param { num_output: 10 }
  exclude: { stage: "deploy" }
}
layers { name: "sum" type: ELTWISE bottom: "fc_a" bottom: "fc_b" top: "sum"
  eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layers { name: "accuracy" type: ACCURACY bottom: "sum" bottom: "label" top: "accuracy"
  include: { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "sum" bottom: "label" top: "loss"
  loss_weight: 2 loss_param { ignore_label: 255 } }
"""

CURRENT_TRAIN_VAL = """
name: "CaffeNetish"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.5 mirror: true crop_size: 227 mean_file: "mean.binaryproto" }
  data_param { source: "train_lmdb" backend: LMDB batch_size: 256 } }
layer { name: "data" type: "ImageData" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 227 mean_value: 104 mean_value: 117 mean_value: 123 }
  image_data_param { source: "val.txt" batch_size: 50 new_height: 256 new_width: 256 } }
layer { name: "fc_a" type: "InnerProduct" bottom: "data" top: "fc_a"
  param { name: "shared_w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
  param { name: "shared_b" lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.01 } }
  blobs { shape { dim: 1 } data: 0.25 } }
layer { name: "fc_b" type: "InnerProduct" bottom: "data" top: "fc_b"
  param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 10 } exclude { stage: "deploy" } }
layer { name: "sum" type: "Eltwise" bottom: "fc_a" bottom: "fc_b" top: "sum"
  eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "accuracy" type: "Accuracy" bottom: "sum" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss"
  loss_weight: 2 loss_param { ignore_label: 255 } }
"""


def test_v1_train_val_upgrades_params_rules_blobs_and_transformation():
    got = upgrade_net(parse_net(V1_TRAIN_VAL))
    assert_same_net(got, parse_net(CURRENT_TRAIN_VAL))
    assert not got.layer[0].data_param.HasField("crop_size"), "legacy field must move, not be copied"


def test_every_v1_layer_type_has_caffes_type_string():
    v1_names = set(pb.V1LayerParameter.LayerType.keys())
    assert v1_names == set(V1_LAYER_TYPES), f"table and V1 enum differ: {v1_names ^ set(V1_LAYER_TYPES)}"
    spot = {"SOFTMAX_LOSS": "SoftmaxWithLoss", "IM2COL": "Im2col", "HDF5_DATA": "HDF5Data",
            "TANH": "TanH", "ABSVAL": "AbsVal", "BNLL": "BNLL", "NONE": "",
            "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "DECONVOLUTION": "Deconvolution"}
    for name, type_string in spot.items():
        layer = upgrade_v1_layer(pb.V1LayerParameter(type=pb.V1LayerParameter.LayerType.Value(name)))
        assert layer.type == type_string, f"V1 {name} -> {layer.type!r}, Caffe says {type_string!r}"


def test_every_v1_param_message_is_carried_over():
    v1 = pb.V1LayerParameter()
    params = [f.name for f in v1.DESCRIPTOR.fields if f.name.endswith("_param")]
    for name in params:
        getattr(v1, name).SetInParent()
    layer = upgrade_v1_layer(v1)
    missing = [name for name in params if not layer.HasField(name)]
    assert not missing and len(params) == 30, f"not carried over: {missing} ({len(params)} *_param fields)"


def test_v1_fields_are_all_understood():
    # A field added to V1LayerParameter without an upgrade rule would be dropped silently.
    handled = {"bottom", "top", "name", "include", "exclude", "type", "blobs", "param", "blob_share_mode",
               "blobs_lr", "weight_decay", "loss_weight", "layer"}
    unknown = {f.name for f in pb.V1LayerParameter.DESCRIPTOR.fields
               if f.name not in handled and not f.name.endswith("_param")}
    assert not unknown


def test_input_shape_becomes_first_input_layer():
    net = parse_net("""
        input: "data" input_shape { dim: 2 dim: 3 }
        input: "label" input_shape { dim: 2 }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param { num_output: 1 } }
    """)
    assert needs_upgrade(net)
    assert_same_net(upgrade_net(net), parse_net("""
        layer { name: "input" type: "Input" top: "data" top: "label"
                input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
                inner_product_param { num_output: 1 } }
    """))


def test_input_without_shape_is_dropped_as_caffe_does_for_old_caffemodels():
    net = parse_net('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert_same_net(upgrade_net(net), parse_net('layer { name: "r" type: "ReLU" bottom: "data" top: "r" }'))


@pytest.mark.parametrize("text, message", [
    ('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4',
     r"net.prototxt: 2 input: blobs but 4 input_dim: values; expected 4 per input"),
    ('input: "a" input: "b" input_shape { dim: 1 }',
     r"net.prototxt: 2 input: blobs but 1 input_shape: entries"),
])
def test_mismatched_legacy_inputs_are_refused(text, message):
    with pytest.raises(NetspecError, match=message):
        upgrade_net(parse_net(text), source="net.prototxt")


def test_v0_net_is_refused_naming_the_file():
    v0 = parse_net('layers { layer { name: "conv1" type: "conv" num_output: 96 kernelsize: 11 } '
                   'bottom: "data" top: "conv1" }')
    assert needs_upgrade(v0)
    with pytest.raises(NetspecError) as err:
        upgrade_net(v0, source="models/lenet_v0.prototxt")
    message = str(err.value)
    assert message.startswith("models/lenet_v0.prototxt: layer 'conv1': V0 net format")
    assert "not supported" in message and "\n" not in message


def test_mixed_layer_and_layers_is_refused():
    net = parse_net('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }')
    with pytest.raises(NetspecError, match="mixes 1 current 'layer' and 1 legacy V1 'layers'"):
        upgrade_net(net, source="mixed.prototxt")


def test_batch_norm_with_three_param_specs_gets_zero_rates():
    net = parse_net("""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { lr_mult: 1 name: "m" } param { lr_mult: 1 } param { decay_mult: 1 } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } }""")
    assert needs_upgrade(net)
    got = upgrade_net(net)
    assert [(p.lr_mult, p.decay_mult) for p in got.layer[0].param] == [(0, 0)] * 3
    assert got.layer[0].param[0].name == "m", "Caffe keeps the rest of each ParamSpec"
    assert got.layer[1] == net.layer[1], "only the old 3-ParamSpec form is upgraded"
    assert not needs_upgrade(got)


@pytest.mark.parametrize("name", ["loss_net.prototxt", "layers_net.prototxt", "data_net.prototxt"])
def test_current_nets_are_left_alone(name):
    net = parse_net((CAFFE / name).read_text())
    assert not needs_upgrade(net)
    assert upgrade_net(net) == net
