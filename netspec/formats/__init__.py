"""Caffe's file formats, read and written byte-for-byte as Caffe 1.0 does.

  caffemodel.py   .caffemodel weights: read (current, V1, V0), load into a net, write
  solverstate.py  .solverstate solver snapshots
  binaryproto.py  .binaryproto blobs (mean images)
  blobs.py        BlobProto <-> float32 arrays
  export.py       trained blobs <-> a PyTorch state_dict (.pt)
  atomic.py       write to a temporary name, then rename
  protofile.py    reading binary protobuf files, wire format, one-line errors
"""
from .atomic import atomic_dir, atomic_open, atomic_write
from .binaryproto import read_binaryproto, read_blobproto, write_binaryproto
from .blobs import array_to_blob, blob_to_array
from .caffemodel import (
    LoadReport,
    load_weights,
    read_caffemodel,
    read_weights,
    weights_by_layer,
    write_caffemodel,
)
from .export import export_state_dict, import_state_dict
from .solverstate import check_history, history_arrays, make_solverstate, read_solverstate, write_solverstate

__all__ = [
    "LoadReport", "array_to_blob", "atomic_dir", "atomic_open", "atomic_write", "blob_to_array",
    "check_history", "export_state_dict", "history_arrays", "import_state_dict", "load_weights",
    "make_solverstate", "read_binaryproto", "read_blobproto", "read_caffemodel", "read_solverstate",
    "read_weights", "weights_by_layer", "write_binaryproto", "write_caffemodel", "write_solverstate",
]
