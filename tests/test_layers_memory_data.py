"""MemoryData with pycaffe's Net.set_input_arrays: real Caffe's memory_data fixture (both passes),
the batches of Caffe's test_memory_data_layer.cpp TestForward, and _caffe.cpp's checks on the arrays
(each a one-line error naming the layer)."""
import contextlib
from pathlib import Path

import numpy as np
import pytest

import netspec
from netspec.errors import NetspecError

LAYERS2 = Path(__file__).parent / "data" / "caffe" / "layers2"
NET = ('name: "m"\nlayer {{ name: "data" type: "MemoryData" top: "data" top: "label" '
       'memory_data_param {{ batch_size: {b} channels: 3 height: 2 width: 4 }} }}\n{rest}')


def _net(tmp_path, b=2, rest=""):
    path = tmp_path / "net.prototxt"
    path.write_text(NET.format(b=b, rest=rest))
    return netspec.Net(str(path), netspec.TEST)


def test_matches_caffe_fixture_both_passes():
    ref = np.load(LAYERS2 / "memory_data.npz")
    with contextlib.chdir(LAYERS2):
        net = netspec.Net("memory_data.prototxt", netspec.TEST)
    net.set_input_arrays(ref["input/memory/data"], ref["input/memory/label"])
    for k in range(2):
        net.forward()
        for blob in ("data", "label"):
            want = ref[f"{'iter1/' if k else ''}blob/{blob}"]
            got = net.blobs[blob].data
            assert got.shape == want.shape and np.array_equal(got, want), f"pass {k}, blob '{blob}'"


def test_successive_batches_wrap(tmp_path):
    """MemoryDataLayerTest.TestForward: batch i serves rows i*b..(i+1)*b, then from the start again."""
    net = _net(tmp_path, b=2)
    data = np.random.default_rng(0).normal(size=(6, 3, 2, 4)).astype(np.float32)
    labels = np.arange(6, dtype=np.float32)
    net.set_input_arrays(data, labels)
    for k in range(5):
        net.forward()
        rows = [(2 * k) % 6, (2 * k) % 6 + 1]
        np.testing.assert_array_equal(net.blobs["data"].data, data[rows])
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), labels[rows])
    assert net.blobs["label"].data.shape == (2, 1, 1, 1)


def test_net_reads_the_arrays(tmp_path):
    net = _net(tmp_path, b=2, rest='layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                                   'inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }')
    data = np.random.default_rng(1).normal(size=(2, 3, 2, 4)).astype(np.float32)
    net.set_input_arrays(data, np.zeros(2, np.float32))
    out = net.forward()["ip"]
    w, bias = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(out, data.reshape(2, -1).astype(np.float64) @ w.T + bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data, labels, needle", [
    (np.zeros((4, 3, 2, 4)), np.zeros(4, np.float32), "data array must be float32, found float64"),
    (np.zeros((4, 3, 2, 4), np.float32), np.zeros(4, np.int64), "labels array must be float32"),
    (np.zeros((4, 3, 2, 4), np.float32)[:, :, :, ::-1], np.zeros(4, np.float32), "data array must be C contiguous"),
    (np.zeros((4, 24), np.float32), np.zeros(4, np.float32), "data array must be 4-d"),
    (np.zeros((4, 2, 2, 4), np.float32), np.zeros(4, np.float32), "data array has 2 channels, the layer 3"),
    (np.zeros((4, 3, 5, 4), np.float32), np.zeros(4, np.float32), "data array has 5 height, the layer 2"),
    (np.zeros((4, 3, 2, 4), np.float32), np.zeros(6, np.float32), "same first dimension"),
    (np.zeros((3, 3, 2, 4), np.float32), np.zeros(3, np.float32), "must be a multiple of batch_size 2"),
    (np.zeros((4, 3, 2, 4), np.float32), np.zeros((4, 2), np.float32), "labels array must be 4-d"),
])
def test_set_input_arrays_checks(tmp_path, data, labels, needle):
    net = _net(tmp_path)
    with pytest.raises(NetspecError) as e:
        net.set_input_arrays(data, labels)
    assert needle in str(e.value) and "layer 'data'" in str(e.value) and "\n" not in str(e.value)


def test_forward_before_arrays_and_wrong_first_layer(tmp_path):
    net = _net(tmp_path)
    with pytest.raises(NetspecError, match=r"net.prototxt:2: layer 'data': MemoryData has no data"):
        net.forward()
    (tmp_path / "input.prototxt").write_text('name: "i"\nlayer { name: "in" type: "Input" top: "x" '
                                            'input_param { shape { dim: 1 } } }')
    other = netspec.Net(str(tmp_path / "input.prototxt"), netspec.TEST)
    with pytest.raises(NetspecError, match="first layer is a MemoryData layer \\(it is 'in', Input\\)"):
        other.set_input_arrays(np.zeros((1, 1, 1, 1), np.float32), np.zeros(1, np.float32))
