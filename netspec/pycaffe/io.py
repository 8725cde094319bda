"""pycaffe's caffe.io (python/caffe/io.py): the Transformer that prepares images for a net, image
loading, resizing and 10-crop oversampling, and BlobProto/Datum <-> array conversion.

The numbers are pycaffe's: load_image gives float32 RGB in [0, 1] as skimage's imread + img_as_float
(decoded here with OpenCV; for grayscale, skimage's rgb2gray weights 0.2125/0.7154/0.0721 in float64);
resize_image interpolates as skimage.transform.resize(order=1, mode='constant') did in pycaffe's
day (no anti-aliasing; samples outside the image count as 0) for 1- and 3-channel images, and as
scipy.ndimage.zoom (corner-aligned) for other channel counts. Both are separable, so each is two
small interpolation matrices applied in float64.

Blob and Datum conversion go through netspec's own format code (netspec.formats.blobs,
netspec.data.datum). Where pycaffe raises ValueError, the error here is a one-line NetspecError that
is also a ValueError, so pycaffe code catching ValueError keeps working.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..data.datum import mat_to_datum, to_array
from ..errors import NetspecError
from ..formats.blobs import array_to_blob, blob_to_array, fmt_shape
from ..proto import pb


class ArrayError(NetspecError, ValueError):
    """pycaffe raises ValueError here; netspec's one-line error keeps that type too."""


# ---------------------------------------------------------------- proto / datum / ndarray conversion

def blobproto_to_array(blob, return_diff=False):
    """The blob's data (or diff) as a float64 array of its shape (legacy num/channels/height/width
    when set, else `shape`), as pycaffe returns it."""
    what = "diff" if return_diff else "data"
    try:
        arr = blob_to_array(blob, what)
    except NetspecError as e:
        raise ArrayError(f"blobproto_to_array: {e}") from None
    if arr is None:  # an absent diff: pycaffe's reshape of an empty list fails unless the shape is empty
        raise ArrayError("blobproto_to_array: the blob has no diff")
    return arr.astype(np.float64)


def array_to_blobproto(arr, diff=None):
    """A BlobProto with `shape` and float data (and diff) of the N-d array `arr`."""
    arr = np.asarray(arr)
    try:
        return array_to_blob(arr.astype(np.float32), None if diff is None else np.asarray(diff, np.float32))
    except ValueError as e:
        raise ArrayError(f"array_to_blobproto: {e}") from None


def arraylist_to_blobprotovector_str(arraylist):
    """The serialized BlobProtoVector of a list of arrays."""
    return pb.BlobProtoVector(blobs=[array_to_blobproto(a) for a in arraylist]).SerializeToString()


def blobprotovector_str_to_arraylist(str):
    """The arrays of a serialized BlobProtoVector."""
    vec = pb.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A Datum of the C×H×W array `arr`: uint8 pixels as `data`, anything else as `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ArrayError(f"array_to_datum: the array must be 3-D (C×H×W), its shape is {fmt_shape(arr.shape)}")
    if arr.dtype == np.uint8:
        datum = mat_to_datum(arr.transpose(1, 2, 0), label)
        datum.ClearField("encoded")  # pycaffe leaves it unset; keep its bytes
        return datum
    datum = pb.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2],
                     float_data=arr.astype(np.float32).ravel())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """A Datum's values as a C×H×W array: uint8 for byte data (an encoded Datum is decoded, as Caffe's
    data layer does), float64 for float_data (pycaffe's dtype). The label is `datum.label`."""
    try:
        arr = to_array(datum)
    except NetspecError as e:
        raise ArrayError(f"datum_to_array: {e}") from None
    return arr if arr.dtype == np.uint8 else arr.astype(np.float64)


# ---------------------------------------------------------------- pre-processing

class Transformer:
    """Prepares H×W×K images for a net's inputs: resize, transpose, channel swap, raw scale, mean,
    input scale (pycaffe's caffe.io.Transformer; `inputs` maps input names to blob shapes)."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in dict(inputs).items()}
        self.transpose, self.channel_swap, self.raw_scale = {}, {}, {}
        self.mean, self.input_scale = {}, {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise NetspecError(f"Transformer: '{in_}' is not one of the net inputs: {', '.join(self.inputs)}")

    def preprocess(self, in_, data):
        """One H'×W'×K image as the K×H×W array the net's input `in_` takes."""
        self._check_input(in_)
        x = np.array(data, dtype=np.float32)  # a copy: pycaffe could scale the caller's array in place
        in_dims = self.inputs[in_][2:]
        if x.shape[:2] != in_dims:
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[list(self.channel_swap[in_]), :, :]
        if self.raw_scale.get(in_) is not None:
            x *= self.raw_scale[in_]
        if self.mean.get(in_) is not None:
            x -= self.mean[in_]
        if self.input_scale.get(in_) is not None:
            x *= self.input_scale[in_]
        return x

    def deprocess(self, in_, data):
        """Undo preprocess (except the resize): a net blob back to an H×W×K image."""
        self._check_input(in_)
        x = np.array(data).squeeze()
        if self.input_scale.get(in_) is not None:
            x /= self.input_scale[in_]
        if self.mean.get(in_) is not None:
            x += self.mean[in_]
        if self.raw_scale.get(in_) is not None:
            x /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_, order):
        """The axis order taking an image to the blob's layout: (2, 0, 1) makes H×W×C into C×H×W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise NetspecError(f"set_transpose('{in_}'): the order {tuple(order)} has {len(order)} axes, "
                               f"the input {fmt_shape(self.inputs[in_])} has {len(self.inputs[in_]) - 1} "
                               "per item")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order after transpose: (2, 1, 0) takes RGB to Caffe's BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise NetspecError(f"set_channel_swap('{in_}'): the order {tuple(order)} has {len(order)} "
                               f"channels, the input {fmt_shape(self.inputs[in_])} has {self.inputs[in_][1]}")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply the raw image by `scale` (255 for CaffeNet-style models) before the mean."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """The mean to subtract: per channel (1-D, K values) or per element (K×H×W or H×W; another
        H×W is resized to the input's, as pycaffe does)."""
        self._check_input(in_)
        self.mean[in_] = _fit_mean(in_, np.asarray(mean), self.inputs[in_])

    def set_input_scale(self, in_, scale):
        """Multiply the preprocessed blob by `scale`, after the mean."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def _fit_mean(in_, mean, shape):
    """pycaffe's set_mean checks: channels must agree; an elementwise mean of another size is resized
    with its range normalised to [0, 1] and restored."""
    if mean.ndim == 1:
        if mean.shape[0] != shape[1]:
            raise ArrayError(f"set_mean('{in_}'): the mean has {mean.shape[0]} channels, the input "
                             f"{fmt_shape(shape)} has {shape[1]}")
        return mean[:, None, None]
    ms = (1,) + mean.shape if mean.ndim == 2 else mean.shape
    if len(ms) != 3:
        raise ArrayError(f"set_mean('{in_}'): the mean's shape {fmt_shape(mean.shape)} is neither K, H×W "
                         f"nor K×H×W for the input {fmt_shape(shape)}")
    if ms == tuple(shape[1:]):
        return mean
    if ms[0] != shape[1]:  # pycaffe would fail later, in preprocess's broadcast
        raise ArrayError(f"set_mean('{in_}'): the mean {fmt_shape(mean.shape)} has {ms[0]} channels, the "
                         f"input {fmt_shape(shape)} has {shape[1]}")
    lo, hi = mean.min(), mean.max()
    normal = (mean - lo) / (hi - lo)
    return resize_image(normal.transpose(1, 2, 0), shape[2:]).transpose(2, 0, 1) * (hi - lo) + lo


# ---------------------------------------------------------------- image IO

_GRAY = np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray weights (ITU-R 709 luma)


def load_image(filename, color=True):
    """An image file as float32 in [0, 1]: H×W×3 RGB (color=True; gray is repeated, alpha dropped)
    or H×W×1 intensity (color=False; colour images as skimage's rgb2gray)."""
    img = _read(filename)
    if img.ndim == 3:  # gray (+ alpha) keeps its intensity; OpenCV's BGR(A) becomes RGB, alpha dropped
        img = img[:, :, 0] if img.shape[2] <= 2 else img[:, :, 2::-1]
    scale = 1.0 / np.iinfo(img.dtype).max if img.dtype.kind in "ui" else 1.0  # float images stay as stored
    img = np.multiply(img, scale, dtype=np.float64)  # skimage's img_as_float
    if img.ndim == 3 and not color:
        img = img @ _GRAY
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _read(filename) -> np.ndarray:
    path = os.fspath(filename)
    if not os.path.isfile(path):
        raise NetspecError(f"load_image: '{path}' does not exist" if not os.path.exists(path)
                           else f"load_image: '{path}' is not a file")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # as stored: no EXIF rotation, no colour conversion
    if img is None:
        raise NetspecError(f"load_image: '{path}' cannot be decoded as an image")
    return img


def _linear_weights(n_in: int, n_out: int, corners: bool, order: int) -> np.ndarray:
    """The n_out×n_in matrix of 1-D linear (order 1) or nearest (order 0) interpolation.

    corners=False is skimage's grid: output i samples input (i + 0.5)·n_in/n_out − 0.5, taps outside
    the image weigh 0 (mode='constant', cval=0). corners=True is ndimage.zoom's: the end samples
    align, i samples i·(n_in − 1)/(n_out − 1)."""
    i = np.arange(n_out, dtype=np.float64)
    if corners:
        x = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        x = (i + 0.5) * (n_in / n_out) - 0.5
    w = np.zeros((n_out, n_in + 2))  # columns 0 and n_in + 1 stand for the zeros outside
    if order == 0:
        nearest = np.clip(np.floor(x + 0.5).astype(int), -1, n_in) + 1
        w[np.arange(n_out), nearest] = 1.0
    else:
        lo = np.floor(x)
        frac = x - lo
        lo = np.clip(lo.astype(int), -1, n_in) + 1
        w[np.arange(n_out), lo] += 1.0 - frac
        w[np.arange(n_out), np.minimum(lo + 1, n_in + 1)] += frac
    return w[:, 1:-1]


def _interpolate(im: np.ndarray, new_dims, corners: bool, order: int) -> np.ndarray:
    """im (H×W×K) resampled to new_dims, as float64, with separable weights."""
    wr = _linear_weights(im.shape[0], int(new_dims[0]), corners, order)
    wc = _linear_weights(im.shape[1], int(new_dims[1]), corners, order)
    return np.einsum("ih,hwk,jw->ijk", wr, im.astype(np.float64), wc, optimize=True)


def resize_image(im, new_dims, interp_order=1):
    """An H×W×K image resized to new_dims (height, width), float32, by linear (interp_order=1) or
    nearest (0) interpolation."""
    if interp_order not in (0, 1):
        raise NetspecError(f"resize_image: interp_order {interp_order} is not supported (0 nearest, 1 linear)")
    im = np.asarray(im)
    if im.ndim != 3:
        raise NetspecError(f"resize_image: expects an H×W×K image, found shape {fmt_shape(im.shape)}")
    new_dims = tuple(int(d) for d in new_dims)
    if im.shape[-1] not in (1, 3):
        # ndimage.zoom's output size is round(size · zoom), zoom = new / old
        dims = [round(s * (n / s)) for s, n in zip(im.shape[:2], new_dims)]
        return _interpolate(im, dims, True, interp_order).astype(np.float32)
    lo, hi = im.min(), im.max()
    if not hi > lo:  # a constant image: no range to normalise
        return np.full(new_dims + im.shape[-1:], lo, dtype=np.float32)
    std = (im - lo) / (hi - lo)  # skimage wanted [0, 1]; pycaffe normalises in the image's dtype
    out = np.clip(_interpolate(std, new_dims, False, interp_order), 0.0, 1.0)  # skimage clips to the input range
    return (out * (hi - lo) + lo).astype(np.float32)


def oversample(images, crop_dims):
    """The 10 crops of each image (four corners and centre, then the same mirrored), as one
    (10·N)×h×w×K float32 array; the crop positions come from the first image's size."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    boxes = [(i, j, i + crop_dims[0], j + crop_dims[1])
             for i in (0, im_shape[0] - crop_dims[0]) for j in (0, im_shape[1] - crop_dims[1])]
    center = np.tile(im_shape[:2] / 2.0, 2) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    boxes.append(tuple(int(c) for c in center))  # truncated toward zero, as pycaffe's int array does
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    for n, im in enumerate(images):
        for k, (y0, x0, y1, x1) in enumerate(boxes):
            crops[10 * n + k] = im[y0:y1, x0:x1, :]
            crops[10 * n + k + 5] = im[y0:y1, x0:x1, :][:, ::-1, :]
    return crops
