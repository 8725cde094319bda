#!/usr/bin/env python3
"""Caffe's tools/compute_image_mean as a script: the mean image of an LMDB as a .binaryproto.

    tools/compute_image_mean.py [-backend=lmdb] INPUT_DB [OUTPUT_FILE]

A thin wrapper over `netspec compute-image-mean`;
Caffe's single-dash flags work.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from netspec.cli import tool_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(tool_main("compute-image-mean", prog="compute_image_mean.py"))
