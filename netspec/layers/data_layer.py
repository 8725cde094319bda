"""Caffe's Data layer (src/caffe/layers/data_layer.cpp): batches of Datum records from an LMDB.

No bottoms; tops `data` (N x C x H x W float32, transformed as transform_param says) and optionally
`label` (N float32, as Caffe stores labels). The top shapes come from the first record, as Caffe's
DataLayerSetUp peeks it. `source` and `mean_file` are relative to the current directory as in Caffe;
when not found there they are looked up relative to the prototxt's folder (`source_dir`). Batches
are prepared ahead by netspec.data.reader; on a CUDA layer they are pinned and copied asynchronously.

Records of uint8 pixels can travel as uint8 crops (1 byte per pixel) with each image's offsets,
mirror flag and colour shift, and be normalised on the layer's device (transform.Normaliser, the
host's float32 arithmetic bit for bit): the default on CUDA, NETSPEC_DATA_UINT8 overrides
(data/workers.py). The mode is decided once, from the first record, as the top shapes are.
JPEG records can also be decoded on the layer's device (NETSPEC_DATA_DECODE=device,
data/device_decode.py): off by default, since nvJPEG's pixels are not libjpeg's.
"""
from __future__ import annotations

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..data import db as dbmod
from ..data import device_decode
from ..data.reader import BatchReader, peek
from ..data.staging import Stager, to_device
from ..data.transform import DataTransformer, Normaliser
from ..data.workers import requested_uint8
from ..errors import NetspecError
from ..proto import pb
from .base import Layer, register

log = logging.getLogger("netspec.layers.data")

# DataParameter fields that old prototxts put there instead of in transform_param (Caffe's
# UpgradeNetDataTransformation moves them).
_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")


@register("Data")
class DataLayer(Layer):
    exact_bottoms = 0
    min_tops, max_tops = 1, 2
    is_data = True

    def __init__(self, lp: pb.LayerParameter, bottom_shapes=(), phase: int = pb.TRAIN, source_dir=None):
        super().__init__(lp, list(bottom_shapes), phase, source_dir=source_dir)
        self.seed = (torch.initial_seed() + zlib.crc32(lp.name.encode())) % (1 << 63)
        self._reader = None
        self._stager = None                # CUDA: the next batch, copied on a side stream
        self._normaliser = None            # uint8 mode: the float arithmetic on the device
        self._start = 0  # batches already read by the run a solver state was written from

    # ---- paths ------------------------------------------------------------------------------------
    def resolve(self, path: str, what: str) -> Path:
        """`path` from the current directory as Caffe, else from the prototxt's folder."""
        p = Path(path)
        if p.exists() or p.is_absolute() or self.source_dir is None:
            if not p.exists():
                raise self.error(f"{what} '{path}' does not exist")
            log.info("layer '%s': %s '%s'", self.name, what, p)
            return p
        q = Path(self.source_dir) / p
        if not q.exists():
            raise self.error(f"{what} '{path}' does not exist (looked in the current directory and in "
                             f"'{self.source_dir}')")
        log.info("layer '%s': %s '%s' not in the current directory; using '%s' (relative to the prototxt)",
                 self.name, what, path, q)
        return q

    def _transform_param(self) -> pb.TransformationParameter:
        tp = pb.TransformationParameter()
        tp.CopyFrom(self.lp.transform_param)
        dp = self.lp.data_param
        for f in _LEGACY_TRANSFORM:
            if dp.HasField(f) and not tp.HasField(f):
                setattr(tp, f, getattr(dp, f))
        if dp.force_encoded_color and not tp.HasField("force_color"):
            tp.force_color = True
        return tp

    # ---- Layer hooks ------------------------------------------------------------------------------
    def setup(self, bottom_shapes) -> None:
        dp = self.lp.data_param
        if dp.backend == pb.DataParameter.LEVELDB and dp.HasField("backend"):
            raise self.error("backend LEVELDB is not supported: convert the data to LMDB "
                             "(netspec convert-imagenet) and set backend: LMDB")
        if dp.batch_size <= 0:
            raise self.error("data_param.batch_size must be positive")
        if not dp.source:
            raise self.error("data_param.source is not set")
        self.source = self.resolve(dp.source, "data source")
        if not dbmod.is_lmdb(self.source):
            raise self.error(f"data source '{self.source}' is not an LMDB (no data.mdb inside); LevelDB is "
                             "not supported")
        tp = self._transform_param()
        mean_path = self.resolve(tp.mean_file, "mean_file") if tp.mean_file else None
        try:
            self.transformer = DataTransformer(tp, self.phase, mean_path, name=self.name)
            key, datum = peek(self.source)
            image = self.transformer.array(datum, key)
            self.record_shape = self.transformer.output_shape(image.shape, key)
        except NetspecError as e:
            raise e if e.layer else self.error(str(e)) from None
        self.batch_size = int(dp.batch_size)
        self.uint8_records = image.dtype == np.uint8    # raw bytes or decoded images, not float_data
        self.jpeg_records = bool(datum.encoded) and \
            device_decode.device_shape(datum.data, False, False, key) is not None

    def infer_top_shapes(self, bottom_shapes):
        shapes = [(self.batch_size,) + tuple(self.record_shape), (self.batch_size,)]
        return shapes[:len(self.lp.top)]

    def reader(self) -> BatchReader:
        """The prefetching reader, started on first use (after the net is placed on its device)."""
        if self._reader is None:
            rank, world = 0, 1
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            dp = self.lp.data_param
            on_cuda = self._anchor.device.type == "cuda"
            decode = self._decode_on_device()
            uint8 = decode or (self.uint8_records and requested_uint8(default=on_cuda))
            self._normaliser = Normaliser(self.transformer) if uint8 else None
            self._reader = BatchReader(self.source, self.batch_size, self.transformer, phase=self.phase,
                                       rand_skip=dp.rand_skip, prefetch=dp.prefetch, rank=rank,
                                       world_size=world, seed=self.seed,
                                       pin_memory=on_cuda, start=self._start, uint8=uint8,
                                       decode_on_device=decode)
        return self._reader

    def _decode_on_device(self) -> bool:
        """NETSPEC_DATA_DECODE=device, for a source of JPEG records (its first record is one)."""
        try:
            if device_decode.requested_decode() != "device":
                return False
            if not self.jpeg_records:
                log.info("layer '%s': NETSPEC_DATA_DECODE=device, but the records are not JPEG files the "
                         "device decodes; decoding on the host", self.name)
                return False
            device_decode.check_decoder()
        except NetspecError as e:
            raise self.error(str(e)) from None
        log.info("layer '%s': JPEG records decoded on %s", self.name, self._anchor.device)
        return True

    def forward(self):
        device = self._anchor.device
        try:
            if device.type == "cuda":     # the next batch's copy overlaps this step (data/staging.py)
                if self._stager is None:
                    self._stager = Stager(self.reader().next, device)
                batch = self._stager.next()
            else:
                batch = self.reader().next()
        except NetspecError as e:
            raise e if e.layer else self.error(str(e)) from None
        if device.type != "cuda":     # (a CPU batch's tensors stay as they are: .to() is a no-op)
            try:
                batch = to_device(batch, device)
            except NetspecError as e:
                raise e if e.layer else self.error(str(e)) from None
        data, label = batch[:2]
        if len(batch) == 4:          # uint8 crops: normalised here, on the layer's device
            data = self._normaliser(data, batch[2], batch[3])
        return (data, label) if len(self.lp.top) == 2 else data

    # ---- exact resume (netspec's SolverState.data_state; Caffe restarts at record 0) ---------------
    def data_state(self, net: str) -> pb.DataLayerState:
        """Where this layer's reading stands: batches read (`extra`), the cursor's record index
        (`position`) and the seed of the crops and mirrors (`rng_state`)."""
        batches = self._reader.batches_read if self._reader is not None else self._start
        batches -= self._stager.ahead if self._stager is not None else 0   # copied ahead, not yet used
        state = pb.DataLayerState(net=net, layer=self.name, rng_state=struct.pack("<Q", self.seed),
                                  extra=json.dumps({"batches": batches}).encode())
        state.position = self.reader().position_after(batches) if batches else 0
        return state

    def restore_data_state(self, state: pb.DataLayerState, rank: int = 0) -> None:
        """Continue reading where the snapshot's run stood (the same batch index, hence the same
        crops, mirrors and records). Another rank keeps its own seed: it is rank 0's that was kept."""
        try:
            batches = int(json.loads(state.extra.decode())["batches"])
            seed = struct.unpack("<Q", state.rng_state)[0]
        except (ValueError, KeyError, TypeError, struct.error):
            raise self.error("the solver state's data_state for this layer is damaged") from None
        self.close()
        if rank == 0:
            self.seed = seed
        self._start = batches
        if batches and rank == 0 and self.reader().position_after(batches) != state.position:
            log.warning("layer '%s': the solver state stood at record %d, this source gives %d (was the "
                        "LMDB or the number of processes changed?)", self.name, state.position,
                        self.reader().position_after(batches))

    # ---- lifetime ---------------------------------------------------------------------------------
    def reseed(self, seed: int) -> None:
        """Restart reading from the first record with a new seed for crops and mirrors."""
        self.close()
        self.seed = int(seed)
        self._start = 0

    def close(self) -> None:
        if self._stager is not None:
            self._stager.close()
        self._stager = self._normaliser = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_reader"] = None  # threads and LMDB handles do not copy; a copy starts reading afresh
        state["_stager"] = state["_normaliser"] = None
        return state

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, source='{self.lp.data_param.source}', batch_size={self.batch_size}"
