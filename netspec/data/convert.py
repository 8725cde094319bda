"""Images to an LMDB of Datum records: Caffe's tools/convert_imageset.cpp and ReadImageToDatum (io.cpp).

Two inputs:
  * Caffe's listfile: `convert_imagenet [flags] ROOTFOLDER/ LISTFILE DB_NAME`, lines `relative/path label`
    (label after the last space, as Caffe parses); no resize unless asked, as Caffe.
  * An ImageNet-style class tree: `convert_imagenet [flags] TRAIN_DIR DB_NAME` with TRAIN_DIR/<wnid>/*.JPEG;
    labels are line numbers in `--synsets` (one wnid per line) or the sorted folder names; 256x256 by default.
Records are exactly Caffe's: key `%08d_<path>` (line number after shuffling; unreadable images leave a
gap), raw Datum uint8 CHW BGR after cv::imread + cv::resize(INTER_LINEAR), or with --encoded the file's
own bytes (no resize, matching extension) else cv::imencode of the resized image.

netspec adds: parallel decoding (--workers, order preserved), a progress bar, a seeded shuffle, a
temporary `<DB>.partial` folder renamed at the end, `--resume` after an interruption, and a summary of
skipped files (unreadable, as Caffe skips them) and warnings (truncated JPEGs, kept as libjpeg keeps them).
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import NetspecError
from ..formats.atomic import atomic_write, io_error
from ..formats.image_header import check_size as check_image_size
from ..proto import pb
from . import db as dbmod
from .datum import mat_to_datum

log = logging.getLogger("netspec.data.convert")

IMAGE_EXTS = {".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
STATE_FILE = "netspec_convert_state.json"


@dataclass
class Options:
    resize_height: int = 0
    resize_width: int = 0
    gray: bool = False
    encoded: bool = False
    encode_type: str = ""
    check_size: bool = False


@dataclass
class Summary:
    db: str
    written: int = 0
    skipped: list = field(default_factory=list)    # [path, reason]
    warnings: list = field(default_factory=list)   # [path, message]
    seconds: float = 0.0


# ---- the list of images -----------------------------------------------------------------------
def read_listfile(path) -> list[tuple[str, int]]:
    """Caffe's list: the label follows the last space; paths may hold spaces. Blank lines keep their id."""
    lines = []
    if not Path(path).is_file():
        raise NetspecError("list file not found", file=path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise NetspecError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                                   "save the list as UTF-8", file=path, line=n) from None
            name, _, label = line.rpartition(" ")
            if not line.strip():
                lines.append(("", 0))
                continue
            lines.append((name, _label(label, path, n)))
    return lines


def _label(text: str, path, n: int) -> int:
    """A list label: an integer that fits Datum.label (int32)."""
    try:
        label = int(text)
    except ValueError:
        raise NetspecError(f"label '{text}' is not an integer (expected 'path label')",
                           file=path, line=n) from None
    if not -(1 << 31) <= label < (1 << 31):
        raise NetspecError(f"label {label} does not fit Datum.label (a 32-bit integer)", file=path, line=n)
    return label


def read_synsets(path) -> list[str]:
    """wnids in label order: the first word of every non-empty line (synsets.txt or synset_words.txt)."""
    with open(path, encoding="utf-8") as f:
        return [ln.split()[0] for ln in f if ln.strip()]


def imagenet_list(train_dir, synsets=None) -> list[tuple[str, int]]:
    """(wnid/file, label) for every image under train_dir/<wnid>/, folders and files in sorted order."""
    root = Path(train_dir)
    if not root.is_dir():
        raise NetspecError(f"image folder '{train_dir}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise NetspecError(f"'{train_dir}' has no class folders (expected {train_dir}/<wnid>/*.JPEG); "
                           "for a flat folder pass a list file: ROOTFOLDER/ LISTFILE DB_NAME")
    wnids = read_synsets(synsets) if synsets else folders
    index = {w: i for i, w in enumerate(wnids)}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise NetspecError(f"class folder '{unknown[0]}' is not in the synset list ({len(unknown)} such "
                           "folders)", file=synsets)
    return [(f"{w}/{name}", index[w]) for w in folders
            for name in sorted(os.listdir(root / w)) if Path(name).suffix.lower() in IMAGE_EXTS]


def shuffled(lines: list, seed: int) -> list:
    """convert_imageset --shuffle, made reproducible (Caffe's own shuffle is seeded by the clock)."""
    order = np.random.default_rng(seed).permutation(len(lines))
    return [lines[i] for i in order]


# ---- one image -> one record (runs in worker processes) ---------------------------------------
def _match_ext(path: str, encoding: str) -> bool:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else path.lower()
    enc = encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def jpeg_truncated(data: bytes) -> bool:
    """A JPEG whose last scan has no EOI marker after it: libjpeg says 'Premature end of JPEG file'.

    Scan data cannot hold FFD9 or FFDA (bytes after FF are stuffed), so an EOI before the last SOS
    can only belong to an embedded thumbnail.
    """
    return data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda")


def read_image_to_datum(path: str, label: int, opt: Options) -> tuple[pb.Datum | None, str | None]:
    """ReadImageToDatum: (datum or None if OpenCV cannot read it, warning or None)."""
    with open(path, "rb") as f:
        raw = f.read()
    check_image_size(raw, "image")  # before OpenCV allocates what the header declares
    mat = cv2.imread(path, cv2.IMREAD_GRAYSCALE if opt.gray else cv2.IMREAD_COLOR)
    if mat is None:
        return None, None
    warning = None
    if jpeg_truncated(raw):
        warning = "Premature end of JPEG file (no EOI marker): kept, decoded as far as the data goes"
    h, w = opt.resize_height, opt.resize_width
    if h > 0 and w > 0:
        mat = cv2.resize(mat, (w, h), interpolation=cv2.INTER_LINEAR)
    enc = opt.encode_type or (path.rsplit(".", 1)[-1].lower() if opt.encoded else "")
    if not enc:
        return mat_to_datum(mat, label), warning
    if not h and not w and _match_ext(path, enc):
        return pb.Datum(data=raw, label=label, encoded=True), warning
    ok, buf = cv2.imencode("." + enc, mat)
    if not ok:
        return None, None
    return pb.Datum(data=buf.tobytes(), label=label, encoded=True), warning


_WORKER: dict = {}


def _init_worker(root: str, opt: Options) -> None:
    cv2.setNumThreads(1)  # one image per process; OpenCV's own threads would oversubscribe
    _WORKER.update(root=root, opt=opt)


def _convert_one(job: tuple[int, str, int]):
    """-> (line_id, serialised Datum or None, data size, warning, skip reason)."""
    line_id, rel, label = job
    path = os.path.join(_WORKER["root"], rel)
    if not rel:
        return line_id, None, 0, None, "empty line in the list"
    if not os.path.isfile(path):
        return line_id, None, 0, None, "file not found"
    try:
        datum, warning = read_image_to_datum(path, label, _WORKER["opt"])
    except OSError as e:
        return line_id, None, 0, None, f"cannot be read: {e.strerror}"
    except cv2.error as e:
        return line_id, None, 0, None, f"OpenCV failed: {' '.join(str(e).split())[-120:]}"
    except NetspecError as e:
        return line_id, None, 0, None, e.message
    if datum is None:
        return line_id, None, 0, None, "OpenCV cannot decode it"
    size = 0 if datum.encoded else len(datum.data)
    return line_id, datum.SerializeToString(), size, warning, None


# ---- the conversion ---------------------------------------------------------------------------
def _check_encoding(opt: Options) -> None:
    if not opt.encode_type:
        return
    try:
        ok = cv2.imencode("." + opt.encode_type, np.zeros((1, 1, 3), np.uint8))[0]
    except cv2.error:
        ok = False
    if not ok:
        raise NetspecError(f"--encode_type '{opt.encode_type}': OpenCV cannot encode this type")


def _results(root: str, opt: Options, jobs: list, workers: int):
    """Yield _convert_one results in list order, from `workers` processes (1: in this process)."""
    if workers <= 1 or len(jobs) < 2:
        _WORKER.update(root=root, opt=opt)
        yield from map(_convert_one, jobs)
        return
    # Spawned, not forked: a fork copies the parent's locks, and a lock another thread held at that
    # moment (a data layer's prefetch thread, torch's thread pool, logging) hangs the child for ever.
    # A spawned worker starts clean and imports only netspec.data (no torch: about 0.4 s).
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (root, opt)) as pool:
        yield from pool.imap(_convert_one, jobs, chunksize=16)


def _start_state(tmp: Path, settings: dict, resume: bool) -> dict:
    """A fresh state, or the saved one of an interrupted run (whose settings must match)."""
    state_path = tmp / STATE_FILE
    if tmp.exists():
        if not resume:
            raise NetspecError(f"'{tmp}' holds an interrupted conversion: pass --resume to continue it, "
                               "or delete it to start again")
        if not state_path.exists():
            raise NetspecError(f"'{tmp}' has no {STATE_FILE}: it was not written by netspec; delete it")
        state = json.loads(state_path.read_text())
        for k, v in settings.items():
            if state["settings"].get(k) != v:
                raise NetspecError(f"cannot resume '{tmp}': {k} was {state['settings'].get(k)!r}, now {v!r}")
        log.info("Resuming after line %d of %d", state["done"], settings["lines"])
        return state
    if resume:
        log.info("Nothing to resume at '%s': starting a new conversion", tmp)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise io_error(tmp, e, "create the LMDB folder") from None
    state = {"settings": settings, "done": 0, "data_size": None, "skipped": [], "warnings": []}
    _save_state(tmp, state)
    return state


def _save_state(tmp: Path, state: dict) -> None:
    atomic_write(tmp / STATE_FILE, json.dumps(state).encode())


def _check_size(state: dict, size: int, rel: str) -> None:
    """convert_imageset --check_size: every raw record holds as many bytes as the first one."""
    if not size:
        return
    if state["data_size"] is None:
        state["data_size"] = size
    elif size != state["data_size"]:
        raise NetspecError(f"--check_size: '{rel}' holds {size} bytes of pixels, the first image "
                           f"{state['data_size']}")


def convert(root, lines: list[tuple[str, int]], db_path, opt: Options | None = None, *, shuffle=False,
            seed=0, workers=None, resume=False, commit_every=dbmod.COMMIT_EVERY, progress=True,
            on_record=None) -> Summary:
    """Write `lines` ((relative path, label) under `root`) to the LMDB `db_path`; see the module doc.

    `on_record(n)` is called after the n-th record of this run is queued (a hook for tests/progress).
    """
    from tqdm import tqdm

    opt = opt or Options()
    _check_encoding(opt)
    if workers is not None and workers < 0:
        raise NetspecError(f"--workers must be 0 (all cores) or positive, found {workers}")
    if not Path(root).is_dir():
        raise NetspecError(f"ROOTFOLDER '{root}' does not exist")
    if shuffle:
        lines = shuffled(lines, seed)
    final = Path(db_path)
    tmp = final.with_name(final.name + ".partial")
    if final.exists():
        raise NetspecError(f"DB '{db_path}' already exists: remove it or choose another name")
    settings = {"root": os.path.abspath(root), "lines": len(lines), "shuffle": shuffle, "seed": seed,
                "options": vars(opt), "ends": [lines[0][0], lines[-1][0]] if lines else []}
    state = _start_state(tmp, settings, resume)
    summary = Summary(db=str(final), skipped=state["skipped"], warnings=state["warnings"])
    writer = dbmod.Writer(tmp, commit_every)
    summary.written = writer.env.stat()["entries"]
    workers = workers or os.cpu_count() or 1
    jobs = [(i, rel, label) for i, (rel, label) in enumerate(lines) if i >= state["done"]]
    t0, processed = time.time(), state["done"]
    results = _results(str(root), opt, jobs, workers)
    hide = not progress or not sys.stderr.isatty()     # a bar's redraws would fill a log file
    bar = tqdm(total=len(lines), initial=processed, unit="img", disable=hide, smoothing=0.05,
               desc=f"convert -> {final.name}", file=sys.stderr)
    try:
        for line_id, value, size, warning, reason in results:
            rel = lines[line_id][0]
            processed = line_id + 1
            if reason:
                log.warning("Skipped %s: %s", os.path.join(str(root), rel), reason)
                summary.skipped.append([rel, reason])
            else:
                if warning:
                    log.warning("Warning %s: %s", rel, warning)
                    summary.warnings.append([rel, warning])
                if opt.check_size:
                    _check_size(state, size, rel)
                if writer.put(dbmod.caffe_key(line_id, rel), value):
                    _save_state(tmp, dict(state, done=processed))
                summary.written += 1
                if on_record:
                    on_record(summary.written)
            bar.update(1)
            bar.set_postfix(skipped=len(summary.skipped), refresh=False)
    except BaseException:
        results.close()
        bar.close()
        writer.close()  # the queued records are complete: keep them
        _save_state(tmp, dict(state, done=processed))
        log.error("Interrupted after %d of %d images; '%s' keeps the records: rerun with --resume",
                  processed, len(lines), tmp)
        raise
    bar.close()
    writer.close()
    if lines and summary.written == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise NetspecError(f"no image could be converted: all {len(summary.skipped)} were skipped (first: "
                           f"'{summary.skipped[0][0]}': {summary.skipped[0][1]}); '{final}' not written")
    (tmp / STATE_FILE).unlink(missing_ok=True)
    os.replace(tmp, final)
    summary.seconds = time.time() - t0
    _log_summary(summary, len(lines))
    return summary


def _log_summary(s: Summary, total: int) -> None:
    log.info("Processed %d files into %s (%.1f s).", s.written, s.db, s.seconds)
    if s.skipped:
        log.warning("%d of %d images skipped (Caffe skips images OpenCV cannot read):", len(s.skipped), total)
        for rel, reason in s.skipped:
            log.warning("  skipped %s: %s", rel, reason)
    if s.warnings:
        log.warning("%d images kept with warnings:", len(s.warnings))
        for rel, msg in s.warnings:
            log.warning("  warning %s: %s", rel, msg)


# ---- command line -----------------------------------------------------------------------------
HELP = "convert images (a Caffe list or an ImageNet class tree) to an LMDB of Datum (convert_imageset)"
EXAMPLES = ("  netspec convert-imagenet -resize_height=256 -resize_width=256 -shuffle "
            "ilsvrc12/train/ train.txt ilsvrc12_train_lmdb\n"
            "  netspec convert-imagenet --synsets synsets.txt --workers 8 ilsvrc12/train "
            "ilsvrc12_train_lmdb\n")
_TRUE, _FALSE = ("true", "1", "yes", "t", "y"), ("false", "0", "no", "f", "n")


class GflagsBool(argparse.Action):
    """A gflags boolean: `--gray`, `--gray=true`, `--gray=false` (and `--nogray`, declared separately).

    argparse hands a bare `--gray` the next word when that is not an option; a word that is not
    true/false is a path, kept for run() in front of or behind the positionals, by where it stood.
    """

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs="?", const=True, default=False, **kw)

    def __call__(self, parser, ns, value, option_string=None):
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            value = value.lower() in _TRUE
        elif isinstance(value, str):
            side = "paths_before" if getattr(ns, "paths", None) is None else "paths_after"
            setattr(ns, side, (getattr(ns, side, None) or []) + [value])
            value = True
        setattr(ns, self.dest, value)


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", action=GflagsBool, metavar="BOOL", help=help)
    p.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="ROOTFOLDER/ LISTFILE DB_NAME (Caffe's form) or TRAIN_DIR DB_NAME (class folders)")
    p.add_argument("--resize_height", type=int, default=None,
                   help="height images are resized to (list mode: 0 = keep, as Caffe; tree mode: 256)")
    p.add_argument("--resize_width", type=int, default=None, help="width images are resized to (as above)")
    _bool_flag(p, "gray", "treat images as grayscale (1 channel)")
    _bool_flag(p, "shuffle", "shuffle the images (seeded by --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --shuffle (default 0)")
    _bool_flag(p, "encoded", "store encoded image bytes instead of pixels")
    p.add_argument("--encode_type", default="",
                   help="encode as this type ('jpg', 'png', ...); implies --encoded")
    _bool_flag(p, "check_size", "check that all records have the same size")
    p.add_argument("--backend", default="lmdb", help="only lmdb is supported")
    p.add_argument("--synsets", default=None, help="tree mode: wnid per line; line number = label")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (default: all cores)")
    _bool_flag(p, "resume", "continue an interrupted conversion")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cli_paths(args) -> list[str]:
    """The positional paths, with those a bare boolean flag took back in their places (GflagsBool)."""
    before, after = getattr(args, "paths_before", None), getattr(args, "paths_after", None)
    return (before or []) + args.paths + (after or [])


def run(args) -> int:
    if args.backend.lower() != "lmdb":
        raise NetspecError(f"--backend {args.backend} is not supported: netspec writes LMDB only")
    paths = cli_paths(args)
    if len(paths) == 3:
        root, listfile, db_path = paths
        lines, default_size = read_listfile(listfile), 0
    elif len(paths) == 2:
        root, db_path = paths
        lines, default_size = imagenet_list(root, args.synsets), 256
    else:
        raise NetspecError("expected ROOTFOLDER/ LISTFILE DB_NAME or TRAIN_DIR DB_NAME, got "
                           f"{len(paths)} paths")
    size = lambda v: max(0, default_size if v is None else v)  # noqa: E731 (Caffe clamps negatives to 0)
    opt = Options(resize_height=size(args.resize_height), resize_width=size(args.resize_width),
                  gray=args.gray, encoded=args.encoded or bool(args.encode_type),
                  encode_type=args.encode_type, check_size=args.check_size)
    log.info("A total of %d images.", len(lines))
    convert(root, lines, db_path, opt, shuffle=args.shuffle, seed=args.seed,
            workers=args.workers if args.workers else None, resume=args.resume, progress=not args.quiet)
    return 0
