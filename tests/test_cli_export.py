"""netspec export / import (netspec/cli/cmd_export.py, cmd_import.py, netspec/export_onnx.py): a
.caffemodel to a tensors-only state_dict and ONNX, and the state_dict back to an equal .caffemodel."""
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.cli import main
from netspec.export_onnx import as_deployed, export_onnx
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.formats import load_weights, read_caffemodel, weights_by_layer
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"


def trained(name):
    model = str(DATA / f"{name}.prototxt")
    net = compile_net(load_net(model), source=model)
    load_weights(net.params(), DATA / f"{name}.caffemodel")
    return net


def export(tmp_path, name, *extra):
    pt = tmp_path / f"{name}.pt"
    assert main(["export", "-model", str(DATA / f"{name}.prototxt"), "-weights",
                 str(DATA / f"{name}.caffemodel"), "-o", str(pt), *extra]) == 0
    return pt


def one_line_error(argv, capsys, command) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith(f"netspec {command}: error: ")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("name", ["loss_net", "layers_net"])
def test_export_is_the_compiled_nets_state_dict(tmp_path, name):
    state = torch.load(export(tmp_path, name), weights_only=True)
    net = trained(name)
    assert type(state) is dict and list(state) == list(net.state_dict())
    for key, value in net.state_dict().items():
        assert value.dtype == state[key].dtype == torch.float32 and torch.equal(state[key], value), key
    fresh = trained(name)
    fresh.fill(123)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


def blobs_of(path):
    return {k: b for k, (_, b) in weights_by_layer(read_caffemodel(path)).items() if b}


@pytest.mark.parametrize("name", ["loss_net", "layers_net"])
def test_import_gives_back_the_original_caffemodels_blobs(tmp_path, name):
    pt, out = export(tmp_path, name), tmp_path / "back.caffemodel"
    assert main(["import", "-model", str(DATA / f"{name}.prototxt"), "-i", str(pt), "-o", str(out)]) == 0
    original, back = blobs_of(DATA / f"{name}.caffemodel"), blobs_of(out)
    assert list(back) == list(original)
    for layer, blobs in original.items():
        assert len(back[layer]) == len(blobs), layer
        for i, (a, b) in enumerate(zip(blobs, back[layer])):
            assert a.shape == b.shape and np.array_equal(a, b), f"{layer} blob {i}"
    types = {lp.name: lp.type for lp in read_caffemodel(out).layer}
    assert types["conv1"] == "Convolution" and all(lp.phase == pb.TRAIN for lp in read_caffemodel(out).layer)


def test_import_accepts_caffe_names_and_blob_indices(tmp_path):
    net = trained("layers_net")
    state = {f"{layer}.{i}": p.detach() for layer, ps in net.params().items() for i, p in enumerate(ps)}
    state["scale4.scale"] = state.pop("scale4.0")
    torch.save(state, tmp_path / "idx.pt")
    out = tmp_path / "idx.caffemodel"
    model = str(DATA / "layers_net.prototxt")
    assert main(["import", str(tmp_path / "idx.pt"), str(out), "-model", model]) == 0
    original, back = blobs_of(DATA / "layers_net.caffemodel"), blobs_of(out)
    assert all(np.array_equal(a, b) for k in original for a, b in zip(original[k], back[k]))


def test_import_errors_name_the_layer_and_shapes(tmp_path, capsys):
    loss_pt = export(tmp_path, "loss_net")
    model = str(DATA / "layers_net.prototxt")
    base = ["import", "-model", model, "-o", str(tmp_path / "x.caffemodel"), "-i"]
    err = one_line_error(base + [str(loss_pt)], capsys, "import")
    assert ("loss_net.pt: layer 'conv1': blob 0 (weight) has shape 8x3x3x3 in the file but 8x3x5x5 "
            "in the net") in err
    state = torch.load(export(tmp_path, "layers_net"), weights_only=True)
    for change, expected in [(lambda s: s.pop("bn4.variance"), "layer 'bn4': blob 1 (variance) is missing"),
                             (lambda s: s.update(extra=torch.ones(1)), "key 'extra' names no blob of net"),
                             (lambda s: s.update({"ip1.0": s["ip1.weight"]}),
                              "key 'ip1.0' gives blob 0 a second"),
                             (lambda s: s.update({"conv1.bias": torch.ones(3)}),
                              "layer 'conv1': blob 1 (bias) has shape 3 in the file but 8 in the net")]:
        bad = dict(state)
        change(bad)
        torch.save(bad, tmp_path / "bad.pt")
        assert expected in one_line_error(base + [str(tmp_path / "bad.pt")], capsys, "import")
    assert not (tmp_path / "x.caffemodel").exists()
    assert "nope.pt: no such file" in one_line_error(base + [str(tmp_path / "nope.pt")], capsys, "import")
    torch.save({"conv1.weight": object()}, tmp_path / "pickled.pt")
    assert "pickled.pt: not a tensors-only .pt state_dict" in one_line_error(
        base + [str(tmp_path / "pickled.pt")], capsys, "import")


def test_export_errors(tmp_path, capsys):
    model, w = str(DATA / "loss_net.prototxt"), str(DATA / "loss_net.caffemodel")
    assert "nothing to write" in one_line_error(["export", "-model", model, "-weights", w], capsys, "export")
    err = one_line_error(["export", w, "--onnx", str(tmp_path / "x.onnx")], capsys, "export")
    assert "--onnx needs -model" in err
    err = one_line_error(["export", "-model", model, "-weights", str(DATA / "layers_net.caffemodel"),
                          "-o", str(tmp_path / "x.pt")], capsys, "export")
    assert "layer 'conv1'" in err and "in the net" in err and not (tmp_path / "x.pt").exists()


def test_deployed_net_turns_data_layers_into_inputs():
    model = str(DATA / "data_net.prototxt")
    param = load_net(model)
    net = compile_net(param, source=model)
    deployed = as_deployed(param, net)
    assert [lp.type for lp in deployed.layer] == ["Input"]
    assert [tuple(s.dim) for s in deployed.layer[0].input_param.shape] == [(5, 3, 57, 57), (5,)]
    assert list(deployed.layer[0].top) == ["data", "label"]


@pytest.mark.slow
def test_onnx_export_checks_and_agrees_with_eager(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx_reference import evaluator

    path = tmp_path / "layers_net.onnx"
    export(tmp_path, "layers_net", "--onnx", str(path))
    assert "dynamo exporter, dynamic batch" in capsys.readouterr().out
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    net = trained("layers_net")
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == net.output_names
    data = np.load(DATA / "layers_net_blobs.npz")["data"]
    for x in (data, np.concatenate([data, data[:1]])):  # the stored batch of 2, and a batch of 3
        got = evaluator(model).run(None, {"data": x})
        with torch.no_grad():
            want = net.graph_module(outputs=net.output_names)(torch.from_numpy(x))
        for blob, g in zip(net.output_names, got):
            err = np.abs(g - want[blob].numpy()).max()
            assert g.shape == tuple(want[blob].shape) and err < 1e-4, f"{blob}: worst error {err}"


@pytest.mark.slow
def test_onnx_export_of_a_net_with_loss_and_accuracy(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx_reference import evaluator

    net = trained("loss_net")
    path = tmp_path / "loss_net.onnx"
    export_onnx(net, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    blobs = np.load(DATA / "loss_net_blobs.npz")
    outs = evaluator(model).run(None, {"data": blobs["data"], "label": blobs["label"]})
    got = dict(zip([o.name for o in model.graph.output], outs))
    loss, acc = got["loss"], got["acc"]
    assert abs(float(loss) - float(blobs["loss"])) < 1e-4 and float(acc) == float(blobs["acc"]), (loss, acc)
