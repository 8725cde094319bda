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
    assert loss_net.inputs == ["data", "label"]
    assert loss_net.outputs == ["acc", "loss"]             # by name: Caffe collects them in a std::set
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


# ---- forward/backward over layer ranges (pycaffe's start/end) ------------------------------------
def caffe_loss_net(phase=caffe.TRAIN):
    net = caffe.Net(str(DATA / "loss_net.prototxt"), phase)
    load_caffemodel_by_hand(net, DATA / "loss_net.caffemodel")
    ref = np.load(DATA / "loss_net_blobs.npz")
    net.blobs["data"].data[...] = ref["data"]
    net.blobs["label"].data[...] = ref["label"]
    return net


def test_backward_in_two_ranges_matches_caffes_full_backward():
    """backward(start, end) reads each top's gradient from its blob's diff: two ranges, the second
    starting from the diff the first left in pool1, give Caffe's full backward."""
    net = caffe_loss_net()
    net.forward()
    got = net.backward(start="acc", end="conv2")
    assert list(got) == ["pool1"]
    net.backward(start="pool1")
    diffs = np.load(DATA / "loss_net_blob_diffs.npz")
    pdiffs = np.load(DATA / "loss_net_param_diffs.npz")
    for key in (k for k in diffs.files if "_split_" not in k and k not in ("data", "label")):
        err = rel_err(net.blobs[key].diff, diffs[key])
        assert err < 1e-4, f"diff of {key}: worst relative error {err:.2e}"
    for key in pdiffs.files:
        layer, i = key.split("/")
        err = rel_err(net.params[layer][int(i)].diff, pdiffs[key])
        assert err < 1e-4, f"param diff {key}: worst relative error {err:.2e}"


def test_backward_of_one_layer_before_any_forward():
    """As pycaffe's test_backward_start_end: ip1's diff goes through ip1 alone, onto conv2 (the
    zeros it holds, since nothing ran) and into ip1's bias diff."""
    net = caffe_loss_net()
    g = np.random.default_rng(1).normal(size=net.blobs["ip1"].shape).astype(np.float32)
    net.blobs["ip1"].diff[...] = g
    out = net.backward(start="ip1", end="ip1")
    assert list(out) == ["conv2"]
    w = net.params["ip1"][0].data
    np.testing.assert_allclose(out["conv2"], (g @ w).reshape(net.blobs["conv2"].shape), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][1].diff, g.sum(0), rtol=1e-5, atol=1e-6)
    assert not net.params["ip1"][0].diff.any()           # weight diff = g^T . conv2 data (zeros)
    assert not net.params["conv2"][0].diff.any()         # layers outside the range do nothing


def test_forward_range_reads_what_the_blobs_hold_and_returns_pycaffes_keys():
    net = caffe_loss_net(caffe.TEST)
    full = net.forward()
    assert sorted(full) == ["acc", "loss"]
    ip1 = net.blobs["ip1"].data.copy()
    net.blobs["conv2"].data[...] *= 2                    # ip1 alone, on the doubled conv2
    out = net.forward(start="ip1", end="ip1", blobs=["conv2"])
    assert sorted(out) == ["conv2", "ip1"]
    b = net.params["ip1"][1].data
    np.testing.assert_allclose(out["ip1"], 2 * (ip1 - b) + b, rtol=1e-5, atol=1e-5)
    assert sorted(net.forward(end="pool1", blobs=["conv1"])) == ["conv1", "pool1"]
    assert sorted(net.forward(blobs=["ip1"])) == ["acc", "ip1", "loss"]


def test_keyword_inputs_and_top_diffs_must_name_all_of_them():
    net = caffe_loss_net()
    with pytest.raises(caffe.NetspecError, match="do not match net inputs"):
        net.forward(data=np.zeros(net.blobs["data"].shape))
    with pytest.raises(caffe.NetspecError, match="batch of 6"):
        net.forward(data=np.zeros((2, 3, 19, 19)), label=np.zeros(2))
    net.forward()
    with pytest.raises(caffe.NetspecError, match="do not match net outputs"):
        net.backward(loss=np.ones(()))


def test_repeated_backward_redraws_nothing_and_accumulates_param_diffs(tmp_path):
    """A second backward after one forward re-runs the layers on what they saw, with the same
    Dropout mask and without touching BatchNorm's running sums: blob diffs repeat, param diffs
    double (Caffe accumulates them)."""
    path = tmp_path / "bn.prototxt"
    path.write_text("""
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 5 dim: 5 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }""")
    net = caffe.Net(str(path), caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.default_rng(0).normal(size=(4, 2, 5, 5))
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    net.forward()
    net.backward()
    blob_diffs = {b: net.blobs[b].diff.copy() for b in ("conv", "ip")}
    param_diffs = {n: [p.diff.copy() for p in ps] for n, ps in net.params.items() if n != "bn"}
    stats = [p.data.copy() for p in net.params["bn"]]
    net.backward()
    for b, d in blob_diffs.items():
        np.testing.assert_array_equal(net.blobs[b].diff, d, err_msg=f"diff of {b}")
    for n, ds in param_diffs.items():
        for i, d in enumerate(ds):
            np.testing.assert_allclose(net.params[n][i].diff, 2 * d, rtol=1e-6, err_msg=f"param diff {n}/{i}")
    for i, s in enumerate(stats):
        np.testing.assert_array_equal(net.params["bn"][i].data, s, err_msg=f"bn blob {i}")


def test_keyword_top_diffs_drive_a_lossless_net(tmp_path):
    """A deploy net with force_backward: backward(**{output: diff}) gives d(data) = diff . W."""
    path = tmp_path / "deploy.prototxt"
    path.write_text("""force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }""")
    net = caffe.Net(str(path), caffe.TEST)
    assert net.outputs == ["ip"]                          # rewritten in place, then read by no one
    x = np.random.default_rng(2).normal(size=(2, 5)).astype(np.float32)
    y = net.forward(data=x)["ip"]
    g = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = net.backward(ip=g)
    w = net.params["ip"][0].data
    np.testing.assert_allclose(out["data"], (g * (y > 0)) @ w, rtol=1e-5, atol=1e-6)


# ---- the net's structure, phases, levels and stages ------------------------------------------------
STATE_NET = """
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } include { phase: TRAIN } }
layer { name: "deploy_data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } }
  include { phase: TEST stage: "deploy" } }
layer { name: "val_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 4 } shape { dim: 2 } } include { phase: TEST not_stage: "deploy" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "deep" type: "InnerProduct" bottom: "ip" top: "deep" inner_product_param { num_output: 3 }
  include { min_level: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" include { stage: "deploy" } }
"""


@pytest.mark.parametrize("phase, level, stages, layers, outputs", [
    ("TRAIN", 0, [], ["train_data", "ip", "loss"], ["loss"]),
    ("TEST", 0, [], ["val_data", "ip", "loss"], ["loss"]),
    ("TEST", 1, [], ["val_data", "ip", "deep", "loss"], ["deep", "loss"]),
    ("TEST", 0, ["deploy"], ["deploy_data", "ip", "prob"], ["prob"]),
])
def test_phase_level_and_stages_pick_the_layers(tmp_path, phase, level, stages, layers, outputs):
    path = tmp_path / "all_in_one.prototxt"
    path.write_text(STATE_NET)
    net = caffe.Net(str(path), getattr(caffe, phase), level=level, stages=stages)
    assert net._layer_names == layers and net.outputs == outputs
    assert net.inputs == (["data"] if stages else [])
    assert [net._blob_names[i] for i in net._outputs] == outputs
    assert net.blob_loss_weights["loss" if "loss" in layers else "prob"] == (1.0 if "loss" in layers else 0.0)
    assert [net.layers[i].type for i in range(len(layers))] == [net.layer_dict[n].type for n in layers]


def test_save_then_load_by_both_constructors_and_copy_from(tmp_path):
    net = caffe_loss_net()
    net.params["ip1"][1].data[...] = [1, 2, 3]
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    model = str(DATA / "loss_net.prototxt")
    others = [caffe.Net(model, path, caffe.TEST), caffe.Net(model, caffe.TEST, weights=path)]
    blank = caffe.Net(model, caffe.TEST)
    blank.copy_from(path)
    for other in others + [blank]:
        for name, blobs in net.params.items():
            for i, b in enumerate(blobs):
                np.testing.assert_array_equal(other.params[name][i].data, b.data, err_msg=f"{name}/{i}")


def test_blobs_and_params_outlive_the_net():
    net = caffe_loss_net()
    net.forward()
    net.backward()
    blobs = list(net.blobs.values())
    params = [p for ps in net.params.values() for p in ps]
    kept = [b.data.copy() for b in blobs] + [p.diff.copy() for p in params]
    del net
    for b, want in zip(blobs + params, kept):
        got = b.data if b in blobs else b.diff
        np.testing.assert_array_equal(got, want)


def test_share_with_uses_the_other_nets_memory():
    a, b = caffe_loss_net(), caffe.Net(str(DATA / "loss_net.prototxt"), caffe.TEST)
    b.share_with(a)
    a.params["conv1"][0].data[...] = 0.5
    assert np.all(b.params["conv1"][0].data == 0.5)


def test_dummy_data_labels_written_by_the_user_stay(tmp_path):
    """Caffe fills a constant DummyData top once: labels set through net.blobs survive forwards
    and are what the loss reads; the gaussian data is drawn anew."""
    path = tmp_path / "dummy.prototxt"
    path.write_text("""force_backward: true
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" }
    data_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" }""")
    net = caffe.Net(str(path), caffe.TRAIN)
    labels = np.array([2, 0, 1, 2], np.float32)
    net.blobs["label"].data[...] = labels
    first = net.forward()["loss"].copy()
    x1 = net.blobs["data"].data.copy()
    loss = net.forward()["loss"]
    x = net.blobs["data"].data
    assert not np.array_equal(x, x1)
    np.testing.assert_array_equal(net.blobs["label"].data, labels)
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    assert float(loss) == pytest.approx(-logp[np.arange(4), labels.astype(int)].mean(), rel=1e-5)
    assert float(first) != pytest.approx(float(loss))
    net.backward()                                       # force_backward: the data gets its diff
    p = np.exp(logp)
    np.testing.assert_allclose(net.blobs["data"].diff, (p - np.eye(3)[labels.astype(int)]) / 4, atol=1e-6)


def test_forward_all_pads_the_last_batch(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text("""layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "prob" type: "Softmax" bottom: "data" top: "prob" }""")
    net = caffe.Net(str(path), caffe.TEST)
    x = np.random.default_rng(3).normal(size=(5, 3)).astype(np.float32)
    out = net.forward_all(data=x)
    e = np.exp(x)
    np.testing.assert_allclose(out["prob"], e / e.sum(1, keepdims=True), rtol=1e-5)
