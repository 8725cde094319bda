"""Caffe's HDF5 weights and solver states (netspec.formats.hdf5): the layout of Net::ToHDF5 and
SnapshotSolverStateToHDF5 read back with h5py, round trips through pycaffe's save_hdf5/load_hdf5 and
`-weights x.caffemodel.h5`, agreement with the binary .caffemodel, shared blobs, and bad files."""
import re

import h5py
import numpy as np
import pytest

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.caffemodel import load_weights, read_weights
from netspec.formats.hdf5 import (
    read_hdf5_solverstate,
    write_hdf5_solverstate,
    write_hdf5_weights,
)
from netspec.formats.solverstate import make_solverstate
from netspec.proto import pb

NET = """name: "w"
layer { name: "data" type: "DummyData" top: "data"
  dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" param { name: "shared_w" }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "inception/1x1" type: "InnerProduct" bottom: "ip1" top: "ip2" param { name: "shared_w" }
  inner_product_param { num_output: 3 bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip1" bottom: "ip2" top: "loss" }
"""


@pytest.fixture
def net(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    return netspec.Net(str(tmp_path / "net.prototxt"), netspec.TEST)


def _params(net):
    return {n: [b.data.copy() for b in bs] for n, bs in net.params.items()}


def test_save_hdf5_layout_is_caffes(net, tmp_path):
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    with h5py.File(tmp_path / "w.caffemodel.h5", "r") as f:
        assert list(f) == ["data"]                                     # no diff group without diffs
        assert sorted(f["data"]) == ["data", "inception", "ip1", "loss"]   # every layer, '/' nests
        assert sorted(f["data/ip1"]) == ["0", "1"] and f["data/ip1/0"].dtype == np.float32
        np.testing.assert_array_equal(f["data/ip1/0"][()], net.params["ip1"][0].data)
        np.testing.assert_array_equal(f["data/ip1/1"][()], net.params["ip1"][1].data)
        # the shared weight is written by its owner only (Net::ToHDF5's param_owners_ check)
        assert sorted(f["data/inception/1x1"]) == ["1"] and len(f["data/data"]) == 0


def test_save_load_round_trip_and_weights_argument(net, tmp_path):
    path = str(tmp_path / "w.caffemodel.h5")
    net.save_hdf5(path)
    saved = _params(net)
    other = netspec.Net(str(tmp_path / "net.prototxt"), netspec.TEST)
    assert not np.array_equal(other.params["ip1"][0].data, saved["ip1"][0])
    other.load_hdf5(path)
    third = netspec.Net(str(tmp_path / "net.prototxt"), path, netspec.TEST)   # dispatch on the file
    for n in saved:
        for a, b, c in zip(saved[n], other.params[n], third.params[n]):
            np.testing.assert_array_equal(b.data, a)
            np.testing.assert_array_equal(c.data, a)


def test_hdf5_and_binary_caffemodel_agree(net, tmp_path):
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    net.save(str(tmp_path / "w.caffemodel"))
    h5, binary = read_weights(tmp_path / "w.caffemodel.h5"), read_weights(tmp_path / "w.caffemodel")
    for name, (_, blobs) in binary.items():
        if name == "inception/1x1":            # the binary file repeats the shared weight
            blobs = blobs[1:]
        assert len(h5[name][1]) == len(blobs)
        for a, b in zip(h5[name][1], blobs):
            np.testing.assert_array_equal(a, b)


def test_diffs_group(tmp_path):
    params = {"a": [np.ones((2, 3), np.float32)], "b": []}
    write_hdf5_weights(tmp_path / "d.h5", ["a", "b"], params, diffs={"a": [np.full((2, 3), 5, np.float32)]})
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(f["diff/a/0"][()], 5)
        assert "b" in f["diff"] and "b" in f["data"]


def test_cli_test_reads_hdf5_weights(net, tmp_path, monkeypatch, capsys):
    net.params["ip1"][0].data[...] = np.arange(9).reshape(3, 3) / 10
    net.params["ip1"][1].data[...] = [1, 2, 3]
    net.save_hdf5(str(tmp_path / "w.caffemodel.h5"))
    monkeypatch.chdir(tmp_path)
    assert main(["test", "-model", "net.prototxt", "-weights", "w.caffemodel.h5", "-iterations", "1"]) == 0
    out = capsys.readouterr().out
    w = np.arange(9).reshape(3, 3) / 10
    ip1 = w @ np.ones(3) + [1, 2, 3]                    # the input is ones
    ip2 = w @ ip1 + net.params["inception/1x1"][1].data.astype(np.float64)   # the shared weight again
    loss = ((ip1 - ip2) ** 2).sum() * 2 / (2 * 2)       # EuclideanLoss over a batch of 2 equal rows
    got = float(re.search(r"Batch 0, loss = (\S+)", out).group(1))
    assert got == pytest.approx(loss, rel=1e-5), out


@pytest.mark.parametrize("make, needle", [
    (lambda f: [f.create_dataset("data/ip1/0", data=np.zeros((4, 3), np.float32)),
                f.create_dataset("data/ip1/1", data=np.zeros(3, np.float32))],
     "layer 'ip1': blob 0 has shape 4×3 in the file but 3×3 in the net"),
    (lambda f: f.create_dataset("data/ip1/1", data=np.zeros(3, np.float32)),
     "layer 'ip1': the file has no dataset data/ip1/0 and the net's blob 0 is not shared"),
    (lambda f: [f.create_dataset(f"data/ip1/{i}", data=np.zeros(3, np.float32)) for i in range(3)],
     "layer 'ip1': the file has 3 blobs for this layer, the net has 2"),
    (lambda f: f.create_dataset("weights", data=np.zeros(3)), "has no group 'data'"),
])
def test_bad_weights_files_are_one_line(net, tmp_path, make, needle):
    with h5py.File(tmp_path / "bad.caffemodel.h5", "w") as f:
        make(f)
    with pytest.raises(NetspecError) as e:
        net.load_hdf5(str(tmp_path / "bad.caffemodel.h5"))
    assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


def test_not_hdf5_and_missing(net, tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(NetspecError, match=r"junk.h5: cannot read as HDF5"):
        load_weights(net.compiled.params(), tmp_path / "junk.h5")
    with pytest.raises(NetspecError, match=r"gone.caffemodel.h5: weights file does not exist"):
        net.load_hdf5(str(tmp_path / "gone.caffemodel.h5"))


def test_solverstate_layout_and_round_trip(tmp_path):
    history = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5], np.float32)]
    state = make_solverstate(120, 3, history, "snap/x_iter_120.caffemodel.h5")
    state.plateau_state.best, state.plateau_state.drops = 0.75, 2       # netspec's extension fields
    state.data_state.add(net="train", layer="data", position=7, extra=b'{"batches": 7}')
    write_hdf5_solverstate(tmp_path / "s.solverstate.h5", state)
    with h5py.File(tmp_path / "s.solverstate.h5", "r") as f:
        assert f["iter"].dtype == np.int32 and f["iter"].shape == (1,) and f["iter"][0] == 120
        assert f["current_step"][0] == 3
        tid = f["learned_net"].id.get_type()     # H5LTmake_dataset_string: strlen + 1, null-terminated
        assert f["learned_net"].shape == () and tid.get_size() == len("snap/x_iter_120.caffemodel.h5") + 1
        assert tid.get_strpad() == h5py.h5t.STR_NULLTERM
        assert sorted(f["history"]) == ["0", "1"]
        np.testing.assert_array_equal(f["history/0"][()], history[0])
    back = read_hdf5_solverstate(tmp_path / "s.solverstate.h5")
    assert back == state


def test_solverstate_written_as_caffe_does_reads(tmp_path):
    """A file made as Caffe's hdf5_save_int / H5LTmake_dataset_string do, without netspec's extras."""
    with h5py.File(tmp_path / "c.solverstate.h5", "w") as f:
        f.create_dataset("iter", data=np.array([40], np.int32))
        f.create_dataset("current_step", data=np.array([1], np.int32))
        f.create_dataset("learned_net", data=np.bytes_(b"m.caffemodel.h5"))
        f.create_dataset("history/0", data=np.ones((2, 2), np.float32))
    state = read_hdf5_solverstate(tmp_path / "c.solverstate.h5")
    assert (state.iter, state.current_step, state.learned_net) == (40, 1, "m.caffemodel.h5")
    assert len(state.history) == 1 and not state.HasField("plateau_state")
    assert isinstance(state, pb.SolverState)
