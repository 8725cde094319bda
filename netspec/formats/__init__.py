"""Caffe's file formats, read and written byte-for-byte as Caffe 1.0 does.

  caffemodel.py   .caffemodel weights: read (current, V1, V0), load into a net, write
  solverstate.py  .solverstate solver snapshots
  hdf5.py         .caffemodel.h5 weights and .solverstate.h5 snapshots (Caffe's HDF5 layout)
  binaryproto.py  .binaryproto blobs (mean images)
  blobs.py        BlobProto <-> float32 arrays
  export.py       trained blobs <-> a PyTorch state_dict (.pt)
  atomic.py       write to a temporary name, then rename
  protofile.py    reading binary protobuf files, wire format, one-line errors
"""
from ..lazy import lazy_getattr

# Names are imported on first use (netspec/lazy.py).
_LAZY = {
    **dict.fromkeys(['atomic_dir', 'atomic_open', 'atomic_write'], '.atomic'),
    **dict.fromkeys(['read_binaryproto', 'read_blobproto', 'write_binaryproto'], '.binaryproto'),
    **dict.fromkeys(['array_to_blob', 'blob_to_array'], '.blobs'),
    **dict.fromkeys(['LoadReport', 'load_weights', 'read_caffemodel', 'read_weights', 'weights_by_layer', 'write_caffemodel'], '.caffemodel'),
    **dict.fromkeys(['export_state_dict', 'import_state_dict'], '.export'),
    **dict.fromkeys(['check_history', 'history_arrays', 'make_solverstate', 'read_solverstate', 'write_solverstate'], '.solverstate'),
    **dict.fromkeys(['load_hdf5_weights', 'read_hdf5_solverstate', 'read_hdf5_weights', 'write_hdf5_solverstate',
                     'write_hdf5_weights'], '.hdf5'),
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "LoadReport", "array_to_blob", "atomic_dir", "atomic_open", "atomic_write", "blob_to_array",
    "check_history", "export_state_dict", "history_arrays", "import_state_dict", "load_hdf5_weights",
    "load_weights", "read_hdf5_solverstate", "read_hdf5_weights", "write_hdf5_solverstate", "write_hdf5_weights",
    "make_solverstate", "read_binaryproto", "read_blobproto", "read_caffemodel", "read_solverstate",
    "read_weights", "weights_by_layer", "write_binaryproto", "write_caffemodel", "write_solverstate",
]
