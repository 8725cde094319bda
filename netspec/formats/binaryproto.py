"""Caffe's .binaryproto: one BlobProto in a file, used for mean images (follows tools/compute_image_mean.cpp,
which writes it, and DataTransformer's mean_file reading in src/caffe/data_transformer.cpp).

compute_image_mean and pycaffe's caffe.io.array_to_blobproto set the legacy num/channels/height/width
fields, not `shape`, so a mean file reads as a 4-D array 1×C×H×W; `write_binaryproto` does the same
for arrays of up to 4 axes.
"""
from __future__ import annotations

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .atomic import atomic_write
from .blobs import array_to_blob, as_float32, blob_to_array
from .protofile import read_message

KIND = ".binaryproto"


def read_blobproto(path) -> pb.BlobProto:
    """The BlobProto stored in the binary file `path`."""
    return read_message(path, pb.BlobProto, KIND)


def read_binaryproto(path) -> np.ndarray:
    """The blob in `path` as a float32 array of its stored shape (1×C×H×W for a mean file)."""
    return blob_to_array(read_blobproto(path), file=path)


def legacy_blob(array: np.ndarray) -> pb.BlobProto:
    """A BlobProto with num/channels/height/width and float data, as compute_image_mean writes it."""
    if array.ndim > 4:
        raise NetspecError(f"a legacy blob has at most 4 axes, this array has {array.ndim}")
    blob = pb.BlobProto()
    blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    blob.MergeFrom(array_to_blob(array.reshape(-1)))
    blob.ClearField("shape")
    return blob


def write_binaryproto(path, array, legacy: bool = True) -> None:
    """Write `array` (array or tensor) to `path` atomically: with the legacy 4-D shape fields (the
    mean-file convention) or, with `legacy=False`, with `shape` as Blob::ToProto writes it."""
    array = as_float32(array)
    blob = legacy_blob(array) if legacy else array_to_blob(array)
    atomic_write(path, blob.SerializeToString())
