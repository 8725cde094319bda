"""ImageData: real Caffe's imagedata_color_resize fixture (both passes), the facts of Caffe's
test_image_data_layer.cpp (read, resize, reshape, shuffle, spaces in names) on generated images,
grayscale, the transform against a numpy reference, bad list lines and images (one line naming the
list file and line), and a fine-tuning net trained from `netspec train`, snapshotted and resumed."""
import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.caffemodel import read_weights

LAYERS2 = Path(__file__).parent / "data" / "caffe" / "layers2"


def _image(folder: Path, name: str, h: int, w: int, seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / name), img)
    return img


def _net(folder: Path, params: str, transform: str = "", phase=netspec.TEST, rest: str = "") -> netspec.Net:
    (folder / "net.prototxt").write_text(
        'name: "i"\nlayer { name: "data" type: "ImageData" top: "data" top: "label"\n'
        f'  {transform} image_data_param {{ source: "list.txt" {params} }} }}\n{rest}')
    return netspec.Net(str(folder / "net.prototxt"), phase)


def test_matches_caffe_fixture_both_passes():
    ref = np.load(LAYERS2 / "imagedata_color_resize.npz")
    with contextlib.chdir(LAYERS2):   # list and root_folder are relative to it, as when Caffe ran
        net = netspec.Net("imagedata_color_resize.prototxt", netspec.TEST)
        for k in range(2):
            net.forward()
            for blob in ("data", "label"):
                want = ref[f"{'iter1/' if k else ''}blob/{blob}"]
                got = net.blobs[blob].data
                assert got.shape == want.shape and np.array_equal(got, want), f"pass {k}, blob '{blob}'"


def test_caffe_testread_facts(tmp_path):
    """ImageDataLayerTest.TestRead: five copies of one image labelled 0..4, batch 5, read twice."""
    img = _image(tmp_path, "cat.png", 9, 12, 0)
    (tmp_path / "list.txt").write_text("".join(f"{tmp_path}/cat.png {i}\n" for i in range(5)))
    net = _net(tmp_path, "batch_size: 5")
    assert net.blobs["data"].data.shape == (5, 3, 9, 12) and net.blobs["label"].data.shape == (5,)
    for _ in range(2):
        net.forward()
        np.testing.assert_array_equal(net.blobs["label"].data, np.arange(5))
        for j in range(5):   # BGR channel order, as OpenCV stores it
            np.testing.assert_array_equal(net.blobs["data"].data[j], img.transpose(2, 0, 1))


def test_caffe_testresize_facts_inter_linear(tmp_path):
    """TestResize (new_height/new_width) on a 2x2 image, whose INTER_LINEAR upsampling is known:
    source x = (x + 0.5) / 2 - 0.5, clamped at the border, so a row 0, 100 becomes 0, 25, 75, 100."""
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 1] = 100
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "list.txt").write_text("a.png 3\n")
    net = _net(tmp_path, f'batch_size: 1 new_height: 4 new_width: 4 root_folder: "{tmp_path}/"')
    net.forward()
    assert net.blobs["data"].data.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(net.blobs["data"].data[0, :, 2], np.tile([0, 25, 75, 100], (3, 1)))
    assert net.blobs["label"].data[0] == 3


def test_caffe_testreshape_facts(tmp_path):
    """TestReshape: batch 1 over images of different sizes gives each one's own shape."""
    _image(tmp_path, "a.png", 6, 8, 1)
    _image(tmp_path, "b.png", 5, 9, 2)
    (tmp_path / "list.txt").write_text("a.png 0\nb.png 1\n")
    net = _net(tmp_path, f'batch_size: 1 root_folder: "{tmp_path}/"')
    shapes = []
    for _ in range(2):
        net.forward()
        shapes.append(net.blobs["data"].data.shape)
    assert shapes == [(1, 3, 6, 8), (1, 3, 5, 9)]


def test_caffe_testshuffle_facts(tmp_path):
    """TestShuffle: every epoch holds each label once; the order is not always the list's."""
    for i in range(5):
        _image(tmp_path, f"{i}.png", 4, 4, i)
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {i}\n" for i in range(5)))
    net = _net(tmp_path, f'batch_size: 5 shuffle: true root_folder: "{tmp_path}/"')
    orders = []
    for _ in range(4):
        net.forward()
        labels = net.blobs["label"].data.astype(int).tolist()
        assert sorted(labels) == list(range(5))
        for j, label in enumerate(labels):   # each image comes with its own label
            np.testing.assert_array_equal(net.blobs["data"].data[j],
                                          cv2.imread(str(tmp_path / f"{label}.png")).transpose(2, 0, 1))
        orders.append(labels)
    assert any(o != list(range(5)) for o in orders)


def test_caffe_testspace_facts(tmp_path):
    """TestSpace: the label follows the last space, so names may hold spaces."""
    img = _image(tmp_path, "cat cat.png", 3, 4, 5)
    (tmp_path / "list.txt").write_text("cat cat.png 1\n")
    net = _net(tmp_path, f'batch_size: 1 root_folder: "{tmp_path}/"')
    net.forward()
    assert net.blobs["label"].data[0] == 1
    np.testing.assert_array_equal(net.blobs["data"].data[0], img.transpose(2, 0, 1))


def test_grayscale(tmp_path):
    img = np.zeros((3, 3, 3), np.uint8)
    img[...] = (10, 200, 50)   # B, G, R
    cv2.imwrite(str(tmp_path / "g.png"), img)
    (tmp_path / "list.txt").write_text("g.png 0\n")
    net = _net(tmp_path, f'batch_size: 1 is_color: false root_folder: "{tmp_path}/"')
    net.forward()
    assert net.blobs["data"].data.shape == (1, 1, 3, 3)
    gray = round(0.299 * 50 + 0.587 * 200 + 0.114 * 10)   # ITU-R 601 luma, as IMREAD_GRAYSCALE
    np.testing.assert_array_equal(net.blobs["data"].data, gray)


def test_transform_crop_mean_scale_against_numpy(tmp_path):
    img = _image(tmp_path, "a.png", 7, 9, 3)
    (tmp_path / "list.txt").write_text("a.png 0\n")
    net = _net(tmp_path, f'batch_size: 2 root_folder: "{tmp_path}/"',
               transform="transform_param { crop_size: 4 mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }")
    net.forward()
    chw = img.transpose(2, 0, 1).astype(np.float64)
    want = (chw[:, 1:5, 2:6] - np.array([10, 20, 30])[:, None, None]) * 0.5   # TEST: centred crop
    for j in range(2):
        np.testing.assert_allclose(net.blobs["data"].data[j], want, rtol=0, atol=1e-6)


def test_train_mirror_gives_the_image_or_its_mirror(tmp_path):
    netspec.set_random_seed(1)       # 8 coin flips: unseeded, all alike 1 time in 128
    img = _image(tmp_path, "a.png", 4, 5, 4)
    (tmp_path / "list.txt").write_text("a.png 0\n")
    net = _net(tmp_path, f'batch_size: 8 root_folder: "{tmp_path}/"', transform="transform_param { mirror: true }",
               phase=netspec.TRAIN)
    net.forward()
    chw = img.transpose(2, 0, 1)
    flipped = [bool(np.array_equal(d, chw[:, :, ::-1])) for d in net.blobs["data"].data]
    plain = [bool(np.array_equal(d, chw)) for d in net.blobs["data"].data]
    assert all(f or p for f, p in zip(flipped, plain)) and any(flipped) and any(plain)


@pytest.mark.parametrize("lines, params, needle", [
    ("a.png 0\na.png x\n", "", "list.txt:2: layer 'data': label 'x' is not an integer"),
    ("a.png 0\na.png\n", "", "list.txt:2: layer 'data': label 'a.png' is not an integer"),
    ("a.png 0\n\na.png 1\n", "", "list.txt:2: layer 'data': empty line"),
    ("a.png 0\nnope.png 1\n", "", "list.txt:2: layer 'data': cannot read image '{dir}/nope.png'"),
    ("nope.png 0\n", "", "list.txt:1: layer 'data': cannot read image '{dir}/nope.png'"),
    ("a.png 0\n", "new_height: 4", "new_height and new_width must be set together"),
    ("", "", "the image list is empty"),
])
def test_bad_input_is_one_line(tmp_path, lines, params, needle):
    _image(tmp_path, "a.png", 3, 3, 0)
    (tmp_path / "list.txt").write_text(lines)
    with pytest.raises(NetspecError) as e:
        net = _net(tmp_path, f'batch_size: 1 root_folder: "{tmp_path}/" {params}')
        net.forward()
        net.forward()
    assert "\n" not in str(e.value) and needle.format(dir=tmp_path) in str(e.value), str(e.value)


def test_missing_list_is_one_line(tmp_path):
    with pytest.raises(NetspecError, match=r"net.prototxt:2: layer 'data': image list 'list.txt' does not exist"):
        _net(tmp_path, "batch_size: 1")


# --- models/finetune_flickr_style-style fine-tuning from the CLI -------------------------------------

FINETUNE = """name: "FinetuneNet"
layer { name: "data" type: "ImageData" top: "data" top: "label"
  transform_param { crop_size: 6 mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.02 }
  image_data_param { source: "list.txt" batch_size: 4 new_height: 8 new_width: 8 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc_style" type: "InnerProduct" bottom: "conv1" top: "fc_style"
  param { lr_mult: 10 } param { lr_mult: 20 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc_style" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" display: 0 max_iter: 6 '
          'snapshot: 3 snapshot_prefix: "snap/ft" random_seed: 5 solver_mode: CPU')


def test_finetune_net_trains_from_weights_snapshots_and_resumes(tmp_path, monkeypatch, capsys):
    """Fine-tuning from HDF5 weights (-weights x.caffemodel.h5); random crops, so the resumed run equals
    the straight one only if the layer resumes at the batch it stood at."""
    monkeypatch.chdir(tmp_path)
    for i in range(4):
        _image(tmp_path, f"im{i}.png", 10, 11, 10 + i)
    Path("list.txt").write_text("".join(f"im{i}.png {i % 2}\n" for i in range(4)))   # one batch
    Path("net.prototxt").write_text(FINETUNE)
    Path("solver.prototxt").write_text(SOLVER)
    Path("snap").mkdir()
    base = netspec.Net("net.prototxt", netspec.TEST)
    base.params["conv1"][0].data[...] = np.random.default_rng(0).normal(0, 0.1, (4, 3, 3, 3))
    base.save_hdf5("base.caffemodel.h5")                           # the "pretrained" conv1
    assert main(["train", "-solver", "solver.prototxt", "-weights", "base.caffemodel.h5"]) == 0
    assert "copied 2 layers from base.caffemodel.h5" in capsys.readouterr().err
    first, straight = read_weights("snap/ft_iter_3.caffemodel"), read_weights("snap/ft_iter_6.caffemodel")
    assert not np.array_equal(first["fc_style"][1][0], straight["fc_style"][1][0])   # it trains
    for p in Path("snap").glob("ft_iter_6.*"):
        p.unlink()
    assert main(["train", "-solver", "solver.prototxt", "-snapshot", "snap/ft_iter_3.solverstate"]) == 0
    resumed = read_weights("snap/ft_iter_6.caffemodel")
    for layer in ("conv1", "fc_style"):
        for a, b in zip(resumed[layer][1], straight[layer][1]):
            np.testing.assert_array_equal(a, b)
