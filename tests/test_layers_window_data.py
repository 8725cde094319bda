"""WindowData: the foreground/background split of a batch, the warp of window_data_layer.cpp worked out
by hand for plain, context-padded, clipped and mirrored windows, the mean, and bad window files (one
line naming the window file and line). Caffe's test suite has no WindowData test and the fixtures no
WindowData net; the expected crops below follow the C++ arithmetic step by step."""
from pathlib import Path

import cv2
import numpy as np
import pytest

import netspec
from netspec.errors import NetspecError


def _setup(folder: Path, windows: str, params: str, transform: str, phase=netspec.TRAIN) -> netspec.Net:
    (folder / "windows.txt").write_text(windows)
    (folder / "net.prototxt").write_text(
        'name: "w"\nlayer { name: "data" type: "WindowData" top: "data" top: "label"\n'
        f'  transform_param {{ {transform} }}\n'
        f'  window_data_param {{ source: "windows.txt" root_folder: "{folder}/" {params} }} }}\n')
    return netspec.Net(str(folder / "net.prototxt"), phase)


def _image(folder: Path, name="a.png", h=40, w=40) -> np.ndarray:
    img = np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / name), img)
    return img


def _file(fg_box, bg_box, extra_line="") -> str:
    return ("# 0\na.png\n3 40 40\n" + str(3 if extra_line else 2) + "\n"
            f"4 0.9 {' '.join(map(str, fg_box))}\n0 0.1 {' '.join(map(str, bg_box))}\n" + extra_line)


def _chw(a) -> np.ndarray:
    return a.transpose(2, 0, 1).astype(np.float32)


def test_batch_is_background_then_foreground(tmp_path):
    """int(8 * 0.25) = 2 foreground windows, last; a window between the thresholds is never used."""
    _image(tmp_path)
    net = _setup(tmp_path, _file((10, 10, 19, 19), (0, 0, 9, 9), "7 0.4 1 1 5 5\n"),
                 "batch_size: 8 fg_fraction: 0.25 fg_threshold: 0.5 bg_threshold: 0.3", "crop_size: 10")
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 0, 0, 0, 0, 0, 4, 4])


def test_warp_without_context_is_the_window(tmp_path):
    """crop_size equal to the window's size: the warp is the identity, pixels times scale."""
    img = _image(tmp_path)
    net = _setup(tmp_path, _file((10, 12, 19, 21), (0, 0, 9, 9)), "batch_size: 4 fg_fraction: 0.5 scale: 0.5",
                 "crop_size: 10")
    net.forward()
    data = net.blobs["data"].data
    np.testing.assert_array_equal(data[2], _chw(img[12:22, 10:20]) * 0.5)
    np.testing.assert_array_equal(data[0], _chw(img[0:10, 0:10]) * 0.5)


def test_context_pad_grows_the_box(tmp_path):
    """crop 12, context_pad 1, box 10..19: context_scale 1.2, centre 15, half 5 -> 9..21 (13 pixels)
    warped to 12x12 with no padding."""
    img = _image(tmp_path)
    net = _setup(tmp_path, _file((10, 10, 19, 19), (10, 10, 19, 19)), "batch_size: 2 fg_fraction: 0.5 context_pad: 1",
                 "crop_size: 12")
    net.forward()
    want = cv2.resize(img[9:22, 9:22], (12, 12), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(net.blobs["data"].data[1], _chw(want))


def test_clipped_context_becomes_zero_padding_and_mirrors(tmp_path):
    """Box 0..9 at the corner: grown to -1..11, clipped to 0..11 (pad 1 before), scale 12/13: the 12
    pixels warp to round(12 * 12/13) = 11 and the padding to round(12/13) = 1 row and column of zeros.
    Mirrored, the padding moves to the other side (pad_x2 = 0)."""
    img = _image(tmp_path)
    net = _setup(tmp_path, _file((0, 0, 9, 9), (0, 0, 9, 9)), "batch_size: 16 fg_fraction: 0.5 context_pad: 1",
                 "crop_size: 12 mirror: true")
    net.forward()
    warped = _chw(cv2.resize(img[0:12, 0:12], (11, 11), interpolation=cv2.INTER_LINEAR))
    plain = np.zeros((3, 12, 12), np.float32)
    plain[:, 1:, 1:] = warped
    mirrored = np.zeros((3, 12, 12), np.float32)
    mirrored[:, 1:, :11] = warped[:, :, ::-1]
    seen = [("plain" if np.array_equal(d, plain) else "mirrored" if np.array_equal(d, mirrored) else "other")
            for d in net.blobs["data"].data]
    assert "other" not in seen and {"plain", "mirrored"} <= set(seen), seen


def test_square_mode_uses_the_longer_side(tmp_path):
    """Box 10..19 x 10..13 (10 wide, 4 high), square, no context: both half sides 5, centre (15, 12)
    -> columns 10..20, rows 7..17, an 11x11 region warped to round(11 * 10/11) = 10."""
    img = _image(tmp_path)
    net = _setup(tmp_path, _file((10, 10, 19, 13), (10, 10, 19, 13)),
                 'batch_size: 2 fg_fraction: 0.5 crop_mode: "square"', "crop_size: 10")
    net.forward()
    want = cv2.resize(img[7:18, 10:21], (10, 10), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(net.blobs["data"].data[0], _chw(want))


def test_mean_value_and_legacy_crop_size(tmp_path):
    img = _image(tmp_path)
    net = _setup(tmp_path, _file((10, 12, 19, 21), (0, 0, 9, 9)),
                 "batch_size: 2 fg_fraction: 0.5 crop_size: 10", "mean_value: 1 mean_value: 2 mean_value: 3")
    net.forward()
    want = _chw(img[12:22, 10:20]) - np.array([1, 2, 3], np.float32)[:, None, None]
    np.testing.assert_array_equal(net.blobs["data"].data[1], want)


@pytest.mark.parametrize("windows, needle", [
    ("# 0\na.png\n3 40 40\n1\n0 0.9 1 1 5 5\n", ("windows.txt:5: layer 'data': foreground window (overlap 0.9) "
                                                "has label 0")),
    ("# 0\nnope.png\n3 40 40\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 5 5\n", ("windows.txt:2: layer 'data': cannot read "
                                                                   "image '{dir}/nope.png'")),
    ("# 0\na.png\n3 40 40\n1\n1 0.9 1 1 5 5\n", "1 foreground and 0 background windows"),
    ("# 1\na.png\n3 40 40\n0\n", "windows.txt:1: layer 'data': image index 1 out of sequence"),
    ("# 0\na.png\n3 40 40\n2\n1 0.9 1 1 5 5\n0 0.1 1 1 x 5\n", ("windows.txt:6: layer 'data': expected a window "
                                                               "corner, found 'x'")),
    ("# 0\na.png\n3 40 40\n2\n1 0.9 1 1 50 5\n0 0.1 1 1 5 5\n", "window (1, 1, 50, 5) does not fit image"),
])
def test_bad_window_files_are_one_line(tmp_path, windows, needle):
    _image(tmp_path)
    with pytest.raises(NetspecError) as e:
        net = _setup(tmp_path, windows, "batch_size: 4 fg_fraction: 0.5", "crop_size: 4")
        net.forward()
    assert "\n" not in str(e.value) and needle.format(dir=tmp_path) in str(e.value), str(e.value)
