"""`netspec detect WINDOWS.csv OUT.{csv,h5}`: pycaffe's python/detect.py — classify windows of images
with a Detector (each window cropped with --context_pad pixels of context and warped to the net's
input) and save one row per window: filename, ymin, xmin, ymax, xmax and the class scores.

The input is detect.py's CSV: a header naming filename, xmin, ymin, xmax, ymax (any order), then
one window per line. `--crop_mode selective_search` takes a .txt list of images and gets windows
from the selective_search_ijcv_with_python package (MATLAB), as detect.py; since that is rarely at
hand, `list` is the default here (detect.py's default is selective_search). detect.py writes a pandas DataFrame; here a .csv
has the columns filename, ymin, xmin, ymax, xmax, class0..classC-1, and a .h5 (h5py) holds the
datasets filename, window (N×4: ymin, xmin, ymax, xmax) and prediction (N×C).
"""
from __future__ import annotations

import csv
import time

import numpy as np

from ..errors import NetspecError
from .cmd_classify import add_preprocessing, int_list, load_mean, set_mode

HELP = "classify windows of images with a trained net (pycaffe's python/detect.py)"
EXAMPLES = ("  netspec detect windows.csv det.csv --model_def deploy.prototxt --pretrained_model net.caffemodel"
            " --mean_file ''\n")
COORD_COLS = ["ymin", "xmin", "ymax", "xmax"]


def add_arguments(p) -> None:
    p.add_argument("input_file", help="CSV with header 'filename, xmin, ymin, xmax, ymax', one window a line")
    p.add_argument("output_file", help="output .csv or .h5")
    p.add_argument("--crop_mode", default="list", choices=["list", "selective_search"],
                   help="list: windows from the CSV (default); selective_search: proposals for a .txt of images")
    add_preprocessing(p, "mean of C×H×W or per channel (averaged over H and W, as detect.py).")
    p.add_argument("--context_pad", type=int, default=16, help="context border in input pixels (16)")


def read_windows(path: str) -> list[tuple[str, list[np.ndarray]]]:
    """(filename, [window]) in order of first appearance, windows as ymin, xmin, ymax, xmax."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise NetspecError(f"{path}: cannot be read: {e.strerror}") from None
    if not rows:
        raise NetspecError(f"{path}: empty; expected a header 'filename, xmin, ymin, xmax, ymax'")
    header = [h.strip() for h in rows[0]]
    missing = [c for c in ["filename"] + COORD_COLS if c not in header]
    if missing:
        raise NetspecError(f"{path}:1: the header lacks {', '.join(missing)} (found {', '.join(header)})")
    groups: dict[str, list] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            rec = {h: row[i].strip() for i, h in enumerate(header)}
            window = np.array([int(float(rec[c])) for c in COORD_COLS])
        except (IndexError, ValueError):
            raise NetspecError(f"{path}:{line}: expected {len(header)} fields with integer coordinates, "
                               f"found {row}") from None
        groups.setdefault(rec["filename"], []).append(window)
    return list(groups.items())


def read_image_list(path: str) -> list[str]:
    """detect.py's .txt input: one image file name a line."""
    if not path.lower().endswith("txt"):
        raise NetspecError(f"{path}: --crop_mode selective_search takes a .txt list of images")
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise NetspecError(f"{path}: cannot be read: {e.strerror}") from None


def write_detections(path: str, detections: list[dict]) -> None:
    scores = np.array([d["prediction"] for d in detections]).reshape(len(detections), -1)
    windows = np.array([d["window"] for d in detections], dtype=np.int64).reshape(-1, 4)
    if path.lower().endswith(".csv"):
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["filename"] + COORD_COLS + [f"class{k}" for k in range(scores.shape[1])])
            for d, w, s in zip(detections, windows, scores):
                out.writerow([d["filename"], *w.tolist(), *(repr(float(v)) for v in s)])
        return
    try:
        import h5py
    except ImportError:
        raise NetspecError(f"{path}: writing .h5 needs h5py (pip install h5py), or give a .csv") from None
    with h5py.File(path, "w") as f:
        f["filename"] = np.array([d["filename"] for d in detections], dtype=h5py.string_dtype())
        f["window"], f["prediction"] = windows, scores


def run(args) -> int:
    from ..pycaffe.detector import Detector
    if not args.output_file.lower().endswith((".csv", ".h5", ".hdf5")):
        raise NetspecError(f"{args.output_file}: the output must be .csv or .h5")
    mean = load_mean(args.mean_file)
    if mean is not None and mean.ndim == 3:  # per channel, as detect.py (C×1×1 kept as its C values)
        mean = mean.mean(1).mean(1)
    set_mode(args.gpu)
    detector = Detector(args.model_def, args.pretrained_model, mean=mean, input_scale=args.input_scale,
                        raw_scale=args.raw_scale, channel_swap=int_list(args.channel_swap, "--channel_swap"),
                        context_pad=args.context_pad)
    start = time.time()
    print("Loading input...")
    if args.crop_mode == "selective_search":
        detections = detector.detect_selective_search(read_image_list(args.input_file))
    else:
        detections = detector.detect_windows(read_windows(args.input_file))
    print(f"Processed {len(detections)} windows in {time.time() - start:.3f} s.")
    start = time.time()
    write_detections(args.output_file, detections)
    print(f"Saved to {args.output_file} in {time.time() - start:.3f} s.")
    return 0
