"""netspec.formats.caffemodel against .caffemodel files written by real Caffe 1.0 (tests/data/caffe)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.formats.blobs import array_to_blob
from netspec.formats.caffemodel import (
    load_weights,
    read_caffemodel,
    read_weights,
    weights_by_layer,
    write_caffemodel,
)
from netspec.formats.protofile import I32, encode_len_field, encode_varint
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"
MODELS = ["loss_net.caffemodel", "layers_net.caffemodel", "sgd_step_iter_12.caffemodel"]


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name][0] == b[name][0], name
        assert len(a[name][1]) == len(b[name][1]), name
        for i, (x, y) in enumerate(zip(a[name][1], b[name][1])):
            assert x.dtype == y.dtype == np.float32, f"{name}/{i}: {x.dtype} vs {y.dtype}"
            assert x.shape == y.shape, f"{name}/{i}: {x.shape} vs {y.shape}"
            assert np.array_equal(x, y), f"{name}/{i}: worst error {np.abs(x - y).max()}"


def one_line_error(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def zeros_like_file(path):
    weights = read_weights(path)
    return {name: [torch.zeros(a.shape) for a in blobs] for name, (_, blobs) in weights.items() if blobs}


@pytest.mark.parametrize("model", MODELS)
def test_fast_reader_equals_protobuf_reader(model):
    path = DATA / model
    assert_same_weights(read_weights(path), weights_by_layer(read_caffemodel(path)))


@pytest.mark.parametrize("model, prefix", [("loss_net.caffemodel", "init"),
                                           ("sgd_step_iter_12.caffemodel", "iter11")])
def test_weights_equal_caffe_trajectory(model, prefix):
    expected = np.load(DATA / "sgd_step_trajectory.npz")
    weights = read_weights(DATA / model)
    keys = [k for k in expected.files if k.startswith(prefix + "/") and k.count("/") == 2]
    assert len(keys) == 6
    for key in keys:
        _, layer, index = key.split("/")
        got, want = weights[layer][1][int(index)], expected[key]
        assert got.shape == want.shape, f"{key}: {got.shape} vs {want.shape}"
        assert np.array_equal(got, want), f"{key}: worst error {np.abs(got - want).max()}"


def test_layer_types_and_batchnorm_blobs():
    weights = read_weights(DATA / "layers_net.caffemodel")
    assert weights["conv1"][0] == "Convolution" and weights["relu1"] == ("ReLU", [])
    kind, (_mean, variance, factor) = weights["bn4"]
    assert kind == "BatchNorm" and factor.tolist() == [2.0] and (variance > 0).all()
    assert [b.shape for b in weights["conv4"][1]] == [(6, 18, 1, 1)]  # bias_term: false


@pytest.mark.parametrize("model", MODELS)
def test_read_write_is_byte_identical(model, tmp_path):
    net = read_caffemodel(DATA / model)
    params = {name: blobs for name, (_, blobs) in weights_by_layer(net).items()}
    write_caffemodel(tmp_path / "out.caffemodel", net, params)
    assert (tmp_path / "out.caffemodel").read_bytes() == (DATA / model).read_bytes()


def test_write_from_tensors_sets_phase_and_name(tmp_path):
    layers = [pb.LayerParameter(name="ip", type="InnerProduct", bottom=["x"], top=["y"]),
              pb.LayerParameter(name="relu", type="ReLU", bottom=["y"], top=["y"], phase=pb.TEST)]
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.arange(3.0)
    path = tmp_path / "t.caffemodel"
    write_caffemodel(path, layers, {"ip": [w, b]}, diffs={"ip": [torch.ones(3, 4), torch.zeros(3)]},
                     name="tiny")
    net = read_caffemodel(path)
    assert net.name == "tiny" and [l.phase for l in net.layer] == [pb.TRAIN, pb.TEST]
    assert list(net.layer[0].blobs[0].shape.dim) == [3, 4] and list(net.layer[0].blobs[0].diff) == [1.0] * 12
    assert len(net.layer[1].blobs) == 0 and list(net.layer[0].bottom) == ["x"]
    got = read_weights(path)["ip"][1]
    assert np.array_equal(got[0], w.detach().float().numpy()) and np.array_equal(got[1], [0, 1, 2])


def test_write_refuses_unknown_layers(tmp_path):
    with pytest.raises(NetspecError) as e:
        write_caffemodel(tmp_path / "x.caffemodel", [pb.LayerParameter(name="a")], {"b": [np.zeros(2)]})
    one_line_error(e, "x.caffemodel", "'b'"[1:-1])
    assert not os.listdir(tmp_path)


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "w.caffemodel"
    path.write_bytes(b"old")
    with pytest.raises(ValueError):  # the diff does not fit the data: raised mid-file
        write_caffemodel(path, [pb.LayerParameter(name="a")], {"a": [np.zeros(4)]},
                         diffs={"a": [np.zeros(3)]})
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["w.caffemodel"]


def test_load_weights_copies_into_tensors_and_reports():
    path = DATA / "loss_net.caffemodel"
    params = zeros_like_file(path)
    params["new_fc"] = [torch.zeros(2)]
    del params["conv2"]
    report = load_weights(params, path)
    expected = read_weights(path)
    assert np.array_equal(params["conv1"][0].numpy(), expected["conv1"][1][0])
    assert report.copied == ["conv1", "ip1"] and report.missing == ["new_fc"] and report.ignored == ["conv2"]
    assert "new_fc" in report.summary() and str(path) in report.summary()


def test_read_weights_arrays_are_owned_aligned_and_writable():
    for _, blobs in read_weights(DATA / "layers_net.caffemodel").values():
        for blob in blobs:
            assert blob.flags.owndata and blob.flags.aligned and blob.flags.writeable


def test_load_weights_from_file_into_other_dtypes_and_numpy_blobs():
    path = DATA / "loss_net.caffemodel"
    expected = read_weights(path)["conv1"][1]
    params = {"conv1": [torch.zeros(8, 3, 3, 3, dtype=torch.float64), np.zeros(8, np.float32)]}
    load_weights(params, path)
    assert params["conv1"][0].dtype == torch.float64
    assert np.array_equal(params["conv1"][0].numpy(), expected[0])
    assert np.array_equal(params["conv1"][1], expected[1])


def test_load_weights_into_strided_tensor():
    path = DATA / "loss_net.caffemodel"
    storage = torch.zeros(3, 256)
    params = {"ip1": [storage[:, ::2], torch.zeros(3)]}  # a non-contiguous view as the target
    load_weights(params, path)
    assert np.array_equal(storage[:, ::2].numpy(), read_weights(path)["ip1"][1][0])
    assert float(storage[:, 1::2].abs().sum()) == 0


def test_load_weights_keeps_dtype_and_accepts_netparameter():
    net = read_caffemodel(DATA / "sgd_step_iter_12.caffemodel")
    params = {"ip1": [torch.zeros(3, 128, dtype=torch.float64, requires_grad=True), torch.zeros(3)]}
    load_weights(params, net, source="snap")
    assert params["ip1"][0].dtype == torch.float64 and params["ip1"][0].requires_grad
    assert np.array_equal(params["ip1"][1].numpy(), weights_by_layer(net)["ip1"][1][1])


def test_shape_mismatch_names_layer_and_shapes_and_copies_nothing():
    path = DATA / "loss_net.caffemodel"
    params = zeros_like_file(path)
    params["ip1"][0] = torch.zeros(4, 128)  # ip1 comes after conv1 and conv2 in the file
    with pytest.raises(NetspecError) as e:
        load_weights(params, path)
    one_line_error(e, "loss_net.caffemodel", "layer 'ip1'", "blob 0", "3×128", "4×128")
    assert all(float(t.abs().sum()) == 0 for blobs in params.values() for t in blobs)


def test_blob_count_mismatch():
    params = zeros_like_file(DATA / "loss_net.caffemodel")
    params["conv2"].pop()
    with pytest.raises(NetspecError) as e:
        load_weights(params, DATA / "loss_net.caffemodel")
    one_line_error(e, "loss_net.caffemodel", "layer 'conv2'", "2 blobs", "has 1")


def test_value_count_must_match_shape(tmp_path):
    net = pb.NetParameter(name="n")
    blob = net.layer.add(name="ip").blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    for read in (read_weights, lambda p: weights_by_layer(read_caffemodel(p), source=p)):
        with pytest.raises(NetspecError) as e:
            read(path)
        one_line_error(e, "bad.caffemodel", "layer 'ip'", "blob 0", "5", "2×3", "6")


# --- legacy formats ------------------------------------------------------------------------------

def legacy_blob(shape, values):
    blob = pb.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = shape
    blob.data.extend(values)
    return blob


def v1_net(tmp_path):
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    net = pb.NetParameter(name="old")
    net.layers.add(name="data", type=pb.V1LayerParameter.DATA, top=["data"])
    ip = net.layers.add(name="ip", type=pb.V1LayerParameter.INNER_PRODUCT, bottom=["data"], top=["ip"])
    ip.blobs.extend([legacy_blob((1, 1, 3, 8), w.ravel()), legacy_blob((1, 1, 1, 3), b)])
    net.layers.add(name="loss", type=pb.V1LayerParameter.SOFTMAX_LOSS, bottom=["ip"], top=["loss"])
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    return path, w, b


def test_v1_caffemodel_round_trip(tmp_path):
    path, w, b = v1_net(tmp_path)
    weights = read_weights(path)
    assert_same_weights(weights, weights_by_layer(read_caffemodel(path)))
    assert [(n, t) for n, (t, _) in weights.items()] == [("data", "Data"), ("ip", "InnerProduct"),
                                                         ("loss", "SoftmaxWithLoss")]
    assert [a.shape for a in weights["ip"][1]] == [(1, 1, 3, 8), (1, 1, 1, 3)]  # legacy 4-D
    params = {"ip": [torch.zeros(3, 8), torch.zeros(3)]}  # Blob::ShapeEquals: legacy 1×1×3×8 fits 3×8
    load_weights(params, path)
    assert np.array_equal(params["ip"][0].numpy(), w) and np.array_equal(params["ip"][1].numpy(), b)
    layers = [pb.LayerParameter(name=n, type=t) for n, (t, _) in weights.items()]
    arrays = {k: [p.numpy() for p in v] for k, v in params.items()}
    write_caffemodel(tmp_path / "v2.caffemodel", layers, arrays, name="upgraded")
    again = read_weights(tmp_path / "v2.caffemodel")
    assert [a.shape for a in again["ip"][1]] == [(3, 8), (3,)] and np.array_equal(again["ip"][1][0], w)
    load_weights(params, tmp_path / "v2.caffemodel")


def test_legacy_shape_needs_target_of_four_axes_or_fewer(tmp_path):
    path, _, _ = v1_net(tmp_path)
    with pytest.raises(NetspecError) as e:
        load_weights({"ip": [torch.zeros(1, 1, 1, 3, 8), torch.zeros(3)]}, path)
    one_line_error(e, "layer 'ip'", "1×1×3×8", "1×1×1×3×8")


def test_modern_shape_is_compared_exactly(tmp_path):
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, [pb.LayerParameter(name="ip")], {"ip": [np.zeros((1, 1, 3, 8))]})
    with pytest.raises(NetspecError):  # only legacy num/channels/height/width blobs get padding
        load_weights({"ip": [torch.zeros(3, 8)]}, path)


def test_v0_caffemodel(tmp_path):
    net = pb.NetParameter(name="v0")
    conn = net.layers.add(bottom=["data"], top=["conv1"])
    conn.layer.name, conn.layer.type = "conv1", "conv"
    conn.layer.blobs.extend([legacy_blob((2, 1, 1, 1), [1, 2]), legacy_blob((1, 1, 1, 2), [3, 4])])
    path = tmp_path / "v0.caffemodel"
    path.write_bytes(net.SerializeToString())
    weights = read_weights(path)
    assert_same_weights(weights, weights_by_layer(read_caffemodel(path)))
    assert weights["conv1"][0] == "Convolution" and weights["conv1"][1][1].tolist() == [[[[3.0, 4.0]]]]


def test_fast_reader_follows_protobuf_encoding_rules(tmp_path):
    """Unpacked floats, arrays split in chunks, double_data, unknown fields: as protobuf reads them."""
    floats = np.arange(6, dtype="<f4")
    unpacked = b"".join(encode_varint(5 << 3 | I32) + v.tobytes() for v in floats[:2])
    chunks = encode_len_field(5, floats[2:4].tobytes()) + encode_len_field(5, floats[4:].tobytes())
    shape = encode_len_field(7, pb.BlobShape(dim=[2, 3]).SerializeToString())
    unknown = encode_varint(99 << 3) + encode_varint(7)
    blob_a = unpacked + unknown + chunks + shape
    doubles = encode_len_field(8, np.array([0.1, 2.5]).tobytes())
    blob_b = array_to_blob(np.zeros(2)).SerializeToString() + doubles
    layer = (encode_len_field(1, b"odd") + encode_len_field(2, b"Scale") + encode_len_field(7, blob_a)
             + encode_len_field(7, blob_b))
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(encode_len_field(1, b"n") + encode_len_field(100, layer))
    weights = read_weights(path)
    assert_same_weights(weights, weights_by_layer(read_caffemodel(path)))
    assert weights["odd"][1][0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert weights["odd"][1][1].tolist() == [np.float32(0.1), 2.5]  # double_data wins over data


def test_caffemodel_over_64_megabytes(tmp_path):
    big = np.random.default_rng(0).standard_normal(17_000_000, dtype=np.float32)  # 68 MB
    path = tmp_path / "big.caffemodel"
    layers = [pb.LayerParameter(name="fc", type="InnerProduct")]
    write_caffemodel(path, layers, {"fc": [big.reshape(1000, -1)]})
    assert path.stat().st_size > 64 * 2**20
    assert np.array_equal(read_weights(path)["fc"][1][0].ravel(), big)
    assert np.array_equal(weights_by_layer(read_caffemodel(path))["fc"][1][0].ravel(), big)


# --- bad input -----------------------------------------------------------------------------------

BAD_INPUTS = {
    "truncated": lambda: (DATA / "loss_net.caffemodel").read_bytes()[:3000],
    "random": lambda: np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "prototxt": lambda: (DATA / "loss_net.prototxt").read_bytes(),
    "empty": lambda: b"",
}
EXPECTED = {"truncated": "truncated", "random": "not a binary .caffemodel",
            "prototxt": "this is a text prototxt, not a binary .caffemodel", "empty": "empty file"}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
@pytest.mark.parametrize("reader", ["read_caffemodel", "read_weights", "load_weights"])
def test_bad_files_give_one_line_errors(kind, reader, tmp_path):
    path = tmp_path / f"{kind}.caffemodel"
    path.write_bytes(BAD_INPUTS[kind]())
    read = {"read_caffemodel": read_caffemodel, "read_weights": read_weights,
            "load_weights": lambda p: load_weights({}, p)}[reader]
    with pytest.raises(NetspecError) as e:
        read(path)
    one_line_error(e, str(path), EXPECTED[kind])


def test_truncation_anywhere_is_reported(tmp_path):
    data = (DATA / "layers_net.caffemodel").read_bytes()
    for cut in (1, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / "cut.caffemodel"
        path.write_bytes(data[:cut])
        with pytest.raises(NetspecError) as e:
            read_weights(path)
        one_line_error(e, "cut.caffemodel", "truncated")


def test_missing_file_and_folder(tmp_path):
    for read in (read_caffemodel, read_weights):
        with pytest.raises(NetspecError) as e:
            read(tmp_path / "nope.caffemodel")
        one_line_error(e, "nope.caffemodel", "no such file")
        with pytest.raises(NetspecError) as e:
            read(tmp_path)
        one_line_error(e, str(tmp_path), "folder")


@pytest.mark.parametrize("source, expected", [
    (lambda: pb.NetParameter(name="empty").SerializeToString(), "holds no layers"),
    (lambda: (DATA / "sgd_step_iter_12.solverstate").read_bytes(),
     ("this is a .solverstate (a solver snapshot), not a binary .caffemodel; its weights are in "
      "'sgd_step_iter_12.caffemodel'"))])
def test_other_protobuf_files_are_refused(source, expected, tmp_path):
    path = tmp_path / "x.caffemodel"
    path.write_bytes(source())
    for read in (read_caffemodel, read_weights):
        with pytest.raises(NetspecError) as e:
            read(path)
        one_line_error(e, "x.caffemodel", expected)


def test_mixed_v1_and_current_layers_refused(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="a")
    net.layers.add(name="b")
    path = tmp_path / "mixed.caffemodel"
    path.write_bytes(net.SerializeToString())
    for read in (read_weights, lambda p: weights_by_layer(read_caffemodel(p), source=p)):
        with pytest.raises(NetspecError) as e:
            read(path)
        one_line_error(e, "mixed.caffemodel", "'layers' (V1)")


@pytest.mark.cuda
def test_load_and_write_cuda_tensors(tmp_path):
    path = DATA / "loss_net.caffemodel"
    params = {name: [t.cuda() for t in blobs] for name, blobs in zeros_like_file(path).items()}
    params["ip1"][0] = params["ip1"][0].half()
    load_weights(params, path)
    expected = read_weights(path)
    assert params["conv1"][0].is_cuda
    assert np.array_equal(params["conv1"][0].cpu().numpy(), expected["conv1"][1][0])
    assert np.array_equal(params["ip1"][0].cpu().numpy(), expected["ip1"][1][0].astype(np.float16))
    params["ip1"][0] = torch.from_numpy(expected["ip1"][1][0]).cuda()
    write_caffemodel(tmp_path / "c.caffemodel", read_caffemodel(path), params)
    assert (tmp_path / "c.caffemodel").read_bytes() == path.read_bytes()
