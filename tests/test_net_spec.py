"""NetSpec builds the same NetParameter a person would write by hand (pycaffe's net_spec behaviour)."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from netspec.errors import NetspecError
from netspec.net_spec import L, NetSpec, P, layers, params, to_proto
from netspec.proto import pb

CAFFE = Path(__file__).parent / "data" / "caffe"


def parse_net(text: str) -> pb.NetParameter:
    return text_format.Parse(text, pb.NetParameter())


def assert_same_net(built: pb.NetParameter, expected: pb.NetParameter) -> None:
    assert built == expected, f"built net differs:\n--- built\n{built}\n--- expected\n{expected}"


def gauss(std):
    return dict(type="gaussian", std=std)


def const(value):
    return dict(type="constant", value=value)


LEARN = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def test_rebuilds_real_caffe_loss_net():
    # loss_net.prototxt is the net real Caffe ran for the fixtures; NetSpec must spell it identically.
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[6, 3, 19, 19]), dict(dim=[6])], ntop=2)
    n.conv1 = L.Convolution(n.data, param=LEARN, num_output=8, kernel_size=3, stride=2,
                            weight_filler=gauss(0.1), bias_filler=const(0.1))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.norm1 = L.LRN(n.relu1, local_size=5, alpha=0.5, beta=0.75, k=2)
    n.pool1 = L.Pooling(n.norm1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.conv2 = L.Convolution(n.pool1, param=LEARN, num_output=8, kernel_size=3, pad=1, group=2,
                            weight_filler=gauss(0.1), bias_filler=const(1))
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.ip1 = L.InnerProduct(n.relu2, param=LEARN, num_output=3,
                           weight_filler=gauss(0.1), bias_filler=const(0))
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    n.acc = L.Accuracy(n.ip1, n.label, top_k=2)
    built = n.to_proto()
    built.name = "loss_net"
    assert_same_net(built, parse_net((CAFFE / "loss_net.prototxt").read_text()))


CAFFENET_HEAD = """
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mirror: true crop_size: 227 mean_file: "mean.binaryproto" }
  data_param { source: "train_lmdb" batch_size: 256 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mirror: false crop_size: 227 mean_file: "mean.binaryproto" }
  data_param { source: "val_lmdb" batch_size: 50 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 96 kernel_size: 11 stride: 4
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 1 } }
  device: "gpu0" device: "gpu1" }
layer { name: "fc8" type: "InnerProduct" bottom: "conv2" top: "fc8"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 1000
    weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" value: 0 } }
  device: "gpu0" }
layer { name: "accuracy" type: "Accuracy" bottom: "fc8" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""


def caffenet_head() -> NetSpec:
    """The first layers of CaffeNet's train_val, with both phase-specific data layers."""
    n = NetSpec()
    tf = dict(crop_size=227, mean_file="mean.binaryproto")
    n.data, n.label = L.Data(source="train_lmdb", batch_size=256, backend=P.Data.LMDB, ntop=2,
                             transform_param=dict(mirror=True, **tf), include=dict(phase=pb.TRAIN))
    # The TEST data layer writes the same blob names; NetSpec keys it under a different attribute.
    test_data = L.Data(source="val_lmdb", batch_size=50, backend="LMDB", ntop=2,
                       transform_param=dict(mirror=False, **tf), include=dict(phase="TEST"))
    n["data_test"], n["label_test"] = test_data
    n.conv1 = L.Convolution(n.data, param=LEARN, num_output=96, kernel_size=11, stride=4,
                            weight_filler=gauss(0.01), bias_filler=const(0))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2 = L.Convolution(n.norm1, param=LEARN, num_output=256, pad=2, kernel_size=5, group=2,
                            weight_filler=gauss(0.01), bias_filler=const(1), device=["gpu0", "gpu1"])
    n.fc8 = L.InnerProduct(n.conv2, param=LEARN, num_output=1000,
                           weight_filler=gauss(0.01), bias_filler=const(0), device="gpu0")
    n.accuracy = L.Accuracy(n.fc8, n.label, include=dict(phase=pb.TEST))
    n.loss = L.SoftmaxWithLoss(n.fc8, n.label)
    return n


def test_caffenet_head_matches_handwritten_prototxt():
    built = caffenet_head().to_proto()
    # Give the TEST data layer its real blob names, as a hand-written train_val does.
    for layer in built.layer:
        if layer.name == "data_test":
            layer.name = "data"
            layer.top[:] = ["data", "label"]
    assert_same_net(built, parse_net(CAFFENET_HEAD))


LENET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  dummy_data_param { shape { dim: 50 dim: 1 dim: 28 dim: 28 } shape { dim: 50 dim: 1 dim: 1 dim: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def lenet_layers(n):
    """LeNet's layers into `n`: a NetSpec (named) or a plain dict (anonymous)."""
    xavier = dict(type="xavier")
    n["data"], n["label"] = L.DummyData(shape=[dict(dim=[50, 1, 28, 28]), dict(dim=[50, 1, 1, 1])],
                                        transform_param=dict(scale=1.0 / 256), ntop=2)
    n["conv1"] = L.Convolution(n["data"], kernel_size=5, num_output=20, weight_filler=xavier)
    n["pool1"] = L.Pooling(n["conv1"], kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n["conv2"] = L.Convolution(n["pool1"], kernel_size=5, num_output=50, weight_filler=xavier)
    n["pool2"] = L.Pooling(n["conv2"], kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n["ip1"] = L.InnerProduct(n["pool2"], num_output=500, weight_filler=xavier)
    n["relu1"] = L.ReLU(n["ip1"], in_place=True)
    n["ip2"] = L.InnerProduct(n["relu1"], num_output=10, weight_filler=xavier)
    n["loss"] = L.SoftmaxWithLoss(n["ip2"], n["label"])
    return n


def test_lenet_named_matches_handwritten():
    built = lenet_layers(NetSpec()).to_proto()
    assert_same_net(built, parse_net(LENET))
    relu = built.layer[6]
    assert list(relu.bottom) == list(relu.top) == ["ip1"], "ReLU must run in place"


def test_lenet_anonymous_gets_pycaffe_automatic_names():
    tops = lenet_layers({})
    built = tops["loss"].to_proto()
    expected = parse_net(LENET)
    auto = {"data": "DummyData1", "label": "DummyData2", "conv1": "Convolution1", "pool1": "Pooling1",
            "conv2": "Convolution2", "pool2": "Pooling2", "ip1": "InnerProduct1",
            "ip2": "InnerProduct2", "loss": "SoftmaxWithLoss1"}
    for layer in expected.layer:
        layer.name = auto.get(layer.name, "ReLU1")
        layer.bottom[:] = [auto[b] for b in layer.bottom]
        layer.top[:] = [auto[t] for t in layer.top]
    assert_same_net(built, expected)
    assert_same_net(to_proto(tops["loss"]), expected)


def test_topless_layers_are_named_by_assignment_or_type():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    assert_same_net(n.to_proto(), parse_net("""
        layer { name: "data" type: "DummyData" top: "data" top: "data2"
                dummy_data_param { shape { dim: 3 } } }
        layer { name: "silence_data" type: "Silence" bottom: "data" }
        layer { name: "silence_data2" type: "Silence" bottom: "data2" }"""))
    anon = to_proto(L.Silence(*L.DummyData(shape=dict(dim=3), ntop=2), ntop=0))
    assert [layer.name for layer in anon.layer] == ["DummyData1", "Silence1"]
    assert list(anon.layer[1].bottom) == ["DummyData1", "DummyData2"]


def test_input_that_is_not_a_top_raises_type_error():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)
    with pytest.raises(TypeError, match="ntop=2"):
        NetSpec().data = data


def test_enum_access_and_enum_names():
    assert P.Pooling.MAX == pb.PoolingParameter.MAX and P.Pooling.AVE == pb.PoolingParameter.AVE
    assert P.Eltwise.SUM == pb.EltwiseParameter.SUM and P.Eltwise.PROD == pb.EltwiseParameter.PROD
    assert P.LRN.WITHIN_CHANNEL == pb.LRNParameter.WITHIN_CHANNEL
    assert P.Loss.VALID == pb.LossParameter.VALID and params is P and layers is L
    x = L.Input(shape=dict(dim=[1, 2, 4, 4]))
    by_name = L.Pooling(x, pool="AVE", kernel_size=2).to_proto().layer[1].pooling_param.pool
    assert by_name == pb.PoolingParameter.AVE
    with pytest.raises(NetspecError, match="'pool' takes one of MAX, AVE, STOCHASTIC, got 'MEAN'"):
        L.Pooling(x, pool="MEAN").to_proto()
    with pytest.raises(NetspecError, match="got 9"):
        L.Pooling(x, pool=9).to_proto()
    with pytest.raises(AttributeError, match="NoSuchParameter"):
        P.NoSuch


def test_multiple_tops_and_in_place():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 6]))
    n.a, n.b, n.c = L.Slice(n.data, slice_point=[1, 3], axis=1, ntop=3)
    n.b_relu = L.ReLU(n.b, in_place=True)
    n.sum = L.Eltwise(n.a, n.b_relu, operation=P.Eltwise.SUM, coeff=[1, -1])
    built = n.to_proto()
    assert_same_net(built, parse_net("""
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 6 } } }
        layer { name: "a" type: "Slice" bottom: "data" top: "a" top: "b" top: "c"
                slice_param { slice_point: 1 slice_point: 3 axis: 1 } }
        layer { name: "b_relu" type: "ReLU" bottom: "b" top: "b" }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b"
                top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: -1 } }"""))


def test_unnamed_second_top_gets_automatic_name():
    n = NetSpec()
    first, second = L.DummyData(shape=[dict(dim=[1]), dict(dim=[1])], ntop=2)
    n.first = first
    n.out = L.Eltwise(first, second)
    assert list(n.to_proto().layer[0].top) == ["first", "DummyData1"]


def test_include_phase_param_list_and_loss_weight():
    x = L.Input(shape=dict(dim=[1, 3]))
    layer = L.InnerProduct(x, num_output=2, param=[dict(lr_mult=1), dict(lr_mult=2, name="shared_b")],
                           include=[dict(phase=pb.TRAIN), dict(stage="deploy")], exclude=dict(phase=1),
                           loss_weight=0.5, propagate_down=[False]).to_proto().layer[1]
    assert [p.lr_mult for p in layer.param] == [1, 2] and layer.param[1].name == "shared_b"
    assert not layer.param[0].HasField("decay_mult")
    assert layer.include[0].phase == pb.TRAIN and list(layer.include[1].stage) == ["deploy"]
    assert layer.exclude[0].phase == pb.TEST
    assert list(layer.loss_weight) == [0.5] and list(layer.propagate_down) == [False]


def test_param_messages_and_empty_dicts_are_kept():
    x = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    conv = L.Convolution(x, num_output=4, kernel_size=[3, 5],
                         weight_filler=pb.FillerParameter(type="msra"), bias_filler={}).to_proto().layer[1]
    assert conv.convolution_param.weight_filler.type == "msra"
    assert conv.convolution_param.HasField("bias_filler")
    assert list(conv.convolution_param.kernel_size) == [3, 5]
    relu = L.ReLU(x).to_proto().layer[1]
    assert not relu.HasField("relu_param"), "a layer without keywords must not get an empty *_param"


def test_device_extension_on_any_layer():
    x = L.Input(shape=dict(dim=[1, 3, 8, 8]), device="gpu1")
    net = L.Convolution(x, num_output=4, kernel_size=3, group=2, device=["gpu0", "gpu1"]).to_proto()
    assert list(net.layer[0].device) == ["gpu1"]
    assert list(net.layer[1].device) == ["gpu0", "gpu1"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernal_size=3),
     "layer 'Convolution1': Convolution has no parameter 'kernal_size' in convolution_param"),
    (dict(weight_filler=dict(stdd=1)), "FillerParameter has no field 'stdd'"),
    (dict(num_output="many"), "field 'num_output' of ConvolutionParameter cannot hold 'many'"),
    (dict(weight_filler=3), "FillerParameter is a message: give a dict"),
    (dict(num_output=[1, 2]), "field 'num_output' of ConvolutionParameter takes one value"),
])
def test_bad_keywords_name_the_layer_and_field(kwargs, message):
    x = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    with pytest.raises(NetspecError, match=message.replace("(", r"\(")):
        L.Convolution(x, **kwargs).to_proto()


def test_unknown_type_takes_only_layer_parameter_fields():
    x = L.Input(shape=dict(dim=[1]))
    net = L.MyPython(x, python_param=dict(module="m", layer="Y"), loss_weight=1).to_proto()
    assert net.layer[1].python_param.module == "m" and list(net.layer[1].loss_weight) == [1]
    with pytest.raises(NetspecError, match="MyPython has no parameter 'size' in LayerParameter"):
        L.MyPython(x, size=3).to_proto()


def test_update_changes_a_layer_before_writing():
    n = lenet_layers(NetSpec())
    n.update("conv1", dict(num_output=7))
    assert n.to_proto().layer[1].convolution_param.num_output == 7
    assert n.keys()[:2] == ["data", "label"] and len(n.vals()) == 10
    del n["loss"]
    assert "loss" not in [layer.name for layer in n.to_proto().layer]


@pytest.mark.parametrize("build", [lambda: lenet_layers(NetSpec()).to_proto(),
                                   lambda: caffenet_head().to_proto()], ids=["lenet", "caffenet"])
def test_text_round_trip_is_exact(build):
    # str() (protobuf's C printer) and text_format (Python printer) spell floats differently
    # ("1" vs "1.0"); each must re-parse to the same message and print itself identically.
    net = build()
    for write in (str, text_format.MessageToString):
        text = write(net)
        again = parse_net(text)
        assert again == net, f"{write.__name__} output does not re-parse to the same net"
        assert write(again) == text
        assert parse_net(write(again)) == net
