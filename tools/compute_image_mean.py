#!/usr/bin/env python3
"""Caffe's tools/compute_image_mean as a script: the mean image of an LMDB as a .binaryproto.

    tools/compute_image_mean.py [-backend=lmdb] INPUT_DB [OUTPUT_FILE]

A thin wrapper over netspec.data.mean.main (also `netspec compute-image-mean`);
Caffe's single-dash flags work.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from netspec.cli import caffe_flags  # noqa: E402
from netspec.data.mean import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(caffe_flags(sys.argv[1:])))
