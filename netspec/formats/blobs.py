"""Caffe's BlobProto <-> numpy float32 arrays (follows Blob::FromProto, ToProto and ShapeEquals in
src/caffe/blob.cpp).

Shape: `shape.dim`, or the legacy num/channels/height/width when any of those is set (then the blob
is 4-D, N×C×H×W, and unset ones count as 0, as in Caffe). Values: `double_data` when it has any,
else `data`; their count must equal the shape's product. Caffe 1.0 writes `shape` (left out for a
0-axis blob) and float `data`, plus `diff` when asked to; a BlobProto holds them in field order
data (5), diff (6), shape (7).

Converting the protobuf repeated field is fast for reading; building one with `.extend()` is not
(seconds for 37M floats), so writing encodes the packed field bytes directly, and `scan_blob` reads a
blob straight from file bytes without protobuf.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .protofile import I32, I64, LEN, VARINT, WireError, encode_varint, iter_fields, read_varint, signed

_LEGACY = ("num", "channels", "height", "width")


def fmt_shape(shape) -> str:
    return "×".join(str(d) for d in shape) if len(shape) else "(scalar)"


def as_float32(blob) -> np.ndarray:
    """A float32 numpy view or copy of a torch tensor (any device) or array-like."""
    if hasattr(blob, "detach"):  # a torch tensor; blobs.py itself stays free of torch
        blob = blob.detach().to("cpu").float().contiguous().numpy()
    return np.asarray(blob, dtype=np.float32)


def is_legacy(blob: pb.BlobProto) -> bool:
    """True when the blob uses the deprecated num/channels/height/width instead of `shape`."""
    return any(blob.HasField(f) for f in _LEGACY)


def blob_shape(blob: pb.BlobProto) -> tuple[int, ...]:
    if is_legacy(blob):
        return tuple(getattr(blob, f) for f in _LEGACY)
    return tuple(blob.shape.dim)


def shape_equals(target_shape, shape, legacy: bool) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy blob matches a target of at most 4 axes padded with
    leading 1s (an old InnerProduct weight 1×1×M×N fits M×N, a bias 1×1×1×N fits N)."""
    target_shape, shape = tuple(target_shape), tuple(shape)
    if legacy:
        return len(target_shape) <= 4 and (1,) * (4 - len(target_shape)) + target_shape == shape
    return target_shape == shape


def shaped(flat: np.ndarray, shape, *, file=None, layer=None, index=None, what="data") -> np.ndarray:
    """`flat` reshaped to `shape`, or a one-line error when the value count does not fit."""
    where = f"blob {index}: " if index is not None else ""
    if any(d < 0 for d in shape):
        raise NetspecError(f"{where}shape {fmt_shape(shape)} has a negative dimension", file=file,
                           layer=layer)
    count = math.prod(shape)
    if flat.size != count:
        raise NetspecError(f"{where}holds {flat.size} {what} values but its shape {fmt_shape(shape)} "
                           f"needs {count}", file=file, layer=layer)
    return flat.reshape(shape)


def _narrow(doubles: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, as C++'s cast gives
        return doubles.astype(np.float32)


def blob_to_array(blob: pb.BlobProto, what: str = "data", **where) -> np.ndarray | None:
    """The blob's `data` (or `diff`) as a float32 array of the blob's shape; None for an absent diff.
    `where` (file=, layer=, index=) names the blob in errors."""
    doubles, floats = getattr(blob, "double_" + what), getattr(blob, what)
    if what == "diff" and not len(doubles) and not len(floats):
        return None
    flat = _narrow(np.array(doubles, np.float64)) if len(doubles) else np.array(floats, np.float32)
    return shaped(flat, blob_shape(blob), what=what, **where)


def encode_blob(data, diff=None) -> list:
    """The serialized BlobProto of `data` (and `diff`) as Caffe's Blob<float>::ToProto writes it,
    as a list of byte chunks (header bytes and the arrays' own memory) to write or join."""
    data = np.asarray(data, dtype="<f4")  # not ascontiguousarray: it makes a 0-axis blob 1-axis
    chunks = []
    for number, values in ((5, data), (6, diff)):
        if values is None:
            continue
        values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        if values.size != data.size:
            raise ValueError(f"diff has {values.size} values, data {data.size}")
        if values.size:
            chunks += [encode_varint(number << 3 | LEN) + encode_varint(values.nbytes), values.data.cast("B")]
    if data.ndim:
        dims = pb.BlobShape(dim=data.shape).SerializeToString()
        chunks.append(encode_varint(7 << 3 | LEN) + encode_varint(len(dims)) + dims)
    return chunks


def array_to_blob(data, diff=None) -> pb.BlobProto:
    """A BlobProto holding `data` (and `diff`), as Caffe writes it."""
    blob = pb.BlobProto()
    blob.ParseFromString(b"".join(encode_blob(data, diff)))
    return blob


def _scan_shape(buf, start: int, end: int, dims: list) -> None:
    for number, wire, value, stop in iter_fields(buf, start, end):
        if number != 1:
            continue
        if wire == VARINT:
            dims.append(signed(value))
        elif wire == LEN:  # packed int64
            pos = value
            while pos < stop:
                dim, pos = read_varint(buf, pos, stop)
                dims.append(signed(dim))


def _packed(buf, chunks: list, wire: int, value: int, stop: int, item: int, single: int) -> None:
    if wire == LEN:
        if (stop - value) % item:
            raise WireError(f"a packed array of {stop - value} bytes is not a whole number of values", value)
        chunks.append((value, (stop - value) // item))
    elif wire == single:
        chunks.append((value, 1))


def _gather(buf, chunks: list, dtype: str) -> np.ndarray:
    """The values of all chunks; one chunk (the usual case) stays a view of `buf`, unaligned and
    read-only, so that the caller copies it once, straight to where it goes."""
    parts = [np.frombuffer(buf, dtype, count, offset) for offset, count in chunks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts).astype(dtype[1:]) if parts else np.zeros(0, dtype[1:])


def scan_blob(buf, start: int, end: int) -> tuple[np.ndarray, tuple, bool]:
    """(flat float32 data, shape, legacy) of the BlobProto in buf[start:end], read from the bytes;
    the data may be a view of `buf` (copy it before `buf` goes away).

    Follows protobuf's parsing rules (repeated values may come in several chunks, packed or not;
    a field with an unexpected wire type is an unknown field) so it agrees with `blob_to_array`.
    """
    legacy = [None] * 4
    dims, floats, doubles = [], [], []
    for number, wire, value, stop in iter_fields(buf, start, end):
        if 1 <= number <= 4 and wire == VARINT:
            legacy[number - 1] = signed(value, 32)
        elif number == 5:
            _packed(buf, floats, wire, value, stop, 4, I32)
        elif number == 8:
            _packed(buf, doubles, wire, value, stop, 8, I64)
        elif number == 7 and wire == LEN:
            _scan_shape(buf, value, stop, dims)
    is_legacy_blob = any(d is not None for d in legacy)
    shape = tuple(d or 0 for d in legacy) if is_legacy_blob else tuple(dims)
    if sum(c for _, c in doubles):
        flat = _narrow(_gather(buf, doubles, "<f8"))
    else:
        flat = _gather(buf, floats, "<f4")
    return flat, shape, is_legacy_blob
