"""Caffe's DataTransformer (src/caffe/data_transformer.cpp) for Datum records and CHW arrays.

For each image, in Caffe's order: mirror = `mirror && Rand(2)` (in every phase, as Caffe), then the crop
offset: random `Rand(H - crop + 1)` in TRAIN, centred `(H - crop) / 2` in TEST. Output pixel =
(pixel - mean) * scale in float32, where a mean file is indexed at the source pixel's own position
(subtracted before cropping) and mean_value is per channel (one value repeats over all channels).
Encoded records are decoded with OpenCV, keeping their channels unless force_color/force_gray.

netspec extension, TRAIN only: `color_aug_param` adds the paper's PCA colour shift (Krizhevsky et al.
2012, section 4.1) sum_i alpha_i lambda_i p_i, alpha_i ~ N(0, std) drawn once per image, to every pixel
before the mean is subtracted. p_i are given in R,G,B order and applied to Caffe's B,G,R channels.

The transform also comes in two halves, for feeding a GPU 1 byte per pixel instead of 4: on the host
`crop_uint8` draws the same random choices and only crops and mirrors the uint8 pixels, and
`Normaliser` does the float32 arithmetic for a whole batch in torch, on the batch's device, with the
same operations in the same order (bit-identical results).
"""
from __future__ import annotations

import logging

import numpy as np
import torch

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
    def draw(self, image_shape, out_shape, rng: np.random.Generator):
        """One image's random choices, drawn in Caffe's order: (mirror, h_off, w_off, colour shift
        as 3 float32 or None). Both the float path and the uint8 path draw through here, so a batch's
        crops and mirrors are the same in both."""
        _, h, w = image_shape
        _, oh, ow = out_shape
        do_mirror = bool(self.param.mirror and rng.integers(2))
        h_off = w_off = 0
        if self.crop:
            if self.phase == pb.TRAIN:
                h_off, w_off = int(rng.integers(h - oh + 1)), int(rng.integers(w - ow + 1))
            else:
                h_off, w_off = (h - oh) // 2, (w - ow) // 2
        shift = None
        if self.eig is not None:
            shift = (self.eig[0] @ rng.normal(0.0, self.eig[1], 3)).astype(np.float32)
        return do_mirror, h_off, w_off, shift

    def same_size(self, first, shape, key) -> None:
        """Refuse a record whose output shape is not the batch's first record's."""
        if tuple(first) != tuple(shape):
            raise self._error(f"record '{key}' gives {_dims(shape)}, the batch's first record "
                              f"{_dims(first)}; records of one batch must have one size")

    def _out(self, out, shape, dtype, key):
        """`out` (checked against the record's output shape), or a fresh array."""
        if out is None:
            return np.empty(shape, dtype)
        self.same_size(out.shape, shape, key)
        return out

    def __call__(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None,
                 key: str | None = None) -> np.ndarray:
        """Transform one CHW image (uint8 or float32) into `out` (float32, allocated if None)."""
        c = image.shape[0]
        shape = self.output_shape(image.shape, key)
        do_mirror, h_off, w_off, shift = self.draw(image.shape, shape, rng)
        out = self._out(out, shape, np.float32, key)
        _, oh, ow = shape
        view = out[..., ::-1] if do_mirror else out
        src = image[:, h_off:h_off + oh, w_off:w_off + ow]
        if shift is not None:
            view[...] = src
            view += shift[:, None, None]
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

    def crop_uint8(self, image: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None,
                   key: str | None = None) -> tuple[int, int, int, np.ndarray | None]:
        """The uint8 half of the transform: crop and mirror one uint8 CHW image into `out` (uint8)
        with the same draws as __call__; returns (h_off, w_off, mirror, shift) for `Normaliser`."""
        if image.dtype != np.uint8:
            raise self._error(f"record '{key}' holds {image.dtype} pixels, but this source is read as "
                              "uint8 (its first record is); set NETSPEC_DATA_UINT8=0")
        shape = self.output_shape(image.shape, key)
        do_mirror, h_off, w_off, shift = self.draw(image.shape, shape, rng)
        out = self._out(out, shape, np.uint8, key)
        _, oh, ow = shape
        (out[..., ::-1] if do_mirror else out)[...] = image[:, h_off:h_off + oh, w_off:w_off + ow]
        return h_off, w_off, int(do_mirror), shift

    def into_batch(self, i: int, image: np.ndarray, rng: np.random.Generator, out: np.ndarray,
                   params: np.ndarray | None = None, shift: np.ndarray | None = None,
                   key: str | None = None) -> None:
        """Image `i` of a batch: transformed into float32 `out[i]`, or for a uint8 `out` cropped and
        mirrored into `out[i]` with its (h_off, w_off, mirror) in params[i] and its colour shift in
        shift[i] (left as it is without color_aug_param)."""
        if out.dtype != np.uint8:
            self(image, rng, out=out[i], key=key)
            return
        h_off, w_off, mirror, colour = self.crop_uint8(image, rng, out=out[i], key=key)
        params[i] = (h_off, w_off, mirror)
        if colour is not None:
            shift[i] = colour

    def transform_datum(self, datum: pb.Datum, rng: np.random.Generator, out=None, key=None) -> np.ndarray:
        return self(self.array(datum, key), rng, out, key)


class Normaliser:
    """The float half of the transform for a batch of uint8 crops (DataTransformer.crop_uint8), in
    torch on whatever device the batch is: float32(pixel) [+ colour shift] - mean [* scale], the
    host path's float32 operations in its order, so the result is bit-identical to __call__'s.

    A mean file is indexed at each output pixel's source position, as on the host: row h_off + y
    and column w_off + x, or w_off + ow-1-x for a mirrored image (its pixels arrive mirrored). The
    mean crops of a whole batch are gathered in one indexing operation."""

    def __init__(self, transformer: DataTransformer):
        self.t = transformer
        self._means: dict[torch.device, torch.Tensor] = {}   # the mean (file or values) per device

    def _mean(self, device: torch.device, channels: int) -> torch.Tensor:
        if device not in self._means:
            t = self.t
            if t.mean is not None:
                mean = torch.from_numpy(np.ascontiguousarray(t.mean, np.float32))
            else:
                mv = t.mean_values if len(t.mean_values) == channels else np.repeat(t.mean_values, channels)
                mean = torch.from_numpy(mv.astype(np.float32))[None, :, None, None]
            self._means[device] = mean.to(device)
        return self._means[device]

    def _mean_crops(self, mean: torch.Tensor, offsets: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
        """(N, C, oh, ow): each image's window of the mean file, mirrored as its pixels are."""
        rows, cols = crop_window(offsets, oh, ow)
        return mean[:, rows[:, :, None], cols[:, None, :]].transpose(0, 1)

    def __call__(self, data: torch.Tensor, offsets: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """data: uint8 (N, C, oh, ow); offsets: int (N, 3) of (h_off, w_off, mirror); shift: float32
        (N, 3), used only with color_aug_param. Returns the float32 batch."""
        t = self.t
        x = data.to(torch.float32)
        if t.eig is not None:
            x += shift[:, :, None, None]
        if t.mean is not None:
            x -= self._mean_crops(self._mean(x.device, x.shape[1]), offsets, x.shape[2], x.shape[3])
        elif len(t.mean_values):
            x -= self._mean(x.device, x.shape[1])
        if t.scale != 1:
            x *= float(t.scale)
        return x


def crop_window(offsets: torch.Tensor, oh: int, ow: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source rows (N, oh) and columns (N, ow) of each image's crop, int64, from its (h_off,
    w_off, mirror): row h_off + y, column w_off + x, or w_off + ow-1-x for a mirrored image."""
    off = offsets.to(torch.int64)
    rows = off[:, 0:1] + torch.arange(oh, device=off.device)
    across = torch.arange(ow, device=off.device)
    return rows, off[:, 1:2] + torch.where(off[:, 2:3] != 0, ow - 1 - across, across)
