"""Caffe's HDF5 files: `.caffemodel.h5` weights and `.solverstate.h5` solver snapshots.

Weights follow Net::ToHDF5 and Net::CopyTrainedLayersFromHDF5 (src/caffe/net.cpp): group `data` holds
one group per layer, in net order and for every layer (those without blobs too), and in it one float32
dataset per parameter blob named "0", "1", ... in the blob's own shape. A blob shared with an earlier
layer (ParamSpec name) is written only by its owner; reading, a missing dataset is accepted only for
such a blob. With diffs (snapshot_diff) a group `diff` mirrors `data` with the gradients, shared blobs
included. Reading needs each dataset's shape to equal the blob's exactly (Caffe reads HDF5 weights
without Blob::ShapeEquals' legacy 4-D allowance) and ignores layers the net lacks.

Solver states follow SGDSolver::SnapshotSolverStateToHDF5 / RestoreSolverStateFromHDF5
(src/caffe/solvers/sgd_solver.cpp): `iter` and `current_step` as 1-element int32 datasets,
`learned_net` as a scalar null-terminated string, and group `history` with datasets "0".."n-1".
netspec's SolverState extension fields (numbers >= 10000, which Caffe does not know) travel as the
serialized message in one extra dataset, `netspec_extensions`, which Caffe never opens.

A layer name with '/' (GoogLeNet's "inception_3a/1x1") becomes nested groups; Caffe's writer
cannot create those, netspec's reader walks them back to the one name. Files are written under a
temporary name and renamed (atomic.py).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .atomic import atomic_open
from .blobs import array_to_blob, as_float32, blob_to_array

MAGIC = b"\x89HDF\r\n\x1a\n"
_EXTENSIONS = "netspec_extensions"
_CAFFE_STATE_FIELDS = ("iter", "learned_net", "history", "current_step")


def is_hdf5(path) -> bool:
    """True for a file that starts with HDF5's signature, or any path ending in .h5 (so that a
    damaged .h5 gets an HDF5 error, not a protobuf one). Caffe asks H5Fis_hdf5."""
    if str(path).endswith(".h5"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _open(path, what: str):
    import h5py

    if not Path(path).is_file():
        raise NetspecError(f"{what} does not exist", file=path)
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise NetspecError(f"cannot read as HDF5 ({e})", file=path) from None


# --- weights ----------------------------------------------------------------------------------------

def _layer_groups(group, prefix: str = ""):
    """(layer name, {blob index: dataset}) for every layer group under `group`, nested names joined."""
    import h5py

    out = []
    blobs = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out += _layer_groups(item, f"{prefix}{key}/")
        elif key.isdigit():
            blobs[int(key)] = item
    if prefix:
        out.insert(0, (prefix[:-1], blobs))
    return out


def read_hdf5_weights(path) -> OrderedDict:
    """layer name -> {blob index: float32 array} of a .caffemodel.h5 (the `data` group)."""
    with _open(path, "weights file") as f:
        if "data" not in f:
            raise NetspecError("has no group 'data' (not a Caffe HDF5 weights file)", file=path)
        return OrderedDict((name, {i: np.asarray(ds[()], np.float32) for i, ds in sorted(blobs.items())})
                           for name, blobs in _layer_groups(f["data"]))


def hdf5_weight_records(params: Mapping[str, Sequence], path):
    """The file's layers as caffemodel.LayerBlobs, and `params` cut to the blobs the file holds, so
    caffemodel's checks and copying apply; a blob missing from the file must be shared (Caffe)."""
    from .caffemodel import LayerBlobs

    layers = read_hdf5_weights(path)
    seen, plan, records = set(), OrderedDict(), []
    for name, targets in params.items():
        owned = [id(t) not in seen for t in targets]
        seen.update(id(t) for t in targets)
        plan[name] = list(targets)
        if name not in layers:
            continue
        blobs = layers[name]
        extra = [i for i in blobs if i >= len(targets)]
        if extra:
            raise NetspecError(f"the file has {len(blobs)} blobs for this layer, the net has {len(targets)}",
                               file=path, layer=name)
        absent = [i for i in range(len(targets)) if i not in blobs and owned[i]]
        if absent:
            raise NetspecError(f"the file has no dataset data/{name}/{absent[0]} and the net's blob "
                               f"{absent[0]} is not shared with another layer", file=path, layer=name)
        plan[name] = [targets[i] for i in sorted(blobs)]
    for name, blobs in layers.items():
        arrays = [blobs[i] for i in sorted(blobs)]
        records.append(LayerBlobs(name, "", arrays, [False] * len(arrays)))
    return plan, records


def write_hdf5_weights(path, layer_names: Sequence[str], params: Mapping[str, Sequence], *,
                       diffs: Mapping | None = None) -> None:
    """Net::ToHDF5: group data/<layer>/<i> for every layer of `layer_names` (net order); a blob
    tensor met before in an earlier layer is shared and only its owner writes it; diff/<layer>/<i>
    for every blob when `diffs` is given."""
    import h5py

    unknown = set(params) - set(layer_names)
    if unknown:
        raise NetspecError("cannot write blobs of layers the net does not have: " + ", ".join(sorted(unknown)),
                           file=path)
    seen: set[int] = set()
    with atomic_open(path, "w+b") as raw, h5py.File(raw, "w") as f:
        data = f.create_group("data")
        diff = f.create_group("diff") if diffs is not None else None
        for name in layer_names:
            group = data.require_group(name)
            dgroup = diff.require_group(name) if diff is not None else None
            for i, blob in enumerate(params.get(name, ())):
                if id(blob) not in seen:
                    group.create_dataset(str(i), data=as_float32(blob))
                    seen.add(id(blob))
                if dgroup is not None:
                    dgroup.create_dataset(str(i), data=as_float32(diffs[name][i]))


# --- solver states ---------------------------------------------------------------------------------

def _save_c_string(f, name: str, text: str) -> None:
    """H5LTmake_dataset_string: a scalar dataset of a null-terminated string type of strlen + 1."""
    import h5py

    raw = text.encode()
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(len(raw) + 1)
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    space = h5py.h5s.create(h5py.h5s.SCALAR)
    dset = h5py.h5d.create(f.id, name.encode(), tid, space)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(raw + b"\0", dtype=f"S{len(raw) + 1}"), mtype=tid)


def write_hdf5_solverstate(path, state: pb.SolverState) -> None:
    """Write `state` (see solverstate.make_solverstate) as Caffe's .solverstate.h5, atomically."""
    import h5py

    extensions = pb.SolverState()
    extensions.CopyFrom(state)
    for name in _CAFFE_STATE_FIELDS:
        extensions.ClearField(name)
    with atomic_open(path, "w+b") as raw, h5py.File(raw, "w") as f:
        f.create_dataset("iter", data=np.array([state.iter], np.int32))
        _save_c_string(f, "learned_net", state.learned_net)
        f.create_dataset("current_step", data=np.array([state.current_step], np.int32))
        history = f.create_group("history")
        for i, blob in enumerate(state.history):
            history.create_dataset(str(i), data=blob_to_array(blob, file=path, index=i))
        if extensions.ByteSize():
            f.create_dataset(_EXTENSIONS, data=np.void(extensions.SerializeToString()))


def _read_int(f, name: str, path) -> int:
    if name not in f:
        raise NetspecError(f"has no dataset '{name}' (not a Caffe HDF5 solver state)", file=path)
    return int(np.asarray(f[name][()]).reshape(-1)[0])


def read_hdf5_solverstate(path) -> pb.SolverState:
    """A .solverstate.h5 as the SolverState message the binary format holds (extensions included)."""
    state = pb.SolverState()
    with _open(path, "solver state") as f:
        if _EXTENSIONS in f:
            state.ParseFromString(np.asarray(f[_EXTENSIONS][()]).tobytes())
        state.iter = _read_int(f, "iter", path)
        state.current_step = _read_int(f, "current_step", path)
        if "learned_net" in f:
            raw = f["learned_net"][()]
            state.learned_net = (raw if isinstance(raw, bytes) else bytes(raw)).split(b"\0")[0].decode()
        if "history" not in f:
            raise NetspecError("has no group 'history' (not a Caffe HDF5 solver state)", file=path)
        history = f["history"]
        for i in range(len(history)):
            if str(i) not in history:
                raise NetspecError(f"history has {len(history)} datasets but no '{i}'", file=path)
            state.history.append(array_to_blob(np.asarray(history[str(i)][()], np.float32)))
    return state


def load_hdf5_weights(params: Mapping[str, Sequence], path, source=None):
    """Net::CopyTrainedLayersFromHDF5 into `params` (layer name -> blobs); returns caffemodel.LoadReport."""
    from .caffemodel import _load

    plan, records = hdf5_weight_records(params, path)
    return _load(plan, records, source or str(path))
