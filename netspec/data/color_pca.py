"""PCA of the training set's RGB pixels for the paper's colour augmentation (Krizhevsky et al. 2012, 4.1).

Reads a random sample of records of an LMDB, accumulates the 3x3 covariance of all their pixels and
prints the `color_aug_param` block for a prototxt's transform_param (see transform.py). Eigenvectors
are in R,G,B order, largest eigenvalue first.

Scale: the paper adds alpha_i * lambda_i * p_i with alpha_i ~ N(0, 0.1). Public re-implementations
take lambda_i from the covariance of pixels scaled to [0, 1] (ImageNet: about 0.2, 0.02, 0.005), which
gives shifts of a few grey levels. Records hold 0..255 pixels, so the printed eigenvalues are those
[0, 1] eigenvalues times 255: the shift then comes out in the records' own units. (Eigenvalues of the
0..255 covariance itself would be 255 times larger again and wash the images out.)
"""
from __future__ import annotations

import argparse
import sys

import lmdb
import numpy as np

from ..errors import NetspecError
from . import db as dbmod
from .datum import parse, to_array


def _sample_keys(env, samples: int, seed: int) -> list[bytes]:
    with env.begin() as txn:
        keys = list(txn.cursor().iternext(keys=True, values=False))
    if len(keys) > samples:
        chosen = np.random.default_rng(seed).choice(len(keys), samples, replace=False)
        keys = [keys[i] for i in sorted(chosen)]
    return keys


def color_pca(db_path, samples: int = 10000, seed: int = 0, progress: bool = False):
    """(eigenvalues[3] for 0..255 records, eigenvectors 3x3 with eigenvector i in row i (R,G,B), pixels)."""
    from tqdm import tqdm

    with dbmod.open_lmdb(db_path) as env:
        try:
            keys = _sample_keys(env, samples, seed)
        except lmdb.Error as e:
            raise dbmod.corrupt(db_path, None, e) from None
        if not keys:
            raise NetspecError(f"LMDB '{db_path}' is empty")
        n, s, ss = 0, np.zeros(3), np.zeros((3, 3))
        with env.begin() as txn:
            hide = not progress or not sys.stderr.isatty()     # a bar's redraws would fill a log file
            for k in tqdm(keys, unit="img", disable=hide, desc="color pca", file=sys.stderr):
                key = k.decode("utf-8", "replace")
                try:
                    value = txn.get(k)
                except lmdb.Error as e:
                    raise dbmod.corrupt(db_path, key, e) from None
                image = to_array(parse(value, key, str(db_path)), force_color=True, key=key)
                if image.shape[0] != 3:
                    raise NetspecError(f"record '{key}' has {image.shape[0]} channel(s); colour PCA needs 3")
                rgb = image[::-1].reshape(3, -1).astype(np.float64) / 255.0  # records are B,G,R
                n += rgb.shape[1]
                s += rgb.sum(1)
                ss += rgb @ rgb.T
    mu = s / n
    values, vectors = np.linalg.eigh(ss / n - np.outer(mu, mu))
    order = np.argsort(values)[::-1]
    vectors = vectors[:, order].T  # row i = eigenvector i
    vectors *= np.where(vectors.sum(1, keepdims=True) < 0, -1.0, 1.0)  # a stable sign for printing
    return np.maximum(values[order], 0) * 255.0, vectors, n


def param_text(eigenvalues, eigenvectors, std: float = 0.1) -> str:
    lines = ["color_aug_param {"]
    lines += [f"  eigenvalue: {v:.6g}" for v in eigenvalues]
    lines += [f"  eigenvector: {v:.6g}" for v in np.asarray(eigenvectors).ravel()]
    lines += [f"  std: {std:g}", "}"]
    return "\n".join(lines)


HELP = "PCA of an LMDB's RGB pixels: prints color_aug_param for transform_param (AlexNet's colour noise)"
EXAMPLES = "  netspec color-pca ilsvrc12_train_lmdb --samples 10000\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", metavar="LMDB", help="training LMDB of Datum (raw or encoded, 3 channels)")
    p.add_argument("--samples", type=int, default=10000, help="records sampled at random (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the record sample (default 0)")
    p.add_argument("--std", type=float, default=0.1, help="std of alpha (the paper: 0.1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    values, vectors, n = color_pca(args.db, args.samples, args.seed, progress=not args.quiet)
    print(f"# netspec color-pca: {n} pixels of up to {args.samples} records of '{args.db}'")
    print("# paste inside transform_param { ... } of the TRAIN Data layer")
    print(param_text(values, vectors, args.std))
    return 0
