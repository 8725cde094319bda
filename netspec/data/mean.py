"""The mean image of an LMDB of Datum: Caffe's tools/compute_image_mean.cpp, to the last bit.

Caffe accumulates in the BlobProto's own `float` data field, one record at a time, then divides by the
count (float / int). Float32 addition in record order reproduces its rounding exactly, also past
2^24 where a wider accumulator would disagree (ImageNet's 1.28M images). Encoded records are decoded
with their own channels (DecodeDatumNative). The output is a BlobProto 1xCxHxW with the legacy
num/channels/height/width fields, as Caffe writes it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ..errors import NetspecError
from ..formats.atomic import check_target
from ..formats.binaryproto import write_binaryproto
from ..proto import pb
from . import db as dbmod
from .datum import decode_native, parse, to_array

log = logging.getLogger("netspec.data.mean")


def compute_mean(db_path, out=None, progress: bool = False) -> np.ndarray:
    """Mean of all records of `db_path` as float32 (1, C, H, W); written to `out` as a BlobProto if given."""
    from tqdm import tqdm

    if out is not None:
        check_target(out)  # a folder or a read-only place fails now, not after reading every record
    total = dbmod.count(db_path)
    if total == 0:
        raise NetspecError(f"LMDB '{db_path}' is empty: no mean to compute")
    acc, n = None, 0
    hide = not progress or not sys.stderr.isatty()     # a bar's redraws would fill a log file
    for key, value in tqdm(dbmod.iter_records(db_path), total=total, unit="img", disable=hide,
                           desc="mean", file=sys.stderr):
        arr = to_array(decode_native(parse(value, key, db_path), key), key=key)
        if acc is None:
            acc = np.zeros(arr.shape, np.float32)
        elif arr.shape != acc.shape:
            raise NetspecError(f"LMDB '{db_path}': record '{key}' is {'x'.join(map(str, arr.shape))}, the "
                               f"first record {'x'.join(map(str, acc.shape))}; a mean needs equal sizes")
        acc += arr  # float32 += uint8/float32: Caffe's float accumulation, same rounding
        n += 1
    mean = (acc / np.float32(n))[None]
    for c in range(mean.shape[1]):
        log.info("mean_value channel [%d]: %g", c, float(mean[0, c].mean(dtype=np.float64)))
    if out is not None:
        save_mean(mean, out)
    return mean


def save_mean(mean: np.ndarray, path) -> None:
    """Write a 1xCxHxW mean as Caffe's BlobProto (legacy 4-D fields), atomically."""
    write_binaryproto(path, mean)


def load_mean(path) -> np.ndarray:
    """A mean file (BlobProto, legacy dims or `shape`) as a float32 array (C, H, W) (Blob::FromProto)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise NetspecError(f"mean file cannot be read: {e.strerror}", file=path) from None
    blob = pb.BlobProto()
    try:
        blob.ParseFromString(data)
    except Exception:
        raise NetspecError("not a BlobProto (binaryproto) file", file=path) from None
    shape = list(blob.shape.dim) if blob.HasField("shape") else [blob.num, blob.channels, blob.height,
                                                                  blob.width]
    values = np.asarray(blob.data if len(blob.data) else blob.double_data, np.float32)
    if not shape or values.size != int(np.prod(shape)) or values.size == 0:
        raise NetspecError(f"mean blob has shape {shape} but {values.size} values", file=path)
    while len(shape) > 3:  # Caffe's mean blob is 1xCxHxW
        if shape[0] != 1:
            raise NetspecError(f"mean blob has shape {shape}, expected 1xCxHxW", file=path)
        shape = shape[1:]
    return values.reshape([1] * (3 - len(shape)) + shape)


HELP = "compute the mean image of an LMDB of Datum as a .binaryproto (compute_image_mean)"
EXAMPLES = "  netspec compute-image-mean -backend=lmdb ilsvrc12_train_lmdb imagenet_mean.binaryproto\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_db", metavar="INPUT_DB", help="LMDB of Datum records (raw or encoded)")
    p.add_argument("output_file", metavar="OUTPUT_FILE", nargs="?",
                   help="BlobProto to write (optional, as in Caffe)")
    p.add_argument("--backend", default="lmdb", help="only lmdb is supported")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.backend.lower() != "lmdb":
        raise NetspecError(f"--backend {args.backend} is not supported: netspec reads LMDB only")
    mean = compute_mean(args.input_db, args.output_file, progress=not args.quiet)
    where = f" written to {args.output_file}" if args.output_file else " (no OUTPUT_FILE: not saved)"
    print(f"mean {'x'.join(map(str, mean.shape))}{where}")  # the per-channel values are in the log
    return 0
