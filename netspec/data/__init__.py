"""Caffe's data path: images -> LMDB of Datum (convert), mean files, the DataTransformer, batch reading.

Modules follow Caffe's tools and sources: convert.py (tools/convert_imageset.cpp), mean.py
(tools/compute_image_mean.cpp), transform.py (src/caffe/data_transformer.cpp), reader.py
(src/caffe/layers/data_layer.cpp with its prefetching base), db.py (src/caffe/util/db_lmdb.cpp),
datum.py (src/caffe/util/io.cpp). toy.py writes a small ImageNet-like tree; color_pca.py computes the
paper's colour-augmentation parameters. The Data layer itself is netspec/layers/data_layer.py.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import NetspecError


def cli_main(prog: str, description: str, add_arguments, run, argv: list[str]) -> int:
    """Run one data tool as a stand-alone program (the tools/*.py wrappers): one-line errors, exit code."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(run(args) or 0)
    except NetspecError as e:
        if args.debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
