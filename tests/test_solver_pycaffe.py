"""pycaffe's solver API under `import netspec as caffe`: the behaviour BVLC's
python/caffe/test/test_solver.py checks (solve to max_iter, apply_update, nets outliving the solver,
snapshot file names), plus step/feeding semantics, callbacks, share_weights and get_solver."""
import numpy as np
import pytest

import netspec

if hasattr(netspec, "SGDSolver"):
    caffe = netspec
else:  # until netspec/__init__.py exports the solver classes
    import types

    from netspec.pycaffe import solver as pycaffe_solver

    caffe = types.SimpleNamespace(**{k: getattr(netspec, k) for k in dir(netspec) if not k.startswith("__")},
                                  **{k: getattr(pycaffe_solver, k) for k in pycaffe_solver.__dict__
                                     if k.endswith("Solver") or k.startswith("get_solver")})

NUM_OUTPUT = 13
NET = """name: 'testnet' force_backward: true
layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 }
    data_filler { type: 'constant' } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 11 kernel_size: 2 pad: 3
    weight_filler { type: 'gaussian' std: 1 }
    bias_filler { type: 'constant' value: 2 } }
    param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
  inner_product_param { num_output: %d
    weight_filler { type: 'gaussian' std: 2.5 }
    bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
""" % NUM_OUTPUT

SOLVER = """net: '%s'
test_iter: 10 test_interval: 10 base_lr: 0.01 momentum: 0.9
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 100 max_iter: 100 snapshot_after_train: false
snapshot_prefix: "model" """


@pytest.fixture
def solver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER % (tmp_path / "net.prototxt"))
    s = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    caffe.get_solver(str(tmp_path / "solver.prototxt"))  # also make sure get_solver runs
    caffe.set_mode_cpu()
    rng = np.random.default_rng(0)
    s.net.blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=s.net.blobs["label"].data.shape)
    s.test_nets[0].blobs["label"].data[...] = rng.integers(NUM_OUTPUT, size=s.test_nets[0].blobs["label"].shape)
    return s


def test_solve(solver):
    assert solver.iter == 0
    solver.solve(None)
    assert solver.iter == 100


def test_apply_update(solver):
    net = solver.net
    data = net.layers[1].blobs[0].data[...]
    data[...] = 0  # reset the weights of that layer to 0
    net.layers[1].blobs[0].diff[...] = 1
    solver.apply_update()  # the initial learning rate is 0.01
    assert np.abs(data - -0.01).max() < 1e-7


def test_net_memory(solver):
    """Nets survive after the solver is destroyed."""
    nets = [solver.net] + list(solver.test_nets)
    assert len(nets) == 2
    del solver
    total = 0
    for net in nets:
        for ps in net.params.values():
            for p in ps:
                total += p.data.sum() + p.diff.sum()
        for bl in net.blobs.values():
            total += bl.data.sum() + bl.diff.sum()
    assert np.isfinite(total)


def test_snapshot(solver, tmp_path):
    solver.snapshot()
    for fn in ["model_iter_0.caffemodel", "model_iter_0.solverstate"]:
        assert (tmp_path / fn).is_file()


def test_get_solver_follows_the_type_field(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "s.prototxt").write_text(SOLVER % "net.prototxt" + ' type: "Adam"'.replace("momentum: 0.9", ""))
    s = caffe.get_solver(str(tmp_path / "s.prototxt"))
    assert isinstance(s, caffe.AdamSolver) and s.type == "Adam"
    assert caffe.SGDSolver(str(tmp_path / "s.prototxt")).type == "SGD"  # the class decides, as pycaffe


def test_step_counts_and_callbacks(solver):
    calls = []
    solver.add_callback(lambda: calls.append(("start", solver.iter)),
                        lambda: calls.append(("grads", solver.iter)))
    solver.step(3)
    assert solver.iter == 3
    assert calls == [("start", 0), ("grads", 0), ("start", 1), ("grads", 1), ("start", 2), ("grads", 2)]


def test_fed_input_blobs_drive_the_step(tmp_path, monkeypatch):
    """Input-layer nets: what is written into net.blobs before step(1) is what that step trains on,
    and after it the loss blob holds that forward's loss (computed before the update)."""
    monkeypatch.chdir(tmp_path)
    net = NET.replace("""layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4
    num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 }
    data_filler { type: 'constant' } } }""", """layer { type: 'Input' name: 'data' top: 'data' top: 'label'
  input_param { shape { dim: 5 dim: 2 dim: 3 dim: 4 } shape { dim: 5 } } }""")
    (tmp_path / "net.prototxt").write_text(net)
    (tmp_path / "s.prototxt").write_text(SOLVER % "net.prototxt" + " random_seed: 5")
    s = caffe.get_solver(str(tmp_path / "s.prototxt"))
    probe = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.normal(size=(5, 2, 3, 4)).astype(np.float32)
        y = rng.integers(NUM_OUTPUT, size=5).astype(np.float32)
        for name, blobs in s.net.params.items():
            for i, b in enumerate(blobs):
                probe.params[name][i].data[...] = b.data
        probe.blobs["data"].data[...] = x
        probe.blobs["label"].data[...] = y
        expected = float(probe.forward()["loss"])
        s.net.blobs["data"].data[...] = x
        s.net.blobs["label"].data[...] = y
        s.step(1)
        assert float(s.net.blobs["loss"].data) == pytest.approx(expected, rel=1e-6)
    assert not np.array_equal(s.net.params["ip"][0].data, probe.params["ip"][0].data)  # it did update


def test_share_weights(solver, tmp_path):
    other = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    solver.share_weights(other)
    solver.step(2)
    for name, blobs in solver.net.params.items():
        for i, b in enumerate(blobs):
            assert np.array_equal(other.params[name][i].data, b.data), f"{name}/{i}"
