"""`netspec parse-log LOG OUTPUT_DIR`: Caffe's tools/extra/parse_log.py — the training log (Caffe's
or netspec's) as two CSV tables, OUTPUT_DIR/<log name>.train and .test: NumIters, Seconds,
LearningRate and one column per net output (netspec.solver.log_tables).
"""
from __future__ import annotations

import os

from ..errors import NetspecError
from ..solver.log_tables import parse_tables, write_table

HELP = "a training log as CSV tables of train and test outputs (Caffe's tools/extra/parse_log.py)"
EXAMPLES = "  netspec parse-log train.log . --verbose     # writes ./train.log.train and ./train.log.test\n"


def add_arguments(p) -> None:
    p.add_argument("logfile_path", help="training log")
    p.add_argument("output_dir", help="folder for the CSV files")
    p.add_argument("--verbose", action="store_true", help="say which files were written")
    p.add_argument("--delimiter", default=",", help="column delimiter (default ',')")


def run(args) -> int:
    if not os.path.isdir(args.output_dir):
        raise NetspecError(f"output folder '{args.output_dir}' does not exist")
    if len(args.delimiter) != 1:
        raise NetspecError(f"--delimiter '{args.delimiter}': must be one character")
    train, test = parse_tables(args.logfile_path)
    base = os.path.join(args.output_dir, os.path.basename(args.logfile_path))
    for suffix, rows in ((".train", train), (".test", test)):
        written = write_table(base + suffix, rows, args.delimiter)
        if args.verbose:
            print(f"Wrote {base + suffix}" if written else f"Not writing {base + suffix}; no lines to write")
    return 0
