#!/usr/bin/env python3
"""Write a toy ImageNet: train/<wnid>/*.JPEG, val/*.JPEG, train.txt, val.txt, synsets.txt.

    tools/make_toy_imagenet.py ROOT [--classes 10] [--per_class 50] [--seed 0]

A thin wrapper over `netspec make-toy-imagenet`;
Caffe's single-dash flags work.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from netspec.cli import tool_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(tool_main("make-toy-imagenet", prog="make_toy_imagenet.py"))
