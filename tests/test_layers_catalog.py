"""Caffe's whole layer catalog: every type BVLC Caffe registers (REGISTER_LAYER_CLASS and
REGISTER_LAYER_CREATOR in src/caffe at 9b89154, listed here as data) is known to netspec, compiles
in a small net of its own, runs forward with the top shapes the compiler inferred, and — with
force_backward, as Caffe's Net — sends a diff to exactly the bottoms Caffe's backward reaches (none
for the types Caffe gives no backward, and never to labels, indices or selectors).
"""

from __future__ import annotations

import numpy as np
import pytest

import netspec
from netspec.layers import REGISTRY

CAFFE_TYPES = """AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution
Crop Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data HDF5Output
HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN MemoryData
MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape SPP Scale Sigmoid
SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile WindowData""".split()

R, LABEL3, IDS5, SEL, PROB3, BIN = "rand", "label3", "ids5", "sel", "prob3", "bin"

# type -> (parameter text, bottoms as (shape, values), number of tops, bottoms Caffe's backward reaches)
CASES = {
    "AbsVal": ("", [((2, 3), R)], 1, {0}),
    "Accuracy": ("", [((4, 3), R), ((4,), LABEL3)], 1, set()),
    "ArgMax": ("argmax_param { top_k: 2 }", [((2, 5), R)], 1, set()),
    "BNLL": ("", [((2, 3), R)], 1, {0}),
    "BatchNorm": ("", [((4, 3, 2, 2), R)], 1, {0}),
    "BatchReindex": ("", [((3, 2), R), ((4,), LABEL3)], 1, {0}),
    "Bias": ("", [((2, 3, 4), R)], 1, {0}),
    "Clip": ("clip_param { min: 0.2 max: 0.8 }", [((2, 3), R)], 1, {0}),
    "Concat": ("", [((2, 3), R), ((2, 2), R)], 1, {0, 1}),
    "ContrastiveLoss": ("", [((4, 3), R), ((4, 3), R), ((4, 1, 1, 1), BIN)], 1, {0, 1}),
    "Convolution": ("convolution_param { num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: 'xavier' } }",
                    [((2, 3, 4, 4), R)], 1, {0}),
    "Crop": ("crop_param { offset: 1 }", [((2, 3, 5, 5), R), ((2, 3, 3, 3), R)], 1, {0}),
    "Data": ("data_param { source: 'LMDB' batch_size: 2 backend: LMDB }", [], 2, set()),
    "Deconvolution": ("convolution_param { num_output: 2 kernel_size: 2 stride: 2 weight_filler { type: 'xavier' } }",
                      [((2, 3, 3, 3), R)], 1, {0}),
    "Dropout": ("", [((4, 8), R)], 1, {0}),
    "DummyData": ("dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: 'gaussian' } }", [], 1, set()),
    "ELU": ("", [((2, 3), R)], 1, {0}),
    "Eltwise": ("", [((2, 3), R), ((2, 3), R)], 1, {0, 1}),
    "Embed": ("embed_param { input_dim: 5 num_output: 3 weight_filler { type: 'gaussian' } }",
              [((2, 3), IDS5)], 1, set()),
    "EuclideanLoss": ("", [((2, 3), R), ((2, 3), R)], 1, {0, 1}),
    "Exp": ("", [((2, 3), R)], 1, {0}),
    "Filter": ("", [((4, 3), R), ((4,), BIN)], 1, {0}),
    "Flatten": ("", [((2, 3, 2), R)], 1, {0}),
    "HDF5Data": ("hdf5_data_param { source: 'h5_list.txt' batch_size: 2 }", [], 2, set()),
    "HDF5Output": ("hdf5_output_param { file_name: 'out.h5' }", [((2, 3), R), ((2, 1), R)], 0, set()),
    "HingeLoss": ("", [((4, 3), R), ((4,), LABEL3)], 1, {0}),
    "Im2col": ("convolution_param { kernel_size: 2 }", [((2, 3, 3, 3), R)], 1, {0}),
    "ImageData": ("image_data_param { source: 'images.txt' root_folder: 'img/' batch_size: 2 }", [], 2, set()),
    "InfogainLoss": ("", [((4, 3), PROB3), ((4,), LABEL3), ((1, 1, 3, 3), R)], 1, {0}),
    "InnerProduct": ("inner_product_param { num_output: 4 weight_filler { type: 'xavier' } }",
                     [((2, 3), R)], 1, {0}),
    "Input": ("input_param { shape { dim: 2 dim: 3 } }", [], 1, set()),
    "LRN": ("lrn_param { local_size: 3 }", [((2, 4, 3, 3), R)], 1, {0}),
    "LSTM": ("recurrent_param { num_output: 3 weight_filler { type: 'uniform' min: -0.5 max: 0.5 } }",
             [((4, 2, 3), R), ((4, 2), BIN)], 1, {0}),
    "LSTMUnit": ("", [((1, 2, 3), R), ((1, 2, 12), R), ((1, 2), BIN)], 2, {0, 1}),
    "Log": ("log_param { shift: 1 }", [((2, 3), R)], 1, {0}),
    "MVN": ("", [((2, 3, 4), R)], 1, {0}),
    "MemoryData": ("memory_data_param { batch_size: 2 channels: 3 height: 2 width: 2 }", [], 2, set()),
    "MultinomialLogisticLoss": ("", [((4, 3), PROB3), ((4,), LABEL3)], 1, {0}),
    "PReLU": ("", [((2, 3, 2), R)], 1, {0}),
    "Parameter": ("parameter_param { shape { dim: 2 dim: 3 } }", [], 1, set()),
    "Pooling": ("pooling_param { pool: AVE kernel_size: 2 stride: 1 }", [((2, 3, 3, 3), R)], 1, {0}),
    "Power": ("power_param { power: 2 shift: 1 }", [((2, 3), R)], 1, {0}),
    "Python": ("python_param { module: 'catalog_layers' layer: 'Double' }", [((2, 3), R)], 1, {0}),
    "RNN": ("recurrent_param { num_output: 3 weight_filler { type: 'uniform' min: -0.5 max: 0.5 } }",
            [((4, 2, 3), R), ((4, 2), BIN)], 1, {0}),
    "ReLU": ("", [((2, 3), R)], 1, {0}),
    "Reduction": ("reduction_param { operation: SUMSQ axis: 1 }", [((2, 3), R)], 1, {0}),
    "Reshape": ("reshape_param { shape { dim: -1 } }", [((2, 3), R)], 1, {0}),
    "SPP": ("spp_param { pyramid_height: 2 }", [((2, 3, 4, 4), R)], 1, {0}),
    "Scale": ("", [((2, 3, 4), R), ((3,), R)], 1, {0, 1}),
    "Sigmoid": ("", [((2, 3), R)], 1, {0}),
    "SigmoidCrossEntropyLoss": ("", [((4, 3), R), ((4, 3), BIN)], 1, {0}),
    "Silence": ("", [((2, 3), R)], 0, set()),
    "Slice": ("slice_param { axis: 1 }", [((2, 4), R)], 2, {0}),
    "Softmax": ("", [((2, 3), R)], 1, {0}),
    "SoftmaxWithLoss": ("", [((4, 3), R), ((4,), LABEL3)], 1, {0}),
    "Split": ("", [((2, 3), R)], 2, {0}),
    "Swish": ("", [((2, 3), R)], 1, {0}),
    "TanH": ("", [((2, 3), R)], 1, {0}),
    "Threshold": ("threshold_param { threshold: 0.5 }", [((2, 3), R)], 1, set()),
    "Tile": ("tile_param { tiles: 2 }", [((2, 3), R)], 1, {0}),
    "WindowData": ("window_data_param { source: 'windows.txt' batch_size: 2 fg_threshold: 0.5 bg_threshold: 0.5 "
                   "fg_fraction: 0.5 } transform_param { crop_size: 4 }", [], 2, set()),
}
DATA_BATCH = {"Filter"}   # the top's batch depends on the data (the whole batch before any)

PYTHON_MODULE = '''import netspec


class Double(netspec.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''


def test_netspec_knows_every_type_caffe_registers():
    assert len(CAFFE_TYPES) == 61 and sorted(CASES) == sorted(CAFFE_TYPES)
    missing = [t for t in CAFFE_TYPES if t not in REGISTRY]
    assert not missing, f"Caffe layer types netspec lacks: {', '.join(missing)}"
    assert set(CAFFE_TYPES) <= set(netspec.layer_type_list())


def _values(kind, shape, rng):
    if kind == R:
        return rng.uniform(0.1, 1.0, shape)
    if kind in (LABEL3, IDS5):
        return rng.integers(0, 3 if kind == LABEL3 else 5, shape).astype(float)
    if kind == BIN:
        values = rng.integers(0, 2, shape).astype(float)
        values.flat[:2] = [1, 0]   # at least one of each (a Filter forwards something, LSTM restarts)
        return values
    probs = rng.uniform(0.1, 1.0, shape)
    return probs / probs.sum(-1, keepdims=True)


def _files(tmp_path):
    """What the source layers read: an LMDB (Caffe's own fixture), HDF5 files, images, a window file,
    and the Python layer's module."""
    import cv2
    import h5py

    lmdb = (tmp_path.parent / "lmdb").resolve()
    if not lmdb.exists():
        import shutil
        from pathlib import Path
        shutil.copytree(Path(__file__).parent / "data" / "caffe" / "lmdb_raw", lmdb)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["t0"] = np.arange(12, dtype=np.float32).reshape(4, 3)   # each top reads the dataset of its name
        f["t1"] = np.arange(4, dtype=np.float32)
    (tmp_path / "h5_list.txt").write_text(f"{tmp_path / 'd.h5'}\n")
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(2):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.full((6, 5, 3), 40 * i, np.uint8))
    (tmp_path / "images.txt").write_text("0.png 0\n1.png 1\n")
    (tmp_path / "windows.txt").write_text(
        f"# 0\n{tmp_path / 'img' / '0.png'}\n3\n6\n5\n2\n1 0.8 0 0 3 3\n0 0.1 1 1 4 5\n")
    (tmp_path / "catalog_layers.py").write_text(PYTHON_MODULE)
    return lmdb


def _net_text(type_name, lmdb) -> str:
    text, bottoms, tops, _ = CASES[type_name]
    text = text.replace("'LMDB'", f"'{lmdb}'")
    lines = ["force_backward: true"]
    for i, (shape, _) in enumerate(bottoms):
        dims = " ".join(f"dim: {d}" for d in shape)
        lines.append(f'layer {{ name: "in{i}" type: "Input" top: "b{i}" input_param {{ shape {{ {dims} }} }} }}')
    wiring = "".join(f' bottom: "b{i}"' for i in range(len(bottoms))) + "".join(f' top: "t{i}"' for i in range(tops))
    lines.append(f'layer {{ name: "x" type: "{type_name}"{wiring} {text} }}')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("type_name", CAFFE_TYPES)
def test_every_caffe_type_compiles_runs_and_back_propagates_as_caffe(type_name, tmp_path, monkeypatch):
    assert type_name in REGISTRY, f"netspec has no layer type '{type_name}'"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    lmdb = _files(tmp_path)
    (tmp_path / "net.prototxt").write_text(_net_text(type_name, lmdb))
    net = netspec.Net(str(tmp_path / "net.prototxt"), netspec.TRAIN)
    try:
        _check(net, type_name)
    finally:
        net.compiled.close()   # the Data layer's reader threads


def _check(net, type_name):
    _, bottoms, tops, reached = CASES[type_name]
    rng = np.random.default_rng(0)
    for i, (shape, kind) in enumerate(bottoms):
        net.blobs[f"b{i}"].data[...] = _values(kind, shape, rng)
    if type_name == "MemoryData":
        net.set_input_arrays(rng.uniform(size=(2, 3, 2, 2)).astype(np.float32), np.zeros(2, np.float32))
    compiled = next(s.layer for s in net.compiled.steps if s.layer.name == "x").top_shapes
    net.forward()
    for i in range(tops):
        data = net.blobs[f"t{i}"].data
        want = compiled[i][1:] if type_name in DATA_BATCH else compiled[i]
        assert (data.shape[1:] if type_name in DATA_BATCH else data.shape) == want, f"top t{i}"
        assert np.isfinite(data).all(), f"top t{i} of {type_name}"
        net.blobs[f"t{i}"].diff[...] = rng.uniform(0.5, 1.0, data.shape)
    net.backward()
    for i in range(len(bottoms)):
        diff = net.blobs[f"b{i}"].diff
        if i in reached:
            assert np.isfinite(diff).all() and np.abs(diff).sum() > 0, f"{type_name}: no diff reached bottom {i}"
        else:
            assert not np.abs(diff).any(), f"{type_name}: Caffe sends no diff to bottom {i}"
