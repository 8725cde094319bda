"""Datum <-> numpy, following Caffe's src/caffe/util/io.cpp (CVMatToDatum, DecodeDatumToCVMat*).

A raw Datum holds uint8 pixels in CHW order with OpenCV's BGR channel order; an encoded Datum holds
the bytes of an image file (JPEG, PNG ...) and is decoded with OpenCV, as Caffe does. Images as
OpenCV gives them are HWC ("mats"); Datum pixels are CHW ("arrays").
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import NetspecError
from ..formats.image_header import check_size as check_image_size
from ..proto import pb


def parse(value: bytes, key: str | None = None, source: str | None = None) -> pb.Datum:
    """Parse a serialised Datum; a record that is not one names its key."""
    datum = pb.Datum()
    try:
        datum.ParseFromString(value)
    except Exception:  # protobuf's DecodeError and friends
        where = f"'{source}': " if source else ""
        raise NetspecError(f"{where}record '{key}' is not a Datum ({len(value)} bytes)") from None
    return datum


def mat_to_datum(mat: np.ndarray, label: int | None = None) -> pb.Datum:
    """CVMatToDatum: an HWC (or HW) uint8 image becomes a raw CHW Datum, fields set as Caffe sets them."""
    if mat.dtype != np.uint8:
        raise NetspecError(f"image data type must be uint8, found {mat.dtype}")
    chw = mat[None] if mat.ndim == 2 else mat.transpose(2, 0, 1)
    datum = pb.Datum(channels=chw.shape[0], height=chw.shape[1], width=chw.shape[2],
                     data=np.ascontiguousarray(chw).tobytes())
    if label is not None:
        datum.label = int(label)
    datum.encoded = False  # Caffe sets it explicitly, so it is serialised
    return datum


def decode_mat(datum: pb.Datum, force_color: bool = False, force_gray: bool = False,
               key: str | None = None) -> np.ndarray:
    """Decode an encoded Datum to an HWC (HW for grayscale) uint8 image, as Caffe's DataTransformer.

    Without force_* flags the image keeps its own channels (DecodeDatumToCVMatNative, IMREAD_UNCHANGED);
    force_color / force_gray decode with IMREAD_COLOR / IMREAD_GRAYSCALE.
    """
    if force_color and force_gray:
        raise NetspecError("transform_param: force_color and force_gray cannot both be set")
    flag = cv2.IMREAD_COLOR if force_color else cv2.IMREAD_GRAYSCALE if force_gray else cv2.IMREAD_UNCHANGED
    check_image_size(datum.data, f"record '{key}'")  # before OpenCV allocates what the header declares
    try:
        mat = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
    except cv2.error as e:
        raise NetspecError(f"record '{key}': OpenCV cannot decode the image: "
                           f"{' '.join(str(e).split())[-160:]}") from None
    if mat is None:
        raise NetspecError(f"record '{key}': encoded image ({len(datum.data)} bytes) cannot be decoded")
    if mat.dtype != np.uint8:
        raise NetspecError(f"record '{key}': decoded image is {mat.dtype}, expected 8-bit")
    return mat


def datum_shape(datum: pb.Datum, key: str | None = None) -> tuple[int, int, int]:
    """(channels, height, width) of a raw Datum, checked against its payload size."""
    c, h, w = datum.channels, datum.height, datum.width
    n = len(datum.data) if datum.data else len(datum.float_data)
    if c <= 0 or h <= 0 or w <= 0 or n != c * h * w:
        raise NetspecError(f"record '{key}': Datum says {c}x{h}x{w} but holds {n} values")
    return c, h, w


def to_array(datum: pb.Datum, force_color: bool = False, force_gray: bool = False,
             key: str | None = None) -> np.ndarray:
    """A Datum's pixels as a CHW array: uint8 for byte data (decoded if encoded), float32 for float_data."""
    if datum.encoded:
        mat = decode_mat(datum, force_color, force_gray, key)
        return mat[None] if mat.ndim == 2 else mat.transpose(2, 0, 1)
    c, h, w = datum_shape(datum, key)
    if datum.data:
        return np.frombuffer(datum.data, np.uint8).reshape(c, h, w)
    return np.asarray(datum.float_data, np.float32).reshape(c, h, w)


def decode_native(datum: pb.Datum, key: str | None = None) -> pb.Datum:
    """DecodeDatumNative: an encoded Datum becomes a raw one (label kept); raw ones pass through."""
    if not datum.encoded:
        return datum
    out = mat_to_datum(decode_mat(datum, key=key))
    if datum.HasField("label"):
        out.label = datum.label
    return out
