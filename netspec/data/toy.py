"""A toy ImageNet: a small tree of real JPEG files in ILSVRC-2012's layout, drawn procedurally.

    ROOT/train/<wnid>/<wnid>_<i>.JPEG   training images, one folder per class
    ROOT/val/ILSVRC2012_val_<n>.JPEG    validation images, flat
    ROOT/train.txt, ROOT/val.txt        Caffe's lists ("path label", as data/ilsvrc12/*.txt)
    ROOT/synsets.txt                    one wnid per line; line number = label (data/ilsvrc12/synsets.txt)
    ROOT/synset_words.txt               "wnid description" per line

Every class has its own shape, colour and orientation; position, size, background, clutter lines and
noise vary per image, and image sizes vary (60-120 px by default) so resizing matters. The classes are
learnable by a small net in minutes. Output depends only on the seed (and OpenCV's JPEG encoder).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from ..errors import NetspecError

SHAPES = ("circle", "triangle", "square", "pentagon", "star", "cross", "ring", "ellipse", "bar", "hexagon")


def wnid(k: int) -> str:
    return f"n{k:08d}"


def _class_style(k: int) -> tuple[str, float, float]:
    """(shape, hue in OpenCV's 0..180, orientation in degrees) of class k; distinct for k < 10."""
    return SHAPES[k % len(SHAPES)], (k * 0.618034 % 1.0) * 180.0, (k * 37) % 90


def _polygon(shape: str, r: float) -> np.ndarray:
    """Unit-centred vertices of a polygonal shape of radius r."""
    if shape == "star":
        t = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    if shape == "cross":
        a, b = r, r * 0.33
        return np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b],
                         [-a, b], [-a, -b], [-b, -b]], float)
    if shape == "bar":
        return np.array([[-r, -r * 0.22], [r, -r * 0.22], [r, r * 0.22], [-r, r * 0.22]], float)
    n = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6}[shape]
    t = np.arange(n) * 2 * np.pi / n - np.pi / 2
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def draw(k: int, rng: np.random.Generator, min_size: int = 60, max_size: int = 120) -> np.ndarray:
    """One BGR uint8 image of class k."""
    w, h = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    shape, hue, angle = _class_style(k)
    # background: a random low-saturation gradient
    c0, c1 = rng.integers(40, 215, 3), rng.integers(40, 215, 3)
    ramp = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    img = np.broadcast_to(c0 * (1 - ramp) + c1 * ramp, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(int(rng.integers(0, 4))):  # clutter
        p, q = rng.integers(0, [w, h], (2, 2))
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q),
                 tuple(int(v) for v in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    hsv = np.array([[[(hue + rng.normal(0, 4)) % 180, rng.integers(170, 256), rng.integers(150, 256)]]],
                   np.uint8)
    color = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    r = rng.uniform(0.2, 0.38) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    theta = np.deg2rad(angle + rng.normal(0, 8))
    if shape in ("circle", "ring"):
        cv2.circle(img, (int(cx), int(cy)), int(r), color, -1 if shape == "circle" else max(2, int(r / 3)),
                   cv2.LINE_AA)
    elif shape == "ellipse":
        cv2.ellipse(img, (int(cx), int(cy)), (int(r), int(r * 0.5)), np.rad2deg(theta), 0, 360, color, -1,
                    cv2.LINE_AA)
    else:
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = _polygon(shape, r) @ rot.T + [cx, cy]
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], color, cv2.LINE_AA, shift=4)
    noise = rng.normal(0, rng.uniform(2, 10), img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _write(path: Path, img: np.ndarray, quality: int) -> None:
    if not cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise NetspecError(f"cannot write image '{path}'")


def make_toy_imagenet(root, classes: int = 10, per_class: int = 50, val_per_class: int = 10, seed: int = 0,
                      min_size: int = 60, max_size: int = 120, quality: int = 90) -> dict:
    """Write the toy ImageNet under `root`; returns {'train': n, 'val': n, 'classes': n, 'root': path}."""
    root = Path(root)
    if (root / "train").exists() or (root / "val").exists():
        raise NetspecError(f"'{root}' already holds train/ or val/: choose an empty folder")
    if classes < 1 or per_class < 1 or val_per_class < 0 or not 8 <= min_size <= max_size:
        raise NetspecError("need classes >= 1, per_class >= 1, val_per_class >= 0, 8 <= min_size <= max_size")
    wnids = [wnid(k) for k in range(classes)]
    (root / "val").mkdir(parents=True)
    train_lines = []
    for k, w in enumerate(wnids):
        (root / "train" / w).mkdir(parents=True)
        for i in range(per_class):
            rel = f"{w}/{w}_{i}.JPEG"
            _write(root / "train" / rel, draw(k, np.random.default_rng([seed, 0, k, i]), min_size, max_size),
                   quality)
            train_lines.append(f"{rel} {k}")
    # validation: classes interleaved in a seeded order, numbered like ILSVRC2012_val_00000001.JPEG
    val_labels = np.random.default_rng([seed, 2]).permutation(np.repeat(np.arange(classes), val_per_class))
    val_lines = []
    for n, k in enumerate(val_labels, 1):
        name = f"ILSVRC2012_val_{n:08d}.JPEG"
        img = draw(int(k), np.random.default_rng([seed, 1, n]), min_size, max_size)
        _write(root / "val" / name, img, quality)
        val_lines.append(f"{name} {k}")
    (root / "train.txt").write_text("\n".join(train_lines) + "\n")
    (root / "val.txt").write_text("\n".join(val_lines) + ("\n" if val_lines else ""))
    (root / "synsets.txt").write_text("".join(w + "\n" for w in wnids))
    words = [f"{w} {SHAPES[k % len(SHAPES)]}, class {k}\n" for k, w in enumerate(wnids)]
    (root / "synset_words.txt").write_text("".join(words))
    return {"root": str(root), "classes": classes, "train": len(train_lines), "val": len(val_lines)}


RECORD_SIZE = 64  # the side of the demo's records: its toy net crops 57x57 from 64x64

HELP = "write a small ImageNet-like tree of JPEG files (train/<wnid>/, val/, train.txt, val.txt, synsets)"
EXAMPLES = "  netspec make-toy-imagenet toy_imagenet --classes 10 --per_class 100 --seed 1\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", metavar="ROOT", help="folder to create (must not hold train/ or val/)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--per-class", "--per_class", dest="per_class", type=int, default=50, help="training images per class")
    p.add_argument("--val-per-class", "--val_per_class", dest="val_per_class", type=int, default=10, help="validation images per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the random images (default 0)")
    p.add_argument("--min-size", "--min_size", dest="min_size", type=int, default=60, help="smallest image side in pixels")
    p.add_argument("--max-size", "--max_size", dest="max_size", type=int, default=120, help="largest image side in pixels")


def run(args) -> int:
    s = make_toy_imagenet(args.root, args.classes, args.per_class, args.val_per_class, args.seed,
                          args.min_size, args.max_size)
    print(f"toy ImageNet in {s['root']}: {s['classes']} classes, {s['train']} train and {s['val']} val "
          "images")
    print(f"next: netspec convert-imagenet --resize_height {RECORD_SIZE} --resize_width {RECORD_SIZE} --shuffle "
          f"{s['root']}/train/ {s['root']}/train.txt {s['root']}/train_lmdb")
    return 0
