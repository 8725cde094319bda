"""Caffe's DataTransformer (src/caffe/data_transformer.cpp) for Datum records and CHW arrays.

For each image, in Caffe's order: mirror = `mirror && Rand(2)` (in every phase, as Caffe), then the crop
offset: random `Rand(H - crop + 1)` in TRAIN, centred `(H - crop) / 2` in TEST. Output pixel =
(pixel - mean) * scale in float32, where a mean file is indexed at the source pixel's own position
(subtracted before cropping) and mean_value is per channel (one value repeats over all channels).
Encoded records are decoded with OpenCV, keeping their channels unless force_color/force_gray.

netspec extension, TRAIN only: `color_aug_param` adds the paper's PCA colour shift (Krizhevsky et al.
2012, section 4.1) sum_i alpha_i lambda_i p_i, alpha_i ~ N(0, std) drawn once per image, to every pixel
before the mean is subtracted. p_i are given in R,G,B order and applied to Caffe's B,G,R channels.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .datum import to_array
from .mean import load_mean

log = logging.getLogger("netspec.data.transform")


def _dims(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


class DataTransformer:
    """Turns Datum records (or CHW arrays) into float32 CHW network input, as Caffe's DataTransformer."""

    def __init__(self, param: pb.TransformationParameter, phase: int, mean_path=None,
                 name: str | None = None):
        self.param, self.phase, self.name = param, phase, name
        self.scale = np.float32(param.scale)
        self.crop = int(param.crop_size)
        if param.mean_file and len(param.mean_value):
            raise self._error("cannot specify mean_file and mean_value at the same time")
        if param.force_color and param.force_gray:
            raise self._error("force_color and force_gray cannot both be set")
        self.mean = load_mean(mean_path or param.mean_file) if param.mean_file else None
        self.mean_values = np.asarray(param.mean_value, np.float32)
        self.eig = self._color_aug(param) if phase == pb.TRAIN and param.HasField("color_aug_param") else None
        self._warned_force = False

    def _error(self, message: str) -> NetspecError:
        return NetspecError(message, layer=self.name)

    def _color_aug(self, param) -> tuple[np.ndarray, float]:
        """(3x3 matrix whose columns are lambda_i * p_i in B,G,R rows, std)."""
        ca = param.color_aug_param
        if len(ca.eigenvalue) != 3 or len(ca.eigenvector) != 9:
            raise self._error(f"color_aug_param needs 3 eigenvalue and 9 eigenvector values, found "
                              f"{len(ca.eigenvalue)} and {len(ca.eigenvector)}")
        vectors = np.asarray(ca.eigenvector, np.float64).reshape(3, 3).T  # column i = p_i (R,G,B)
        scaled = vectors * np.asarray(ca.eigenvalue, np.float64)[None, :]
        return scaled[::-1].copy(), float(ca.std)  # rows R,G,B -> B,G,R as the channels are stored

    # ---- shapes -----------------------------------------------------------------------------------
    def array(self, datum: pb.Datum, key: str | None = None) -> np.ndarray:
        """The record's pixels as CHW (decoded if encoded, with force_color/force_gray)."""
        p = self.param
        if not datum.encoded and (p.force_color or p.force_gray) and not self._warned_force:
            log.warning("force_color and force_gray only apply to encoded records")
            self._warned_force = True
        return to_array(datum, p.force_color, p.force_gray, key)

    def output_shape(self, image_shape, key: str | None = None) -> tuple[int, int, int]:
        """InferBlobShape: (C, crop, crop) or the image's own (C, H, W); checks crop and mean fit."""
        c, h, w = image_shape
        if self.crop and (self.crop > h or self.crop > w):
            raise self._error(f"crop_size {self.crop} is larger than the image {_dims(image_shape)}"
                              + (f" of record '{key}'" if key else ""))
        if self.mean is not None and self.mean.shape != tuple(image_shape):
            raise self._error(f"mean_file is {_dims(self.mean.shape)} but record '{key}' is "
                              f"{_dims(image_shape)}")
        if len(self.mean_values) not in (0, 1, c):
            raise self._error(f"mean_value has {len(self.mean_values)} values for {c}-channel images: give "
                              f"1 or {c}")
        if self.eig is not None and c != 3:
            raise self._error(f"color_aug_param needs 3-channel images, record '{key}' has {c}")
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    # ---- the transform ----------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None,
                 key: str | None = None) -> np.ndarray:
        """Transform one CHW image (uint8 or float32) into `out` (float32, allocated if None)."""
        c, h, w = image.shape
        oc, oh, ow = self.output_shape(image.shape, key)
        do_mirror = bool(self.param.mirror and rng.integers(2))
        h_off = w_off = 0
        if self.crop:
            if self.phase == pb.TRAIN:
                h_off, w_off = int(rng.integers(h - oh + 1)), int(rng.integers(w - ow + 1))
            else:
                h_off, w_off = (h - oh) // 2, (w - ow) // 2
        if out is None:
            out = np.empty((oc, oh, ow), np.float32)
        elif out.shape != (oc, oh, ow):
            raise self._error(f"record '{key}' gives {_dims((oc, oh, ow))}, the batch's first record "
                              f"{_dims(out.shape)}; records of one batch must have one size")
        view = out[..., ::-1] if do_mirror else out
        src = image[:, h_off:h_off + oh, w_off:w_off + ow]
        if self.eig is not None:
            alpha = rng.normal(0.0, self.eig[1], 3)
            view[...] = src
            view += (self.eig[0] @ alpha).astype(np.float32)[:, None, None]
            src = view
        if self.mean is not None:
            np.subtract(src, self.mean[:, h_off:h_off + oh, w_off:w_off + ow], out=view, dtype=np.float32)
        elif len(self.mean_values):
            mv = self.mean_values if len(self.mean_values) == c else np.repeat(self.mean_values, c)
            np.subtract(src, mv[:, None, None], out=view, dtype=np.float32)
        elif src is not view:
            view[...] = src
        if self.scale != 1:
            out *= self.scale
        return out

    def transform_datum(self, datum: pb.Datum, rng: np.random.Generator, out=None, key=None) -> np.ndarray:
        return self(self.array(datum, key), rng, out, key)
