"""`netspec extract-features WEIGHTS NET BLOBS DBS N [lmdb] [CPU|GPU] [DEVICE_ID]`: Caffe's
tools/extract_features.cpp — run the TEST-phase net N times and store, for each named blob, every
item of every batch as one Datum in its own LMDB.

As in Caffe: BLOBS and DBS are comma-separated and pair up; each Datum holds the item's values as
float_data with channels/height/width from the blob's legacy 4-D shape (an N×C blob gives C×1×1);
keys are the item's running index zero-padded to 10 digits ("0000000000", ...); transactions are
committed every 1000 items. The output DBs must not exist yet. Only LMDB is written (Caffe also
writes LevelDB).
"""
from __future__ import annotations

import logging
import os

from ..errors import NetspecError

HELP = "store named blobs of N batches as Datum float_data in LMDBs (Caffe's extract_features)"
EXAMPLES = ("  netspec extract-features net.caffemodel feat.prototxt fc7,prob fc7_lmdb,prob_lmdb 10 lmdb\n")
log = logging.getLogger("netspec")
COMMIT_EVERY = 1000


def add_arguments(p) -> None:
    p.add_argument("pretrained_net_param", help="trained weights (.caffemodel)")
    p.add_argument("feature_extraction_proto_file", help="net prototxt (its TEST phase is run)")
    p.add_argument("extract_feature_blob_names", help="blob name(s), comma-separated")
    p.add_argument("save_feature_dataset_names", help="output DB path(s), comma-separated, one per blob")
    p.add_argument("num_mini_batches", type=int, help="how many forward passes")
    p.add_argument("db_type", nargs="?", default="lmdb", help="lmdb (default; leveldb is not written)")
    p.add_argument("device", nargs="?", default="CPU", type=str.upper, choices=["CPU", "GPU"],
                   help="CPU (default) or GPU")
    p.add_argument("device_id", nargs="?", default=0, type=int, help="GPU id (default 0)")


def _legacy_chw(shape, blob: str) -> tuple[int, int, int]:
    """channels, height, width of Caffe's Blob::LegacyShape (missing axes are 1; at most 4 axes)."""
    if len(shape) > 4:
        raise NetspecError(f"blob '{blob}' has {len(shape)} axes; a Datum holds at most 4 (N×C×H×W)")
    rest = tuple(shape[1:]) + (1,) * (4 - max(len(shape), 1))
    return rest[0], rest[1], rest[2]


def check_args(blobs: list[str], dbs: list[str], db_type: str, batches: int) -> None:
    if db_type.lower() != "lmdb":
        raise NetspecError(f"db_type '{db_type}': netspec writes LMDB only (give lmdb)")
    if len(blobs) != len(dbs):
        raise NetspecError(f"{len(blobs)} blob name(s) but {len(dbs)} dataset name(s); they must pair up")
    if batches < 0:
        raise NetspecError(f"num_mini_batches {batches}: must be 0 or more")
    for db in dbs:  # Caffe opens them with db::NEW, which refuses an existing one; say so before the net runs
        if os.path.exists(db):
            raise NetspecError(f"output DB '{db}' already exists; remove it or choose another name")


def check_blobs(net, blobs: list[str], proto: str) -> None:
    for name in blobs:
        if name not in net.blobs:
            raise NetspecError(f"unknown feature blob name '{name}' in the network '{proto}' "
                               f"(blobs: {', '.join(net.blobs)})")


def extract(net, blobs: list[str], dbs: list[str], batches: int) -> list[int]:
    """Write the blobs of `batches` forward passes into new LMDBs; the item count of each."""
    from contextlib import ExitStack

    from ..data.db import Writer
    from ..formats import atomic_dir
    from ..proto import pb
    counts = [0] * len(blobs)
    with ExitStack() as stack:
        writers = [Writer(stack.enter_context(atomic_dir(db)), commit_every=COMMIT_EVERY) for db in dbs]
        for _ in range(batches):
            net.forward()
            for i, name in enumerate(blobs):
                data = net.blobs[name].data
                c, h, w = _legacy_chw(data.shape, name)
                for item in data.reshape(len(data), -1):
                    datum = pb.Datum(channels=c, height=h, width=w, float_data=item)
                    writers[i].put(f"{counts[i]:010d}", datum.SerializeToString())
                    counts[i] += 1
                    if counts[i] % COMMIT_EVERY == 0:
                        log.info("Extracted features of %d query images for feature blob %s", counts[i], name)
        for i, writer in enumerate(writers):
            writer.close()
            if counts[i] % COMMIT_EVERY:
                log.info("Extracted features of %d query images for feature blob %s", counts[i], blobs[i])
    return counts


def run(args) -> int:
    from ..pycaffe.net import Net, set_device, set_mode_cpu, set_mode_gpu
    if args.device == "GPU":
        set_device(args.device_id)
        set_mode_gpu()
        log.info("Using Device_id=%d", args.device_id)
    else:
        set_mode_cpu()
        log.info("Using CPU")
    blobs = args.extract_feature_blob_names.split(",")
    dbs = args.save_feature_dataset_names.split(",")
    check_args(blobs, dbs, args.db_type, args.num_mini_batches)
    from ..proto import pb
    net = Net(args.feature_extraction_proto_file, pb.TEST, weights=args.pretrained_net_param)
    check_blobs(net, blobs, args.feature_extraction_proto_file)
    log.info("Extracting Features")
    counts = extract(net, blobs, dbs, args.num_mini_batches)
    print(f"Successfully extracted the features! ({', '.join(f'{n} x {b}' for n, b in zip(counts, blobs))})")
    return 0
