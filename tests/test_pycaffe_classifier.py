"""netspec.classifier.Classifier and netspec.detector.Detector as pycaffe's: their predictions equal a
forward driven by hand through Net (crops cut and preprocessed here with explicit indexing)."""
import cv2
import numpy as np
import pytest

import netspec as caffe
import netspec.io as cio
from netspec.classifier import Classifier
from netspec.detector import Detector
from netspec.errors import NetspecError

DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.02 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
MEAN = np.array([100.0, 120.0, 90.0])  # BGR, per channel


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cls")
    (d / "deploy.prototxt").write_text(DEPLOY)
    caffe.set_random_seed(3)
    caffe.Net(str(d / "deploy.prototxt"), caffe.TEST).save(str(d / "w.caffemodel"))
    return str(d / "deploy.prototxt"), str(d / "w.caffemodel")


def hand_forward(model, crops):
    """Each H×W×3 RGB crop in [0, 1] made BGR ×255 − mean by hand, fed to a plain Net two at a time."""
    net = caffe.Net(model[0], caffe.TEST, weights=model[1])
    out = []
    for i in range(0, len(crops), 2):
        pair = crops[i:i + 2]
        for k, c in enumerate(pair):
            net.blobs["data"].data[k] = c.transpose(2, 0, 1)[::-1] * 255.0 - MEAN[:, None, None]
        net.forward()
        out += [net.blobs["prob"].data[k].copy() for k in range(len(pair))]
    return np.array(out)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.random((15, 13, 3)).astype(np.float32) for _ in range(3)]


def test_predict_center_crop_equals_hand_forward(model, images):
    clf = Classifier(*model, image_dims=(12, 10), mean=MEAN, raw_scale=255.0, channel_swap=(2, 1, 0))
    got = clf.predict(images, oversample=False)
    resized = [cio.resize_image(im, (12, 10)) for im in images]
    crops = [im[2:10, 1:9] for im in resized]  # centre (6, 5) ± 4
    ref = hand_forward(model, crops)
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_predict_oversample_averages_ten_crops(model, images):
    clf = Classifier(*model, image_dims=(12, 10), mean=MEAN, raw_scale=255.0, channel_swap=(2, 1, 0))
    got = clf.predict(images)
    boxes = [(0, 0), (0, 2), (4, 0), (4, 2), (2, 1)]
    crops = []
    for im in images:
        r = cio.resize_image(im, (12, 10))
        plain = [r[y:y + 8, x:x + 8] for y, x in boxes]
        crops += plain + [c[:, ::-1] for c in plain]
    ref = hand_forward(model, crops).reshape(3, 10, 5).mean(1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    # and it differs from the centre-only prediction, so the crops mattered
    assert np.abs(got - clf.predict(images, oversample=False)).max() > 1e-6


def test_detect_windows_equals_hand_crops(model, tmp_path):
    rng = np.random.default_rng(1)
    bgr = cv2.GaussianBlur((rng.random((30, 40, 3)) * 255).astype(np.uint8), (3, 3), 1)
    cv2.imwrite(str(tmp_path / "im.png"), bgr)
    det = Detector(*model, mean=MEAN, raw_scale=255.0, channel_swap=(2, 1, 0))
    windows = [np.array([0, 0, 10, 12]), np.array([5, 7, 29, 39]), np.array([12, 3, 20, 11])]
    got = det.detect_windows([(str(tmp_path / "im.png"), windows)])
    rgb = bgr[:, :, ::-1] / np.float32(255.0)
    crops = [cio.resize_image(rgb[w[0]:w[2], w[1]:w[3]], (8, 8)) for w in windows]
    ref = hand_forward(model, crops)
    assert [d["filename"] for d in got] == [str(tmp_path / "im.png")] * 3
    assert all(d["window"] is w for d, w in zip(got, windows))
    np.testing.assert_allclose(np.array([d["prediction"] for d in got]), ref, rtol=1e-5, atol=1e-7)


def test_context_pad_fills_outside_the_image_with_the_mean(model):
    det = Detector(*model, mean=MEAN, raw_scale=255.0, channel_swap=(2, 1, 0), context_pad=2)
    np.testing.assert_allclose(det.crop_mean.reshape(-1), MEAN[::-1] / 255.0)  # RGB, in [0, 1]
    im = np.random.default_rng(2).random((20, 20, 3)).astype(np.float32)
    crop = det.crop(im, np.array([0, 0, 7, 7]))
    # the box grows by 8/(8-4) around its centre (4, 4): it starts at row/col -4, i.e. 2 input pixels out
    assert crop.shape == (8, 8, 3)
    np.testing.assert_allclose(crop[:2].reshape(-1, 3), np.tile(MEAN[::-1] / 255.0, (16, 1)), rtol=1e-6)
    np.testing.assert_allclose(crop[:, :2].reshape(-1, 3), np.tile(MEAN[::-1] / 255.0, (16, 1)), rtol=1e-6)
    # the rest: the box clipped to the image, rows/cols 0..11, warped to round(13 · 8/17) = 6 pixels
    np.testing.assert_allclose(crop[2:, 2:], cio.resize_image(im[0:12, 0:12], (6, 6)), rtol=1e-6)


def test_selective_search_without_its_package_is_one_line(model):
    det = Detector(*model)
    with pytest.raises(NetspecError, match="needs the selective_search_ijcv_with_python package"):
        det.detect_selective_search(["a.jpg"])
