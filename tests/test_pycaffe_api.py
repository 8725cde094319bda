"""pycaffe's API beyond forward/backward (netspec/pycaffe/net.py, blob.py, runtime.py, layer.py):
every name pycaffe's __init__ exports, caffe_pb2 under pycaffe's name, Net's before/after_forward
callbacks, Blob.data/.diff as one array per blob that forwards write into, net.layers and _blobs,
and the runtime functions (NCCL as pycaffe built without it, Timer, init_log/log, solver rank)."""
import logging
import time
from pathlib import Path

import numpy as np
import pytest

import netspec as caffe

# python/caffe/__init__.py's names (BVLC Caffe), as data
PYCAFFE_NAMES = ["Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "NCCL", "Timer", "init_log", "log", "set_mode_cpu", "set_mode_gpu", "set_device",
                 "Layer", "get_solver", "layer_type_list", "set_random_seed", "solver_count", "set_solver_count",
                 "solver_rank", "set_solver_rank", "set_multiprocess", "has_nccl", "__version__", "TRAIN", "TEST",
                 "Classifier", "Detector", "io", "layers", "params", "NetSpec", "to_proto"]

NET = """name: "hooks" force_backward: true
input: "x" input_shape { dim: 2 dim: 3 }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "constant" value: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "scale" type: "Python" bottom: "ip" top: "out"
  python_param { module: "netspec_test_pylayers" layer: "Bias" param_str: "1" } }
"""


@pytest.fixture
def net(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "data" / "python_layers"))
    (tmp_path / "net.prototxt").write_text(NET)
    return caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)


def test_every_pycaffe_top_level_name_exists():
    missing = [n for n in PYCAFFE_NAMES if not hasattr(caffe, n)]
    assert not missing
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    assert "Python" in caffe.layer_type_list()


def test_caffe_pb2_is_the_generated_module_under_caffes_name():
    from netspec.proto import caffe_pb2

    assert caffe.proto.caffe_pb2 is caffe_pb2 is caffe.pb
    blob = caffe.proto.caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    assert caffe_pb2.BlobProto.FromString(blob.SerializeToString()).shape.dim == [2, 3]
    assert caffe_pb2.TRAIN == 0 and caffe_pb2.SolverParameter.SGD == 0


def test_forward_callbacks_see_each_layer_in_order(net):
    seen = []
    net.before_forward(lambda i: seen.append(("before", i, net.blobs["out"].data.copy())))
    net.after_forward(lambda i: seen.append(("after", i, net.blobs["ip"].data.copy())))
    net.blobs["x"].data[...] = np.arange(6).reshape(2, 3)
    net.forward()
    assert [(w, i) for w, i, _ in seen] == [(w, i) for i in range(4) for w in ("before", "after")]
    ip = np.arange(6).reshape(2, 3).sum(1, keepdims=True) * 0.5 * np.ones((1, 4))
    np.testing.assert_array_equal(seen[3][2], ip)          # after layer 1 (ip): its top in net.blobs
    np.testing.assert_array_equal(seen[6][2], 0)           # before layer 3: 'out' not yet written
    net.forward(start="relu", end="relu")
    assert [(w, i) for w, i, _ in seen[8:]] == [("before", 2), ("after", 2)]


def test_blob_data_is_one_array_that_forwards_write_into(net):
    data, out, diff = net.blobs["x"].data, net.blobs["out"].data, net.blobs["out"].diff
    assert net.blobs["x"].data is data and net.blobs["out"].diff is diff
    data[...] = 2.0                                         # a write through the held array reaches the net
    net.forward()
    assert net.blobs["out"].data is out
    np.testing.assert_array_equal(out, np.full((2, 4), 2.0 * 3 * 0.5 + 1))
    net.blobs["out"].diff[...] = 1.0
    net.backward()
    assert net.blobs["x"].diff is net.blobs["x"].diff
    np.testing.assert_array_equal(net.blobs["x"].diff, np.full((2, 3), 4 * 0.5))
    w = net.params["ip"][0].data
    assert net.params["ip"][0].data is w
    net.blobs["x"].reshape(5, 3)                            # a new shape: new arrays, as Caffe's Reshape
    assert net.blobs["x"].data.shape == (5, 3) and net.blobs["x"].data is not data


def test_python_layer_in_net_layers_is_the_users_object(net):
    layer = net.layers[net._layer_names.index("scale")]
    assert type(layer).__name__ == "Bias" and isinstance(layer, caffe.Layer)
    assert layer.type == "Python" and layer.param_str == "1" and layer.phase == caffe.TRAIN
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(4))
    assert net.layer_dict["ip"].type == "InnerProduct" and len(net.layer_dict["ip"].blobs) == 2
    assert [net._blob_names[i] for i in net._top_ids(1)] == ["ip"]
    assert [b.shape for b in net._blobs] == [net.blobs[n].shape for n in net._blob_names]


def test_nccl_as_pycaffe_without_nccl():
    assert caffe.has_nccl() is False
    nccl = caffe.NCCL(None, b"uid")
    assert not hasattr(nccl, "new_uid") and not hasattr(caffe.NCCL, "bcast")


def test_timer_measures_milliseconds():
    t = caffe.Timer()
    assert t.ms == 0.0                                     # never started
    t.start()
    time.sleep(0.05)
    t.stop()
    first = t.ms
    assert 45 <= first < 2000 and t.ms == first             # stopped: reading twice gives the same time


def test_solver_count_rank_and_multiprocess_settings():
    try:
        assert (caffe.solver_count(), caffe.solver_rank()) == (1, 0)
        caffe.set_solver_count(4)
        caffe.set_solver_rank(2)
        caffe.set_multiprocess(True)
        assert (caffe.solver_count(), caffe.solver_rank()) == (4, 2)
    finally:
        from netspec.pycaffe import runtime

        runtime._STATE.update(solver_count=None, solver_rank=None, multiprocess=False)


def test_init_log_and_log_write_glog_lines(capsys):
    logger = logging.getLogger("netspec")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        caffe.init_log(0)
        caffe.log("hello from pycaffe")
        caffe.init_log(1)                                  # WARNING and above only
        caffe.log("not shown")
    finally:
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    err = capsys.readouterr().err.splitlines()
    assert any(line[0] == "I" and line.endswith("] hello from pycaffe") for line in err)
    assert not any("not shown" in line for line in err)


SPLIT_NET = """name: "bw" force_backward: true
input: "x" input_shape { dim: 3 dim: 4 }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" } } }
layer { name: "tanh" type: "TanH" bottom: "h" top: "h" }
layer { name: "ipa" type: "InnerProduct" bottom: "h" top: "a"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "ipb" type: "InnerProduct" bottom: "h" top: "b"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "s" bottom: "a" top: "loss" }
"""


@pytest.mark.parametrize("live", [True, False], ids=["after-forward", "rerun"])
def test_backward_callbacks_run_layer_by_layer_with_the_same_diffs(tmp_path, live):
    """before/after_backward(i) from the last layer down; a blob read twice ('h') gets the sum of
    both consumers' diffs; diffs and parameter diffs equal those of a backward without callbacks."""
    (tmp_path / "n.prototxt").write_text(SPLIT_NET)
    caffe.set_random_seed(5)
    plain = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TRAIN)
    hooked = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TRAIN)
    for name, blobs in plain.params.items():
        for mine, theirs in zip(hooked.params[name], blobs):
            mine.data[...] = theirs.data
    calls = []
    hooked.before_backward(lambda i: calls.append(("before", i)))
    hooked.after_backward(lambda i: calls.append(("after", i, hooked.params["ip1"][0].diff.copy())))
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    for net in (plain, hooked):
        net.clear_param_diffs()
        net.forward(x=x)
        if not live:
            net.forward(x=x, start="ip1")              # a partial forward: backward re-runs the layers
        net.backward()
    assert [c[:2] for c in calls] == [(w, i) for i in range(6, -1, -1) for w in ("before", "after")]
    np.testing.assert_array_equal(calls[9][2], 0)        # after tanh, before ip1 itself
    for blob in ("x", "h", "a", "b", "s"):
        np.testing.assert_allclose(hooked.blobs[blob].diff, plain.blobs[blob].diff, rtol=1e-6, atol=1e-7,
                                   err_msg=blob)
    assert np.abs(plain.blobs["h"].diff).sum() > 0
    for name in plain.params:
        for a, b in zip(hooked.params[name], plain.params[name]):
            np.testing.assert_allclose(a.diff, b.diff, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(calls[11][2], plain.params["ip1"][0].diff, rtol=1e-6)   # after ip1


def test_pycaffe_modules_are_attributes_of_the_package():
    """`import netspec as caffe` then caffe.net_spec / caffe.draw / caffe.io ... without importing them
    (the package's __getattr__ imports on first use; called directly so earlier imports cannot hide it)."""
    import importlib

    package = importlib.import_module("netspec")
    for name in ("io", "draw", "coord_map", "classifier", "detector", "net_spec", "pycaffe"):
        assert package.__getattr__(name) is importlib.import_module(f"netspec.{name}")
    assert caffe.net_spec.NetSpec is caffe.NetSpec and caffe.pycaffe.Net is caffe.Net
