"""HDF5Data and HDF5Output: real Caffe's hdf5_data fixture (every forward pass), the facts of Caffe's
test_hdf5data_layer.cpp and test_hdf5_output_layer.cpp on the files generate_sample_data.py makes,
shuffle, bad input (one line naming file and dataset), and an examples/hdf5_classification-style
logistic regression trained from `netspec train`, snapshotted in HDF5 and resumed."""
import contextlib
from pathlib import Path

import h5py
import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.hdf5 import read_hdf5_weights
from netspec.layers import hdf5_layers

LAYERS2 = Path(__file__).parent / "data" / "caffe" / "layers2"


def _net(folder: Path, layer: str, phase=netspec.TEST, rest: str = "") -> netspec.Net:
    path = folder / "net.prototxt"
    path.write_text(f'name: "h"\n{layer}\n{rest}')
    return netspec.Net(str(path), phase)


def _data_layer(source: str, batch: int, tops=("data", "label"), extra: str = "") -> str:
    return ('layer { name: "data" type: "HDF5Data" ' + " ".join(f'top: "{t}"' for t in tops)
            + f' hdf5_data_param {{ source: "{source}" batch_size: {batch} {extra} }} }}')


def test_matches_caffe_fixture_every_pass():
    ref = np.load(LAYERS2 / "hdf5_data.npz")
    with contextlib.chdir(LAYERS2):
        net = netspec.Net("hdf5_data.prototxt", netspec.TEST)
        for k in range(4):   # crosses the 5-row file into the 3-row one, then wraps
            net.forward()
            for blob in ("data", "label", "vec"):
                want = ref[f"{f'iter{k}/' if k else ''}blob/{blob}"]
                got = net.blobs[blob].data
                assert got.shape == want.shape and np.array_equal(got, want), f"pass {k}, blob '{blob}'"


def _caffe_sample_data(folder: Path) -> Path:
    """src/caffe/test/test_data/generate_sample_data.py's two files and list."""
    data = np.arange(10 * 8 * 6 * 5, dtype=np.float32).reshape(10, 8, 6, 5)
    label = (1 + np.arange(10)[:, None]).astype(np.float32)
    with h5py.File(folder / "sample_data.h5", "w") as f:
        f["data"], f["label"], f["label2"] = data, label, label + 1
    with h5py.File(folder / "sample_data_2_gzip.h5", "w") as f:
        f.create_dataset("data", data=data + data.size, compression="gzip", compression_opts=1)
        f.create_dataset("label", data=label, compression="gzip", compression_opts=1, dtype="uint8")
        f.create_dataset("label2", data=label + 1, compression="gzip", compression_opts=1, dtype="uint8")
    (folder / "sample_data_list.txt").write_text("sample_data.h5\nsample_data_2_gzip.h5\n")
    return folder / "sample_data_list.txt"


def test_caffe_testread_facts(tmp_path):
    """HDF5DataLayerTest.TestRead: shapes, then ten batches alternating halves and files."""
    _caffe_sample_data(tmp_path)
    net = _net(tmp_path, _data_layer("sample_data_list.txt", 5, ("data", "label", "label2")))
    assert net.blobs["data"].data.shape == (5, 8, 6, 5)
    assert net.blobs["label"].data.shape == net.blobs["label2"].data.shape == (5, 1)
    size = 8 * 6 * 5
    for it in range(10):
        net.forward()
        label_offset = 1 + (0 if it % 2 == 0 else 5)
        data_offset = 0 if it % 2 == 0 else 5 * size
        file_offset = 0 if it % 4 < 2 else 2400
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), label_offset + np.arange(5))
        np.testing.assert_array_equal(net.blobs["label2"].data.ravel(), label_offset + 1 + np.arange(5))
        np.testing.assert_array_equal(net.blobs["data"].data.ravel(),
                                      file_offset + data_offset + np.arange(5 * size))


def test_caffe_testskip_facts(tmp_path, monkeypatch):
    """HDF5DataLayerTest.TestSkip: with 8 solvers rank r reads rows r, r+8, ... (labels 1-based)."""
    _caffe_sample_data(tmp_path)
    for dev in range(8):
        monkeypatch.setattr(hdf5_layers, "_rank_world", lambda phase, dev=dev: (dev, 8))
        net = _net(tmp_path, _data_layer("sample_data_list.txt", 5), phase=netspec.TRAIN)
        net.forward()
        expected = [(dev + 8 * i) % 10 + 1 for i in range(5)]
        np.testing.assert_array_equal(net.blobs["label"].data.ravel(), expected)


def test_shuffle_serves_every_row_once_per_epoch(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.arange(12, dtype=np.float32).reshape(12, 1)
        f["label"] = np.arange(12, dtype=np.float32)
    (tmp_path / "list.txt").write_text("a.h5\n")
    net = _net(tmp_path, _data_layer("list.txt", 4, extra="shuffle: true"))
    epochs = []
    for _ in range(3):
        rows = []
        for _ in range(3):
            net.forward()
            rows += net.blobs["label"].data.tolist()
            np.testing.assert_array_equal(net.blobs["data"].data.ravel(), net.blobs["label"].data)
        assert sorted(rows) == list(range(12))
        epochs.append(rows)
    assert any(e != list(range(12)) for e in epochs) and epochs[0] != epochs[1]


def test_list_relative_to_the_prototxt_folder(tmp_path, monkeypatch):
    _caffe_sample_data(tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    net = _net(tmp_path, _data_layer("sample_data_list.txt", 5))
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), 1 + np.arange(5))


@pytest.mark.parametrize("case, needle", [
    ("missing_list", "source list 'nope.txt' does not exist"),
    ("missing_file", "list.txt:2: layer 'data': HDF5 file 'gone.h5' does not exist"),
    ("missing_dataset", "HDF5 file '{dir}/a.h5' has no dataset 'label'"),
    ("rows", "dataset 'label' has 3 rows, dataset 'data' 4"),
    ("shape", "HDF5 file '{dir}/b.h5': dataset 'data' has rows of shape 3, the first file's 'data' 2"),
    ("transform", "HDF5Data does not transform data"),
    ("string", "dataset 'label' has type"),
])
def test_bad_input_is_one_line(tmp_path, case, needle):
    files = {"a.h5": {"data": np.zeros((4, 2), np.float32), "label": np.zeros(4, np.float32)},
             "b.h5": {"data": np.zeros((4, 3), np.float32), "label": np.zeros(4, np.float32)}}
    if case == "missing_dataset":
        del files["a.h5"]["label"]
    if case == "rows":
        files["a.h5"]["label"] = np.zeros(3, np.float32)
    if case == "string":
        files["a.h5"]["label"] = np.array([b"x"] * 4)
    for name, sets in files.items():
        with h5py.File(tmp_path / name, "w") as f:
            for k, v in sets.items():
                f[k] = v
    (tmp_path / "list.txt").write_text("a.h5\n" + ("gone.h5\n" if case == "missing_file" else "b.h5\n"))
    source = "nope.txt" if case == "missing_list" else "list.txt"
    layer = _data_layer(source, 4)
    if case == "transform":
        layer = layer.replace("hdf5_data_param", "transform_param { scale: 2 } hdf5_data_param")
    with pytest.raises(NetspecError) as e:
        net = _net(tmp_path, layer)
        net.forward()
        net.forward()      # the second file is read when the first runs out
    message = str(e.value)
    assert "\n" not in message and needle.format(dir=tmp_path) in message, message


def test_hdf5_output_writes_caffe_4d_datasets(tmp_path):
    """HDF5OutputLayerTest.TestForward: the bottoms come back from "data" and "label" unchanged, in
    Caffe's 4-D blob shape."""
    _caffe_sample_data(tmp_path)
    out = tmp_path / "out.h5"
    net = _net(tmp_path, _data_layer("sample_data_list.txt", 10),
               rest=f'layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label" '
                    f'hdf5_output_param {{ file_name: "{out}" }} }}')
    net.forward()
    with h5py.File(out, "r") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (10, 8, 6, 5)
        assert f["label"].shape == (10, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][()], np.arange(2400, dtype=np.float32).reshape(10, 8, 6, 5))
        np.testing.assert_array_equal(f["label"][()].ravel(), 1 + np.arange(10))


def test_hdf5_output_folder_missing_is_one_line(tmp_path):
    _caffe_sample_data(tmp_path)
    with pytest.raises(NetspecError, match=r"net.prototxt:\d+: layer 'out': cannot write .*folder"):
        _net(tmp_path, _data_layer("sample_data_list.txt", 5),
             rest='layer { name: "out" type: "HDF5Output" bottom: "data" bottom: "label" '
                  'hdf5_output_param { file_name: "no/such/dir/out.h5" } }')


# --- examples/hdf5_classification: logistic regression trained from the CLI ---------------------------

LOGREG = """name: "LogisticRegressionNet"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 16 shuffle: true } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "train.txt" batch_size: 16 } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "fc1" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
SOLVER = ('net: "net.prototxt" test_iter: 1 test_interval: 1000 base_lr: 0.1 momentum: 0.9 '
          'weight_decay: 0.0005 lr_policy: "step" gamma: 0.5 stepsize: 3 display: 0 max_iter: {max_iter} '
          'snapshot: 4 snapshot_prefix: "snap/logreg" snapshot_format: HDF5 random_seed: 3 solver_mode: CPU')


def _logreg_folder(folder: Path, max_iter: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(np.float32)
    for name, rows in (("train1.h5", slice(0, 24)), ("train2.h5", slice(24, 40))):
        with h5py.File(folder / name, "w") as f:
            f["data"], f["label"] = x[rows], y[rows]
    (folder / "train.txt").write_text("train1.h5\ntrain2.h5\n")
    (folder / "net.prototxt").write_text(LOGREG)
    (folder / "solver.prototxt").write_text(SOLVER.format(max_iter=max_iter))
    (folder / "snap").mkdir(exist_ok=True)


def _logistic_loss(weights, x, y) -> float:
    w, b = weights["fc1"][0], weights["fc1"][1]
    z = x.astype(np.float64) @ w.T.astype(np.float64) + b
    z -= z.max(1, keepdims=True)
    return float(-(z[np.arange(len(y)), y.astype(int)] - np.log(np.exp(z).sum(1))).mean())


def test_logistic_regression_trains_snapshots_hdf5_and_resumes(tmp_path, monkeypatch):
    """Shuffled rows over two files: the resumed run equals the straight one only if the HDF5
    solver state carries the layer's place (netspec's extension dataset) as well as Caffe's fields."""
    monkeypatch.chdir(tmp_path)
    _logreg_folder(tmp_path, max_iter=8)
    assert main(["train", "-solver", "solver.prototxt"]) == 0
    straight = read_hdf5_weights("snap/logreg_iter_8.caffemodel.h5")
    with h5py.File("snap/logreg_iter_4.solverstate.h5", "r") as f:
        assert int(f["iter"][0]) == 4 and int(f["current_step"][0]) == 1
        assert f["learned_net"][()].rstrip(b"\0").decode() == "snap/logreg_iter_4.caffemodel.h5"
    first = read_hdf5_weights("snap/logreg_iter_4.caffemodel.h5")
    x = np.concatenate([h5py.File(n, "r")["data"][()] for n in ("train1.h5", "train2.h5")])
    y = np.concatenate([h5py.File(n, "r")["label"][()] for n in ("train1.h5", "train2.h5")])
    assert _logistic_loss(straight, x, y) < _logistic_loss(first, x, y)   # it learns
    for p in Path("snap").glob("*_iter_8.*"):
        p.unlink()
    assert main(["train", "-solver", "solver.prototxt", "-snapshot", "snap/logreg_iter_4.solverstate.h5"]) == 0
    resumed = read_hdf5_weights("snap/logreg_iter_8.caffemodel.h5")
    for i in (0, 1):
        np.testing.assert_array_equal(resumed["fc1"][i], straight["fc1"][i])
