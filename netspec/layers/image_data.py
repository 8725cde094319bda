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

import json
import logging
import os
import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from ..data.convert import read_listfile
from ..data.transform import DataTransformer
from ..errors import NetspecError
from ..proto import pb
from .base import Layer, register

log = logging.getLogger("netspec.layers.image_data")

_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")


class Prefetcher:
    """Runs batch jobs `depth` ahead on a thread pool. `make_job(k)` is called in order on the
    caller's thread (so cursors and shuffles advance deterministically) and returns the function
    that builds batch k on a worker."""

    def __init__(self, make_job, start: int = 0, depth: int = 4, workers: int | None = None):
        self.make_job, self.depth, self.k = make_job, max(1, depth), start
        self.pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1), thread_name_prefix="netspec-data")
        self.queue: deque = deque()

    def next(self):
        while len(self.queue) < self.depth:
            self.queue.append(self.pool.submit(self.make_job(self.k)))
            self.k += 1
        return self.queue.popleft().result()

    def close(self) -> None:
        for f in self.queue:
            f.cancel()
        self.queue.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


class PrefetchSource(Layer):
    """A data layer whose batches come from a Prefetcher started on first forward; subclasses define
    `make_job(k)` (see Prefetcher) returning (data float32 array, labels float32 array), and
    `rewind(batches)`, which puts their cursor where it stands after `batches` batches were taken.

    For exact resume (netspec.solver.resume) the layer reports the batches it has served and its seed
    in a DataLayerState; restoring rewinds to that batch, so the resumed run reads what the
    uninterrupted one would have, with the same random draws."""

    exact_bottoms, exact_tops = 0, 2
    is_data = True

    def __init__(self, lp, bottom_shapes=(), phase=pb.TRAIN, source_dir=None):
        self.seed = (torch.initial_seed() + zlib.crc32(lp.name.encode())) % (1 << 63)
        super().__init__(lp, list(bottom_shapes), phase, source_dir=source_dir)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # follows .to(device)
        self._reader = None
        self.served = 0   # batches forward has returned
        self._marks: dict = {}   # batch index -> the cursor before its job was made

    def find(self, name: str, what: str, extra_dirs=()) -> Path:
        """`name` from the current directory (Caffe), else from the prototxt's folder or `extra_dirs`."""
        p = Path(name)
        tried = [p] + ([] if p.is_absolute() else [Path(d) / p for d in (self.source_dir, *extra_dirs) if d])
        for q in tried:
            if q.exists():
                return q
        raise self.error(f"{what} '{name}' does not exist (looked in "
                         + ", ".join(f"'{q.parent}'" if str(q.parent) != "." else "the current directory"
                                     for q in tried) + ")")

    def forward(self):
        if self._reader is None:
            self._reader = Prefetcher(self._job, start=self.served)
        data, label = self._reader.next()
        self._marks.pop(self.served, None)
        self.served += 1
        device = self._anchor.device
        return torch.from_numpy(data).to(device), torch.from_numpy(label).to(device)

    def _job(self, k: int):
        self._marks[k] = self.cursor()
        return self.make_job(k)

    def cursor(self):
        """What make_job advances (None: nothing, each batch's draws depend on (seed, k) alone)."""
        return None

    def set_cursor(self, cursor) -> None:
        """Put back what `cursor()` returned."""

    def data_state(self, net: str) -> pb.DataLayerState:
        """Batches served (`position` and `extra`) and the seed of this layer's draws (`rng_state`)."""
        return pb.DataLayerState(net=net, layer=self.name, position=self.served,
                                 rng_state=struct.pack("<Q", self.seed),
                                 extra=json.dumps({"batches": self.served}).encode())

    def restore_data_state(self, state: pb.DataLayerState, rank: int = 0) -> None:
        try:
            batches = int(json.loads(state.extra.decode())["batches"])
            seed = struct.unpack("<Q", state.rng_state)[0]
        except (ValueError, KeyError, TypeError, struct.error):
            raise self.error("the solver state's data_state for this layer is damaged") from None
        self.close()
        self.seed, self.served = seed, batches
        self.rewind(batches)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            if self.served in self._marks:   # prefetched batches were not served: take them again
                self.set_cursor(self._marks[self.served])
            self._marks.clear()

    def __getstate__(self):
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_reader"] = None  # threads do not copy; a copy starts its own
        return state


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
        img = read_image(self.root + name, self.new_height, self.new_width, self.is_color)
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
