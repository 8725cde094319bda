"""The pycaffe-compatible API, written as a pycaffe user would (`import netspec as caffe`)."""
from pathlib import Path

import numpy as np
import pytest

import netspec as caffe
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def source(key, blobs):
    """Caffe's split blobs (`<blob>_<layer>_<i>_split_<k>`) are not kept by netspec: use their source."""
    return key if key in blobs else max((b for b in blobs if key.startswith(b + "_")), key=len)


def load_caffemodel_by_hand(net, path):
    model = pb.NetParameter()
    model.ParseFromString(Path(path).read_bytes())
    for layer in model.layer:
        for blob, bp in zip(net.params.get(layer.name, []), layer.blobs):
            blob.data[...] = np.array(bp.data, np.float32).reshape(blob.data.shape)


def test_layers_net_through_pycaffe_api():
    net = caffe.Net(str(DATA / "layers_net.prototxt"), caffe.TEST)
    load_caffemodel_by_hand(net, DATA / "layers_net.caffemodel")
    ref = np.load(DATA / "layers_net_blobs.npz")
    net.blobs["data"].data[...] = ref["data"]
    out = net.forward()
    assert sorted(out) == sorted(net.outputs)
    for key in ref.files:
        err = rel_err(net.blobs[source(key, net.blobs)].data, ref[key])
        assert err < 1e-4, f"blob {key}: worst relative error {err:.2e}"


@pytest.fixture(scope="module")
def loss_net():
    net = caffe.Net(str(DATA / "loss_net.prototxt"), caffe.TRAIN)
    load_caffemodel_by_hand(net, DATA / "loss_net.caffemodel")
    ref = np.load(DATA / "loss_net_blobs.npz")
    net.blobs["data"].data[...] = ref["data"]
    net.blobs["label"].data[...] = ref["label"]
    net.forward()
    net.backward()
    return net


def test_loss_net_blobs_diffs_and_param_diffs_match_caffe(loss_net):
    blobs = np.load(DATA / "loss_net_blobs.npz")
    diffs = np.load(DATA / "loss_net_blob_diffs.npz")
    pdiffs = np.load(DATA / "loss_net_param_diffs.npz")
    for key in blobs.files:
        err = rel_err(loss_net.blobs[source(key, loss_net.blobs)].data, blobs[key])
        assert err < 1e-4, f"blob {key}: worst relative error {err:.2e}"
    for key in diffs.files:
        if "_split_" in key:       # a split blob's diff is its own branch's, which netspec does not keep
            continue
        got, want = loss_net.blobs[key].diff, diffs[key]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-6), f"diff of {key}"
    for key in pdiffs.files:
        layer, i = key.split("/")
        err = rel_err(loss_net.params[layer][int(i)].diff, pdiffs[key])
        assert err < 1e-4, f"param diff {key}: worst relative error {err:.2e}"


def test_blob_data_is_the_nets_memory():
    net = caffe.Net(str(DATA / "loss_net.prototxt"), caffe.TRAIN)
    x = np.random.default_rng(0).normal(size=net.blobs["data"].data.shape).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.blobs["label"].data[...] = 1
    net.forward()
    w = net.params["conv1"][0]
    w.data[...] = 0                                       # writes reach the parameter itself
    assert float(np.abs(net.compiled.layers["conv1"].weight.detach().numpy()).sum()) == 0
    net.forward()
    np.testing.assert_allclose(net.blobs["conv1"].data, np.maximum(net.params["conv1"][1].data, 0)[None, :, None, None]
                               * np.ones_like(net.blobs["conv1"].data))


def test_net_structure_views(loss_net):
    assert loss_net.inputs == ["data", "label"] and loss_net.outputs == ["loss", "acc"]
    assert loss_net._layer_names[:3] == ["data", "conv1", "relu1"]
    assert loss_net.layer_dict["conv1"].type == "Convolution"
    assert [b.data.shape for b in loss_net.layers[1].blobs] == [(8, 3, 3, 3), (8,)]
    assert loss_net.top_names["loss"] == ["loss"] and loss_net.bottom_names["loss"] == ["ip1", "label"]
    assert loss_net.blobs["conv1"].shape == (6, 8, 9, 9) and loss_net.blobs["conv1"].count == 6 * 8 * 81
    assert list(loss_net.params) == ["conv1", "conv2", "ip1"]
    assert "Convolution" in caffe.layer_type_list() and "SoftmaxWithLoss" in caffe.layer_type_list()


def test_forward_start_end_and_clear_param_diffs(loss_net):
    full = loss_net.blobs["ip1"].data.copy()
    loss_net.blobs["pool1"].data[...] *= 1            # unchanged input to the partial run
    out = loss_net.forward(start="conv2", end="ip1")
    np.testing.assert_allclose(out["ip1"], full, rtol=1e-6)
    loss_net.clear_param_diffs()
    assert all(np.all(b.diff == 0) for bl in loss_net.params.values() for b in bl)


def test_reshape_propagates_batch_size():
    net = caffe.Net(str(DATA / "loss_net.prototxt"), caffe.TEST)
    net.blobs["data"].reshape(2, 3, 19, 19)
    net.blobs["label"].reshape(2)
    net.reshape()
    assert net.blobs["ip1"].data.shape == (2, 3)
    net.blobs["data"].data[...] = 1
    assert net.forward()["loss"].shape == ()
