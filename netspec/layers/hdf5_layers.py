"""Caffe's HDF5Data and HDF5Output layers (src/caffe/layers/hdf5_data_layer.cpp,
hdf5_output_layer.cpp, src/caffe/util/hdf5.cpp).

HDF5Data: `source` is a text file naming .h5 files (whitespace-separated, as Caffe reads it with >>).
Each top reads the dataset of its own name; every dataset of a file has the same number of rows, and
a top is batch_size x (the dataset's shape after its first axis). Batches take rows in order, run
across the end of one file into the next and wrap from the last file to the first, as Caffe's Next();
one file is in memory at a time. shuffle permutes the file order at start and at every wrap, and the
rows of a file each time it is loaded and each time its rows start over (Caffe's random_shuffle
points; the draws are netspec's, seeded per layer). Integer datasets are read as float32, as
H5LTread_dataset_float converts them. With several training processes rank r keeps rows r, r+W, ...
(HDF5DataLayer::Skip). Relative names are taken from the current directory as in Caffe, else from
the prototxt's folder, else from the list file's folder. transform_param is refused, as in Caffe.
For exact resume the layer reports the batches it served and its seed (netspec.solver.resume).

HDF5Output writes its two bottoms as datasets "data" and "label" of `file_name`, each in Caffe's
legacy 4-D shape (num, channels, height, width: missing trailing axes are 1). Caffe creates the file
at setup and fails on a second forward (the datasets exist); netspec rewrites the file with the
latest batch on every forward (atomically), and checks at setup that its folder exists.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import NetspecError
from ..formats.atomic import atomic_open
from ..proto import pb
from .base import Layer, register
from .prefetch import find_file, read_seeded_state, seeded_state

log = logging.getLogger("netspec.layers.hdf5")


def _shape(s) -> str:
    return "x".join(str(int(d)) for d in s) or "scalar"


def _rank_world(phase: int) -> tuple[int, int]:
    """This process's share of a TRAIN net's rows (Caffe's solver_rank / solver_count)."""
    if phase == 0 and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@register("HDF5Data")
class HDF5Data(Layer):
    exact_bottoms, min_tops = 0, 1
    is_data = True

    def __init__(self, lp, bottom_shapes=(), phase=0, source_dir=None):
        super().__init__(lp, list(bottom_shapes), phase, source_dir=source_dir)

    # ---- set up -----------------------------------------------------------------------------------
    def setup(self, bottom_shapes):
        p = self.param
        if self.lp.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data: remove transform_param")
        if p.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        if not p.source:
            raise self.error("hdf5_data_param.source is not set")
        self.batch_size, self.shuffle = int(p.batch_size), bool(p.shuffle)
        self.list_path = find_file(self, p.source, "source list")
        self.files = self._read_list(self.list_path)
        self.seed = (torch.initial_seed() + zlib.crc32(self.name.encode())) % (1 << 63)
        self.rank, self.world = _rank_world(self.phase)
        self.row_shapes = None
        self.rewind(0)
        self.row_shapes = [a.shape[1:] for a in self.arrays]

    def rewind(self, batches: int) -> None:
        """Back to the first row as set up from the seed, then `batches` batches on (exact resume)."""
        self.rng = np.random.default_rng(self.seed)
        self.order = self.rng.permutation(len(self.files)) if self.shuffle else np.arange(len(self.files))
        self.file_k, self.row, self.offset, self.served = 0, 0, 0, 0
        self._load()
        for _ in range(batches):
            self._batch_rows()

    def infer_top_shapes(self, bottom_shapes):
        return [(self.batch_size,) + tuple(s) for s in self.row_shapes]

    def _read_list(self, path: Path) -> list[tuple[Path, int]]:
        files = []
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise self.error(f"cannot read source list '{path}': {e}") from None
        for n, line in enumerate(lines, 1):
            for token in line.split():
                try:
                    files.append((find_file(self, token, "HDF5 file", [path.parent]), n))
                except NetspecError as e:
                    raise NetspecError(e.message, file=path, line=n, layer=self.name) from None
        if not files:
            raise self.error(f"source list '{path}' names no HDF5 file")
        log.info("layer '%s': %d HDF5 file(s) listed in %s", self.name, len(files), path)
        return files

    # ---- reading files ----------------------------------------------------------------------------
    def _load(self) -> None:
        """Caffe's LoadHDF5FileData: the tops' datasets of the current file, checked, rows permuted."""
        import h5py

        path, line = self.files[self.order[self.file_k]]
        try:
            with h5py.File(path, "r") as f:
                self.arrays = [self._dataset(f, path, top, i) for i, top in enumerate(self.lp.top)]
        except OSError as e:
            raise NetspecError(f"cannot read HDF5 file '{path}' ({e})", file=self.list_path, line=line,
                               layer=self.name) from None
        rows = len(self.arrays[0])
        for top, a in zip(self.lp.top, self.arrays):
            if len(a) != rows:
                raise self.run_error(f"HDF5 file '{path}': dataset '{top}' has {len(a)} rows, dataset "
                                 f"'{self.lp.top[0]}' {rows}; every top's dataset needs the same row count")
        if rows == 0:
            raise self.run_error(f"HDF5 file '{path}': dataset '{self.lp.top[0]}' has no rows")
        self.perm = self.rng.permutation(rows) if self.shuffle else np.arange(rows)

    def _dataset(self, f, path, name: str, i: int) -> np.ndarray:
        import h5py

        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise self.run_error(f"HDF5 file '{path}' has no dataset '{name}' (each top reads the dataset of its "
                             f"name; the file has: {', '.join(sorted(f.keys())) or 'nothing'})")
        if ds.ndim < 1:
            raise self.run_error(f"HDF5 file '{path}': dataset '{name}' is a scalar; it needs at least 1 axis")
        if ds.dtype.kind not in "fiub":
            raise self.run_error(f"HDF5 file '{path}': dataset '{name}' has type {ds.dtype}; float or integer "
                             "datasets only")
        if self.row_shapes is not None and ds.shape[1:] != self.row_shapes[i]:
            raise self.run_error(f"HDF5 file '{path}': dataset '{name}' has rows of shape {_shape(ds.shape[1:])}, "
                             f"the first file's '{name}' {_shape(self.row_shapes[i])}")
        return np.asarray(ds[()], dtype=np.float32)

    # ---- batches ----------------------------------------------------------------------------------
    def _next(self) -> None:
        """Caffe's HDF5DataLayer::Next: the next row, the next file after the last row."""
        self.row += 1
        if self.row == len(self.arrays[0]):
            if len(self.files) > 1:
                self.file_k += 1
                if self.file_k == len(self.files):
                    self.file_k = 0
                    if self.shuffle:
                        self.order = self.rng.permutation(self.order)
                self._load()
            self.row = 0
            if self.shuffle:
                self.perm = self.rng.permutation(self.perm)
        self.offset += 1

    def _batch_rows(self) -> list[tuple[list, list]]:
        """The next batch's rows as (a file's arrays, row indices) segments, in batch order."""
        segments: list[tuple[list, list]] = []
        for _ in range(self.batch_size):
            while self.offset % self.world != self.rank:   # another process's row
                self._next()
            if not segments or segments[-1][0] is not self.arrays:
                segments.append((self.arrays, []))
            segments[-1][1].append(self.perm[self.row])
            self._next()
        self.served += 1
        return segments

    def data_state(self, net: str) -> pb.DataLayerState:
        """Batches served and the seed of the shuffles, for exact resume (netspec.solver.resume)."""
        return seeded_state(self, net, self.offset, self.seed, self.served)

    def restore_data_state(self, state: pb.DataLayerState, rank: int = 0) -> None:
        seed, batches = read_seeded_state(self, state)
        self.seed = seed
        self.rewind(batches)

    def forward(self):
        segments = self._batch_rows()
        device = self._anchor.device
        tops = [torch.from_numpy(np.concatenate([arrays[j][rows] for arrays, rows in segments])).to(device)
                for j in range(len(self.lp.top))]
        return tops[0] if len(tops) == 1 else tuple(tops)


@register("HDF5Output")
class HDF5Output(Layer):
    exact_bottoms, exact_tops = 2, 0

    def setup(self, bottom_shapes):
        self.file_name = self.param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        folder = Path(self.file_name).parent
        if not folder.is_dir():
            raise self.error(f"cannot write '{self.file_name}': folder '{folder}' does not exist")
        for what, shape in zip(("data", "label"), bottom_shapes):
            if len(shape) > 4:
                raise self.shape_error(f"bottom '{what}' has {len(shape)} axes ({_shape(shape)}); HDF5Output "
                                       "writes Caffe's 4-D blobs")
        if bottom_shapes[0][:1] != bottom_shapes[1][:1]:
            raise self.shape_error(f"data ({_shape(bottom_shapes[0])}) and label ({_shape(bottom_shapes[1])}) "
                                   "must have the same batch size")

    def infer_top_shapes(self, bottom_shapes):
        return []

    def forward(self, data, label):
        import h5py

        arrays = [t.detach().to("cpu", torch.float32).numpy() for t in (data, label)]
        with atomic_open(self.file_name, "w+b") as raw, h5py.File(raw, "w") as f:
            for name, a in zip(("data", "label"), arrays):
                f.create_dataset(name, data=a.reshape(a.shape + (1,) * (4 - a.ndim)))
        log.info("layer '%s': saved %d rows to %s", self.name, len(arrays[0]), self.file_name)
        return ()
