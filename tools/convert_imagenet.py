#!/usr/bin/env python3
"""Caffe's tools/convert_imageset as a script: images (a list or an ImageNet tree) to an LMDB of Datum.

    tools/convert_imagenet.py [flags] ROOTFOLDER/ LISTFILE DB_NAME
    tools/convert_imagenet.py [flags] TRAIN_DIR DB_NAME

Flags as Caffe spells them: -resize_height=256, --resize_height 256, -shuffle, -encoded=true ...

A thin wrapper over `netspec convert-imagenet`;
Caffe's single-dash flags work.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from netspec.cli import tool_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(tool_main("convert-imagenet", prog="convert_imagenet.py"))
