"""Caffe's WindowData layer (src/caffe/layers/window_data_layer.cpp): R-CNN's training windows.

The window file repeats, per image: `# image_index`, the image path (prefixed by root_folder),
channels, height, width, the number of windows, then one `label overlap x1 y1 x2 y2` per window
(pixel corners, inclusive). A window with overlap >= fg_threshold is foreground (its label must be
positive); one with overlap < bg_threshold is background (label 0); others are unused.

Each batch draws int(batch_size * fg_fraction) foreground windows and the rest background, background
first, each window uniformly at random, then a mirror coin when mirror is set (in every phase, as
Caffe). A window is cut from the colour image and warped to crop_size x crop_size with INTER_LINEAR;
with context_pad or crop_mode "square" the box is first grown (square: to its longer side) so that
after warping context_pad pixels of context surround it, clipped to the image, the clipped part
becoming zero padding (mirrored with the window). Pixels become (pixel - mean) * scale, the mean
from mean_file (its centre crop_size window, offset as the padding) or mean_value per channel;
padding stays 0. crop_size, mirror, mean_file and mean_value come from transform_param, or from
window_data_param's legacy fields where transform_param leaves them unset; scale is
window_data_param.scale, the one Caffe's load_batch reads. The draws are netspec's (seeded per layer
and batch), not Caffe's. Images that cannot be read, windows outside their image and an image index
out of sequence are one-line errors naming the window file and line.
"""
from __future__ import annotations

import logging
import math
from functools import partial

import cv2
import numpy as np

from ..data.mean import load_mean
from ..errors import NetspecError
from .base import register
from .prefetch import PrefetchSource

log = logging.getLogger("netspec.layers.window_data")


def _cround(x) -> int:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), float(x)))


def parse_window_file(path, layer: str, fg_threshold: float, bg_threshold: float):
    """([(image path, line)], foreground windows, background windows); a window is
    (image, label, overlap, x1, y1, x2, y2) as a float array row, as Caffe keeps them."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NetspecError(f"cannot read the window file: {e}", file=path, layer=layer) from None
    tokens = [(tok, n) for n, line in enumerate(lines, 1) for tok in line.split()]
    pos = 0

    def take(kind, what):
        nonlocal pos
        if pos >= len(tokens):
            raise NetspecError(f"ends where {what} was expected", file=path, line=len(lines), layer=layer)
        tok, n = tokens[pos]
        pos += 1
        try:
            return kind(tok), n
        except ValueError:
            raise NetspecError(f"expected {what}, found '{tok}'", file=path, line=n, layer=layer) from None

    images, fg, bg = [], [], []
    while pos < len(tokens):
        tag, n = take(str, "'#'")
        if tag != "#":
            raise NetspecError(f"expected '# image_index', found '{tag}'", file=path, line=n, layer=layer)
        index, n = take(int, "an image index")
        if index != len(images):
            raise NetspecError(f"image index {index} out of sequence (expected {len(images)}): Caffe looks "
                               "images up by this number", file=path, line=n, layer=layer)
        name, n = take(str, "an image path")
        channels = take(int, "the image's channels")[0]
        take(int, "the image's height"), take(int, "the image's width")
        if channels != 3:
            raise NetspecError(f"image '{name}' has {channels} channels; WindowData reads images in colour "
                               "(3)", file=path, line=n, layer=layer)
        images.append((name, n))
        for _ in range(take(int, "the number of windows")[0]):
            label, n = take(int, "a window's label")
            overlap = take(float, "a window's overlap")[0]
            box = [take(int, "a window corner")[0] for _ in range(4)]
            if overlap >= fg_threshold:
                if label <= 0:
                    raise NetspecError(f"foreground window (overlap {overlap:g}) has label {label}; it must be "
                                       "positive", file=path, line=n, layer=layer)
                fg.append([index, label, overlap, *box])
            elif overlap < bg_threshold:
                bg.append([index, 0, 0, *box])
    return images, np.array(fg, np.float32).reshape(-1, 7), np.array(bg, np.float32).reshape(-1, 7)


@register("WindowData")
class WindowData(PrefetchSource):
    def setup(self, bottom_shapes):
        p = self.param
        if p.batch_size <= 0:
            raise self.error("window_data_param.batch_size must be positive")
        if not p.source:
            raise self.error("window_data_param.source is not set")
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"crop_mode must be 'warp' or 'square', found '{p.crop_mode}'")
        tp, legacy = self.lp.transform_param, p
        self.crop = int(tp.crop_size if tp.HasField("crop_size") else legacy.crop_size)
        self.mirror = bool(tp.mirror if tp.HasField("mirror") else legacy.mirror)
        if self.crop <= 0:
            raise self.error("WindowData needs a positive crop_size (transform_param.crop_size)")
        if 2 * int(p.context_pad) >= self.crop:
            raise self.error(f"context_pad {p.context_pad} leaves nothing of crop_size {self.crop}")
        if tp.HasField("scale"):
            log.warning("layer '%s': WindowData scales by window_data_param.scale, not transform_param.scale",
                        self.name)
        self.batch_size, self.scale = int(p.batch_size), np.float32(p.scale)
        self.window_path = self.find(p.source, "window file")
        self.images, self.fg, self.bg = parse_window_file(self.window_path, self.name, p.fg_threshold,
                                                          p.bg_threshold)
        if not len(self.fg) or not len(self.bg):
            raise self.error(f"window file '{self.window_path}' has {len(self.fg)} foreground and "
                             f"{len(self.bg)} background windows; each batch needs both")
        self.mean, self.mean_values = self._means(tp, legacy)
        self.cache = [self._read_bytes(i) for i in range(len(self.images))] if p.cache_images else None
        log.info("layer '%s': %d images, %d foreground and %d background windows", self.name, len(self.images),
                 len(self.fg), len(self.bg))

    def infer_top_shapes(self, bottom_shapes):
        return [(self.batch_size, 3, self.crop, self.crop), (self.batch_size,)]

    def _means(self, tp, legacy):
        mean_file = tp.mean_file if tp.HasField("mean_file") else legacy.mean_file
        values = np.asarray(tp.mean_value, np.float32)
        if mean_file and len(values):
            raise self.error("cannot specify mean_file and mean_value at the same time")
        if len(values) not in (0, 1, 3):
            raise self.error(f"mean_value has {len(values)} values for 3-channel images: give 1 or 3")
        if not mean_file:
            return None, (np.repeat(values, 3) if len(values) == 1 else values)
        mean = load_mean(self.find(mean_file, "mean_file"))
        # Caffe offsets rows and columns alike by (mean width - crop_size) / 2
        if mean.shape[0] != 3 or mean.shape[2] < self.crop or mean.shape[1] < (mean.shape[2] + self.crop) // 2:
            raise self.error(f"mean_file is {'x'.join(map(str, mean.shape))}; WindowData needs 3 channels "
                             f"and a centred crop_size {self.crop} window inside it")
        return mean, values

    # ---- images -----------------------------------------------------------------------------------
    def _where(self, i: int) -> tuple[str, int]:
        name, line = self.images[i]
        return self.param.root_folder + name, line

    def _read_bytes(self, i: int) -> bytes:
        path, line = self._where(i)
        try:
            with open(self.at_setup_cwd(path), "rb") as f:
                return f.read()
        except OSError:
            raise NetspecError(f"cannot read image '{path}'", file=self.window_path, line=line,
                               layer=self.name) from None

    def _image(self, i: int) -> np.ndarray:
        """The colour image (HWC, BGR) of image i, decoded from the cache or read from disk."""
        raw = self.cache[i] if self.cache is not None else self._read_bytes(i)
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            path, line = self._where(i)
            raise NetspecError(f"cannot decode image '{path}'", file=self.window_path, line=line, layer=self.name)
        return img

    # ---- batches ----------------------------------------------------------------------------------
    def rewind(self, batches: int) -> None:
        """Nothing to move: batch k's draws depend on (seed, k) alone."""

    def make_job(self, k: int):
        return partial(self._load_batch, np.random.default_rng((self.seed, k)))

    def _load_batch(self, rng) -> tuple[np.ndarray, np.ndarray]:
        num_fg = int(np.float32(self.batch_size) * np.float32(self.param.fg_fraction))
        data = np.zeros((self.batch_size, 3, self.crop, self.crop), np.float32)
        labels = np.empty(self.batch_size, np.float32)
        item = 0
        for windows, count in ((self.bg, self.batch_size - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = windows[int(rng.integers(1 << 32)) % len(windows)]
                mirror = self.mirror and bool(int(rng.integers(1 << 32)) % 2)
                self._warp(window, mirror, data[item])
                labels[item] = window[1]
                item += 1
        return data, labels

    def _region(self, window, mirror: bool, rows: int, cols: int):
        """(x1, y1, x2, y2) to cut, the warped size (w, h) and the padding offsets (pad_w, pad_h)."""
        x1, y1, x2, y2 = (int(v) for v in window[3:7])
        crop, pad = self.crop, int(self.param.context_pad)
        if not pad and self.param.crop_mode != "square":
            return (x1, y1, x2, y2), (crop, crop), (0, 0)
        f = np.float32
        context_scale = f(crop) / f(crop - 2 * pad)
        half_h, half_w = f((y2 - y1 + 1) / 2.0), f((x2 - x1 + 1) / 2.0)
        cx, cy = f(x1) + half_w, f(y1) + half_h
        if self.param.crop_mode == "square":
            half_h = half_w = max(half_h, half_w)
        x1, x2 = _cround(cx - half_w * context_scale), _cround(cx + half_w * context_scale)
        y1, y2 = _cround(cy - half_h * context_scale), _cround(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        px1, py1 = max(0, -x1), max(0, -y1)
        px2, py2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = f(crop) / f(unclipped_w), f(crop) / f(unclipped_h)
        w, h = _cround(f(x2 - x1 + 1) * sx), _cround(f(y2 - y1 + 1) * sy)
        pad_h = _cround(f(py1) * sy)
        pad_w = _cround(f(px2) * sx) if mirror else _cround(f(px1) * sx)   # the padding mirrors too
        return (x1, y1, x2, y2), (min(w, crop - pad_w), min(h, crop - pad_h)), (pad_w, pad_h)

    def _warp(self, window, mirror: bool, out: np.ndarray) -> None:
        img = self._image(int(window[0]))
        rows, cols = img.shape[:2]
        (x1, y1, x2, y2), (w, h), (pad_w, pad_h) = self._region(window, mirror, rows, cols)
        if x1 < 0 or y1 < 0 or x2 >= cols or y2 >= rows or x2 < x1 or y2 < y1 or w <= 0 or h <= 0:
            path, line = self._where(int(window[0]))
            raise NetspecError(f"window ({x1}, {y1}, {x2}, {y2}) does not fit image '{path}' ({cols}x{rows})",
                               file=self.window_path, line=line, layer=self.name)
        patch = cv2.resize(img[y1:y2 + 1, x1:x2 + 1], (w, h), interpolation=cv2.INTER_LINEAR)
        if mirror:
            patch = patch[:, ::-1]
        pixels = patch.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            off = (self.mean.shape[2] - self.crop) // 2
            pixels -= self.mean[:, off + pad_h:off + pad_h + h, off + pad_w:off + pad_w + w]
        elif len(self.mean_values):
            pixels -= self.mean_values[:, None, None]
        out[:, pad_h:pad_h + h, pad_w:pad_w + w] = pixels * self.scale
