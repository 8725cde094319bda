"""Caffe's ImageData layer (src/caffe/layers/image_data_layer.cpp, ReadImageToCVMat in
src/caffe/util/io.cpp): batches of image files named in a list file, transformed as the Data layer's.

List lines are "path label": the label follows the last space, so paths may hold spaces. The list is
read as netspec's convert-imageset reads one: a label that is not an integer (Caffe's atoi would
silently make it 0, or a label-less line's path its label) or a blank line is refused with the
list's file:line. Images are `root_folder + path` (string concatenation, as Caffe), read with OpenCV in BGR
order (IMREAD_GRAYSCALE when is_color is false), resized to new_height x new_width with cv::resize's
INTER_LINEAR when both are set, then transformed by netspec.data.transform.DataTransformer
(crop/mirror/mean/scale from transform_param; ImageDataParameter's own legacy scale/mean_file/
crop_size/mirror fill in fields transform_param leaves unset, as the Data layer does). An image that
cannot be read is an error naming the list file and line (Caffe's CHECK "Could not load").

Order: the list's, or shuffled at setup and at every wrap when shuffle is set (seeded per layer;
Caffe's draws differ); rand_skip starts at a random line below rand_skip. Tops: data, with the shape of
each batch's first image as in Caffe, and labels N (float32). Batches are read by a small thread pool
a few batches ahead (OpenCV releases the GIL); each batch draws crops and mirrors from a generator
seeded by (layer seed, batch index), so results do not depend on thread timing.
"""
from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from ..data.convert import read_listfile
from ..data.transform import DataTransformer
from ..errors import NetspecError
from ..proto import pb
from .base import register
from .prefetch import PrefetchSource

log = logging.getLogger("netspec.layers.image_data")

_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")


def read_image(path: str, new_height: int, new_width: int, is_color: bool) -> np.ndarray | None:
    """Caffe's ReadImageToCVMat as a CHW uint8 array (BGR or one channel); None if unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    if new_height > 0 and new_width > 0:
        img = cv2.resize(img, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    return (img[:, :, None] if img.ndim == 2 else img).transpose(2, 0, 1)


def parse_list(path: Path, layer: str) -> list[tuple[str, int, int]]:
    """(image path, label, line number) for each line of an ImageData list file, read as
    convert_imageset's list (netspec.data.convert.read_listfile); a blank line is refused here."""
    try:
        lines = read_listfile(path)
    except NetspecError as e:
        raise NetspecError(e.message, file=e.file, line=e.line, layer=layer) from None
    items = []
    for n, (name, label) in enumerate(lines, 1):
        if not name:
            raise NetspecError("empty line; each line is 'path label'", file=path, line=n, layer=layer)
        items.append((name, label, n))
    if not items:
        raise NetspecError("the image list is empty", file=path, layer=layer)
    return items


@register("ImageData")
class ImageData(PrefetchSource):
    def setup(self, bottom_shapes):
        p = self.param
        self.new_height, self.new_width, self.is_color = int(p.new_height), int(p.new_width), bool(p.is_color)
        if (self.new_height > 0) != (self.new_width > 0):
            raise self.error("new_height and new_width must be set together (found "
                             f"{self.new_height} and {self.new_width})")
        if p.batch_size <= 0:
            raise self.error("image_data_param.batch_size must be positive")
        if not p.source:
            raise self.error("image_data_param.source is not set")
        self.batch_size = int(p.batch_size)
        self.list_path = self.find(p.source, "image list")
        self.items = parse_list(self.list_path, self.name)
        self.rewind(0)
        self.root = self._root(p.root_folder)
        tp = self._transform_param()
        mean = self.find(tp.mean_file, "mean_file") if tp.mean_file else None
        self.transformer = DataTransformer(tp, self.phase, mean, name=self.name)
        first = self._read(self.order[self.pos])
        self.record_shape = self._checked(lambda: self.transformer.output_shape(first.shape))

    def infer_top_shapes(self, bottom_shapes):
        return [(self.batch_size,) + tuple(self.record_shape), (self.batch_size,)]

    def _checked(self, fn):
        try:
            return fn()
        except NetspecError as e:
            raise e if e.layer else self.run_error(str(e)) from None

    def _transform_param(self) -> pb.TransformationParameter:
        tp = pb.TransformationParameter()
        tp.CopyFrom(self.lp.transform_param)
        for f in _LEGACY_TRANSFORM:
            if self.param.HasField(f) and not tp.HasField(f):
                setattr(tp, f, getattr(self.param, f))
        return tp

    def rewind(self, batches: int) -> None:
        """The cursor as set up from the seed (shuffle, rand_skip), then `batches` batches on."""
        self.rng = np.random.default_rng(self.seed)
        self.order = self._shuffled(np.arange(len(self.items)))
        self.pos = self._skip(int(self.param.rand_skip))
        for _ in range(batches):
            self._take()

    def cursor(self):
        return self.order, self.pos, self.rng.bit_generator.state   # a wrap makes a new order array

    def set_cursor(self, cursor) -> None:
        self.order, self.pos, self.rng.bit_generator.state = cursor

    def _shuffled(self, order: np.ndarray) -> np.ndarray:
        return self.rng.permutation(order) if self.param.shuffle else order

    def _skip(self, rand_skip: int) -> int:
        if not rand_skip:
            return 0
        skip = int(self.rng.integers(rand_skip))
        if skip >= len(self.items):
            raise self.error(f"rand_skip drew {skip} but the list has only {len(self.items)} images")
        log.info("layer '%s': skipping the first %d images", self.name, skip)
        return skip

    def _root(self, root_folder: str) -> str:
        """The prefix of image names: root_folder as given when the first image exists from the current
        directory (Caffe), else the same under the prototxt's or the list's folder."""
        first = root_folder + self.items[self.order[self.pos]][0]
        if Path(first).is_absolute() or Path(first).exists():
            return root_folder
        for base in (self.source_dir, self.list_path.parent):
            if base is not None and (Path(base) / first).exists():
                log.info("layer '%s': images not found from the current directory; reading them under %s",
                         self.name, base)
                return os.path.join(str(base), root_folder)
        return root_folder

    def _read(self, i: int) -> np.ndarray:
        name, _, line = self.items[i]
        img = read_image(self.at_setup_cwd(self.root + name), self.new_height, self.new_width, self.is_color)
        if img is None:
            raise NetspecError(f"cannot read image '{self.root + name}' (missing or not an image)",
                               file=self.list_path, line=line, layer=self.name)
        return img

    # ---- batches ----------------------------------------------------------------------------------
    def _take(self) -> list[int]:
        """The next batch_size lines (wrapping to the first, reshuffled at each wrap)."""
        picked = []
        for _ in range(self.batch_size):
            picked.append(int(self.order[self.pos]))
            self.pos += 1
            if self.pos == len(self.order):
                self.pos = 0
                self.order = self._shuffled(self.order)
        return picked

    def make_job(self, k: int):
        return partial(self._load_batch, self._take(), np.random.default_rng((self.seed, k)))

    def _load_batch(self, picked: list[int], rng) -> tuple[np.ndarray, np.ndarray]:
        first = self._read(picked[0])
        shape = self._checked(lambda: self.transformer.output_shape(first.shape))
        data = np.empty((len(picked),) + tuple(shape), np.float32)
        for j, i in enumerate(picked):
            img = first if j == 0 else self._read(i)
            name, _, line = self.items[i]
            try:
                self.transformer(img, rng, data[j], key=name)
            except NetspecError as e:
                raise NetspecError(e.message, file=self.list_path, line=line, layer=self.name) from None
        return data, np.array([self.items[i][1] for i in picked], np.float32)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, source='{self.param.source}', batch_size={self.batch_size}"
