"""DataTransformer against a literal transcription of Caffe's index arithmetic, and colour augmentation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from netspec.data.datum import mat_to_datum
from netspec.data.mean import save_mean
from netspec.data.transform import DataTransformer
from netspec.errors import NetspecError
from netspec.proto import pb


def caffe_reference(data, mean, mean_values, scale, crop, h_off, w_off, mirror):
    """Caffe's Transform(Datum) loop: data_index over the source, top_index over the (mirrored) output."""
    c, dh, dw = data.shape
    h = w = crop or dh
    w = crop or dw
    flat, out = data.ravel(), np.zeros(c * h * w, np.float32)
    mflat = None if mean is None else mean.ravel()
    for ch in range(c):
        for y in range(h):
            for x in range(w):
                di = (ch * dh + h_off + y) * dw + w_off + x
                ti = (ch * h + y) * w + (w - 1 - x if mirror else x)
                v = np.float32(flat[di])
                if mflat is not None:
                    out[ti] = (v - mflat[di]) * np.float32(scale)
                elif mean_values is not None:
                    out[ti] = (v - np.float32(mean_values[ch])) * np.float32(scale)
                else:
                    out[ti] = v * np.float32(scale)
    return out.reshape(c, h, w)


class FixedRng:
    """Stands in for the generator: replays Caffe's draws (mirror bit, then h_off, w_off)."""

    def __init__(self, *values):
        self.values = list(values)

    def integers(self, n):
        v = self.values.pop(0)
        assert 0 <= v < n
        return v


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (3, 9, 11), dtype=np.uint8)


@pytest.mark.parametrize("mirror", [0, 1])
def test_train_crop_mirror_mean_file_scale_match_caffe(tmp_path, image, mirror):
    mean = np.random.default_rng(1).uniform(0, 255, (1, 3, 9, 11)).astype(np.float32)
    save_mean(mean, tmp_path / "mean.binaryproto")
    tp = pb.TransformationParameter(crop_size=5, mirror=True, scale=0.25,
                                    mean_file=str(tmp_path / "mean.binaryproto"))
    t = DataTransformer(tp, pb.TRAIN)
    got = t(image, FixedRng(mirror, 3, 6))
    ref = caffe_reference(image, mean[0], None, 0.25, 5, 3, 6, mirror)
    assert np.array_equal(got, ref), f"data: worst error {np.abs(got - ref).max()}"


def test_test_phase_centre_crop_and_mean_values(image):
    tp = pb.TransformationParameter(crop_size=4, mean_value=[10, 20, 30])
    got = DataTransformer(tp, pb.TEST)(image, FixedRng())
    ref = caffe_reference(image, None, [10, 20, 30], 1.0, 4, (9 - 4) // 2, (11 - 4) // 2, 0)
    assert np.array_equal(got, ref)


def test_single_mean_value_repeats_and_no_crop(image):
    got = DataTransformer(pb.TransformationParameter(mean_value=[7], scale=2), pb.TEST)(image, FixedRng())
    assert np.array_equal(got, caffe_reference(image, None, [7, 7, 7], 2.0, 0, 0, 0, 0))


def test_mirror_is_random_in_test_too_as_caffe(image):
    t = DataTransformer(pb.TransformationParameter(mirror=True), pb.TEST)
    rng = np.random.default_rng(3)
    flips = [np.array_equal(t(image, rng), image[..., ::-1].astype(np.float32)) for _ in range(40)]
    assert 5 < sum(flips) < 35


def test_encoded_datum_force_gray_and_color():
    img = np.random.default_rng(2).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    datum = pb.Datum(data=cv2.imencode(".png", img)[1].tobytes(), label=3, encoded=True)
    color = DataTransformer(pb.TransformationParameter(), pb.TEST)
    assert np.array_equal(color.transform_datum(datum, FixedRng()), img.transpose(2, 0, 1).astype(np.float32))
    gray = DataTransformer(pb.TransformationParameter(force_gray=True), pb.TEST)
    # Caffe decodes with IMREAD_GRAYSCALE (the codec's own conversion, not cvtColor)
    want = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_GRAYSCALE)[None].astype(np.float32)
    assert want.shape == (1, 6, 7)
    assert np.array_equal(gray.transform_datum(datum, FixedRng()), want)
    raw = color.transform_datum(mat_to_datum(img), FixedRng())
    assert np.array_equal(raw, img.transpose(2, 0, 1).astype(np.float32))


def color_aug_param(std=0.1):
    # eigenvector 0 = pure red, 1 = pure green, 2 = pure blue (R, G, B order); eigenvalues 10, 20, 40
    return pb.ColorAugmentationParameter(eigenvalue=[10, 20, 40], eigenvector=[1, 0, 0, 0, 1, 0, 0, 0, 1],
                                         std=std)


def test_color_aug_adds_alpha_lambda_p_to_bgr_channels(image):
    tp = pb.TransformationParameter(mean_value=[1, 2, 3])
    tp.color_aug_param.CopyFrom(color_aug_param(0.5))
    rng = np.random.default_rng(9)
    got = DataTransformer(tp, pb.TRAIN)(image, rng)
    alpha = np.random.default_rng(9).normal(0, 0.5, 3)
    shift_rgb = alpha * [10, 20, 40]
    mean = np.float32([1, 2, 3])[:, None, None]
    want = image.astype(np.float32) + shift_rgb[::-1, None, None].astype(np.float32) - mean
    assert np.allclose(got, want, atol=1e-4), f"worst error {np.abs(got - want).max()}"
    # one alpha per image: every pixel of a channel moves by the same amount
    d = got - (image.astype(np.float32) - np.float32([1, 2, 3])[:, None, None])
    assert np.ptp(d, axis=(1, 2)).max() < 1e-3 and abs(d[2, 0, 0] - 10 * alpha[0]) < 1e-3  # red is channel 2


def test_color_aug_is_train_only_and_checks_its_numbers(image):
    tp = pb.TransformationParameter()
    tp.color_aug_param.CopyFrom(color_aug_param())
    assert np.array_equal(DataTransformer(tp, pb.TEST)(image, FixedRng()), image.astype(np.float32))
    tp.color_aug_param.eigenvalue.pop()
    with pytest.raises(NetspecError, match="3 eigenvalue and 9 eigenvector"):
        DataTransformer(tp, pb.TRAIN)


def test_errors(tmp_path, image):
    with pytest.raises(NetspecError, match="crop_size 12 is larger than the image 3x9x11 of record 'k'"):
        DataTransformer(pb.TransformationParameter(crop_size=12), pb.TEST)(image, FixedRng(), key="k")
    with pytest.raises(NetspecError, match="mean_file and mean_value"):
        DataTransformer(pb.TransformationParameter(mean_file="m", mean_value=[1]), pb.TEST)
    with pytest.raises(NetspecError, match="mean_value has 2 values"):
        DataTransformer(pb.TransformationParameter(mean_value=[1, 2]), pb.TEST)(image, FixedRng())
    save_mean(np.zeros((1, 3, 4, 4), np.float32), tmp_path / "m.binaryproto")
    with pytest.raises(NetspecError, match="mean_file is 3x4x4 but record 'k' is 3x9x11"):
        DataTransformer(pb.TransformationParameter(mean_file=str(tmp_path / "m.binaryproto")), pb.TEST)(
            image, FixedRng(), key="k")
