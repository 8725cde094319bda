"""The compiler: layers_net against real Caffe's blobs, the fx graph, sharing, freezing, devices, errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"


def set_weights_from_caffemodel(net, path):
    """Read the caffemodel with the generated proto module alone (independent of netspec.formats)."""
    model = pb.NetParameter()
    model.ParseFromString(Path(path).read_bytes())
    params = net.params()
    with torch.no_grad():
        for layer in model.layer:
            for t, blob in zip(params.get(layer.name, []), layer.blobs):
                t.copy_(torch.tensor(np.array(blob.data, np.float32)).reshape(t.shape))


def caffe_source_blob(key, blobs):
    """Caffe's implicit split blobs `<blob>_<layer>_<i>_split_<k>` equal their source blob."""
    if key in blobs:
        return key
    return max((b for b in blobs if key.startswith(b + "_") and "_split_" in key), key=len)


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def layers_net():
    src = DATA / "layers_net.prototxt"
    net = compile_net(load_net(src, pb.TEST), source=src)
    set_weights_from_caffemodel(net, DATA / "layers_net.caffemodel")
    return net


def test_layers_net_matches_caffe_blob_for_blob(layers_net):
    ref = np.load(DATA / "layers_net_blobs.npz")
    with torch.no_grad():
        out = layers_net(data=torch.from_numpy(ref["data"]))
    assert len(ref.files) == 38
    for key in ref.files:
        got = out[caffe_source_blob(key, out)].numpy()
        assert got.shape == ref[key].shape, f"blob {key}: shape {got.shape} vs Caffe {ref[key].shape}"
        err = rel_err(got, ref[key])
        assert err < 1e-4, f"blob {key}: worst relative error {err:.2e} against Caffe"


def test_eager_steps_equal_the_fx_graph(layers_net):
    x = torch.randn(2, 3, 35, 35)
    with torch.no_grad():
        fx_out = layers_net(data=x)
        eager = layers_net.run_steps({"data": x})
    for b in fx_out:
        assert torch.equal(fx_out[b], eager[b]), b


def test_graph_nodes_carry_caffe_names(layers_net):
    gm = layers_net.graph_module()
    layer_nodes = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [n.meta["netspec_layer"] for n in layer_nodes] == list(layers_net.layers)[1:]
    assert "conv1 = self.conv1(data)" in gm.code
    assert layers_net.output_names == ["gpool_r", "ip2a", "ip2b", "prob", "sig", "tanh"]   # sorted, as Caffe
    only = layers_net.graph_module(outputs=["prob"])
    assert list(only(torch.randn(2, 3, 35, 35))) == ["prob"]
    with pytest.raises(NetspecError, match="no blob"):
        layers_net.graph_module(outputs=["nope"])


def test_parameters_are_registered_under_layer_names(layers_net):
    names = dict(layers_net.named_parameters())
    assert names["conv1.weight"].shape == (8, 3, 5, 5) and names["conv1.bias"].shape == (8,)
    assert "conv4.bias" not in names                   # bias_term: false
    assert [p.shape for p in layers_net.params()["bn4"]] == [(6,), (6,), (1,)]


NET = """name: "small"
layer { name: "in" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" %s
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "conv" top: "ipa" param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "conv" top: "ipb" param { name: "shared_w" } param { name: "shared_b" }
  inner_product_param { num_output: 3 } }
layer { name: "sum" type: "Eltwise" bottom: "ipa" bottom: "ipb" top: "sum" %s }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
layer { name: "aux" type: "SoftmaxWithLoss" bottom: "ipa" bottom: "label" top: "aux" loss_weight: 0.5 }
"""


def small(conv_extra="", sum_extra="", **kw):
    return compile_net(load_net(NET % (conv_extra, sum_extra), pb.TRAIN), seed=3, **kw)


def test_param_spec_names_share_one_blob():
    net = small()
    assert net.layers["ipa"].weight is net.layers["ipb"].weight
    learn = net.learnable_params()
    assert [(p.layer, p.index) for p in learn] == [("conv", 0), ("conv", 1), ("ipa", 0), ("ipa", 1)]
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0.0, 1, 2, 1])
    blobs = net(data=x, label=y)
    torch.testing.assert_close(blobs["ipa"], blobs["ipb"])
    assert net.loss_weights == {"loss": 1.0, "aux": 0.5}
    torch.testing.assert_close(net.total_loss(blobs), blobs["loss"] + 0.5 * blobs["aux"])


def test_lr_mult_zero_freezes_and_propagate_down_stops_gradients():
    net = small('param { lr_mult: 0 } param { lr_mult: 0 }', "propagate_down: false propagate_down: true")
    assert not net.layers["conv"].weight.requires_grad
    assert [p.lr_mult for p in net.learnable_params()][:2] == [0.0, 0.0]
    x = torch.randn(4, 3, 6, 6, requires_grad=True)
    blobs = net(data=x, label=torch.tensor([0.0, 1, 2, 1]))
    blobs["loss"].backward()
    # ipa's only path to the main loss is cut by propagate_down: false on Eltwise's first bottom,
    # but ipb shares ipa's weights, so the shared weight still gets a gradient through ipb.
    assert net.layers["ipa"].weight.grad is not None
    assert net.layers["conv"].weight.grad is None


def test_logical_devices_insert_transfers_and_change_nothing_on_one_device():
    text = NET % ('device: "gpu1"', 'device: "gpu0"')
    ref = compile_net(load_net(text, pb.TEST), seed=5)
    mapped = compile_net(load_net(text, pb.TEST), seed=5, device_map="gpu0=cpu,gpu1=cpu")
    transfers = [n.meta["netspec_transfer"] + (n.meta["netspec_consumer"],)
                 for n in mapped.graph_module().graph.nodes if "netspec_transfer" in n.meta]
    assert transfers == [("data", "", "gpu1", "conv"), ("conv", "gpu1", "", "ipa"),
                         ("conv", "gpu1", "", "ipb"), ("ipa", "", "gpu0", "sum"), ("ipb", "", "gpu0", "sum"),
                         ("sum", "gpu0", "", "loss")]
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0.0, 1, 2, 1])
    a, b = ref(data=x, label=y), mapped(data=x, label=y)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_input_blob_is_delivered_to_the_device_of_the_layer_reading_it():
    """An Input's blob arrives on the net's default device; a layer placed elsewhere (the second
    column of AlexNet on a second GPU) gets its copy. `meta` stands in for another device here."""
    text = ('layer { name: "in" type: "Input" top: "data"\n'
            '  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }\n'
            'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" device: "gpu1"\n'
            '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" device: "gpu1" }\n')
    net = compile_net(load_net(text, pb.TEST), device_map="gpu1=meta").place()
    out = net(data=torch.randn(2, 3, 6, 6))["conv"]
    assert out.device.type == "meta" and out.shape == (2, 4, 4, 4)


def test_unknown_device_name_is_an_error():
    with pytest.raises(NetspecError, match="logical device 'gpu1' is not in the device map"):
        compile_net(load_net(NET % ('device: "gpu1"', ""), pb.TEST), device_map="gpu0=cpu")


def test_unknown_type_names_file_line_and_known_types(tmp_path):
    f = tmp_path / "n.prototxt"
    f.write_text(NET.replace('type: "Eltwise"', 'type: "Eltwize"') % ("", ""))
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(f, pb.TEST), source=f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:10: layer 'sum': unknown layer type 'Eltwize'")
    assert "Convolution" in msg and "\n" not in msg
    assert e.value.layer == "sum" and e.value.line == 10


def test_shape_mismatch_names_layer_and_shapes(tmp_path):
    f = tmp_path / "n.prototxt"
    f.write_text(NET.replace('bottom: "ipb" top: "sum"', 'bottom: "conv" top: "sum"') % ("", ""))
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(f, pb.TEST), source=f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:10: layer 'sum': ") and "\n" not in msg
    assert "'conv'" in msg and "(4, 4, 4, 4)" in msg and "(4, 3)" in msg, msg


def test_layer_names_that_are_not_identifiers():
    text = ('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "fc.1/a" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }\n'
            'layer { name: "forward" type: "ReLU" bottom: "y" top: "y" }\n')
    net = compile_net(load_net(text, pb.TEST))
    assert list(net.layers) == ["in", "fc.1/a", "forward"]
    assert net(x=torch.ones(1, 2))["y"].shape == (1, 2)


@pytest.mark.parametrize("body, words", [
    ('layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { kernel_size: 3 } }',
     "num_output must be given"),
    ('layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: 3 } }',
     "kernel_size (or kernel_h and kernel_w) is required"),
    ('layer { name: "c" type: "InnerProduct" bottom: "x" top: "c" }', "num_output must be given"),
    ('layer { name: "c" type: "Pooling" bottom: "x" top: "c" }', "kernel_size (or kernel_h and kernel_w) is required"),
    ('layer { name: "c" type: "Data" top: "c" top: "l" data_param { source: "db" backend: LMDB } }',
     "batch_size must be positive"),
])
def test_missing_required_params_are_one_line_errors(tmp_path, body, words):
    f = tmp_path / "n.prototxt"
    f.write_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'
                 + body + "\n")
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(f, pb.TEST), source=f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: layer 'c': ") and words in msg and "\n" not in msg, msg


def test_a_loss_layer_without_a_top_gets_caffes_automatic_one(tmp_path):
    """BVLC's pascal_finetune_trainval_test.prototxt ends in a SoftmaxWithLoss with no top: Caffe's
    AutoTopBlobs gives it one, "(automatic)", whose loss counts with weight 1."""
    text = """name: "auto"
layer { name: "data" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" }
layer { name: "loss2" type: "EuclideanLoss" bottom: "ip" bottom: "ip" }
"""
    path = tmp_path / "auto.prototxt"
    path.write_text(text)
    net = compile_net(load_net(path, phase=pb.TRAIN), pb.TRAIN, seed=1, source=str(path))
    assert net.loss_weights == {"(automatic)": 1.0, "(automatic)_1": 1.0}
    assert net.output_names == ["(automatic)", "(automatic)_1"]
    x, y = torch.randn(4, 3), torch.tensor([0.0, 1.0, 4.0, 2.0])
    blobs = net(x=x, y=y)
    want = torch.nn.functional.cross_entropy(blobs["ip"], y.long())
    assert torch.allclose(blobs["(automatic)"], want) and float(blobs["(automatic)_1"]) == 0.0
