"""netspec.formats.export: trained blobs <-> a tensors-only PyTorch state_dict file."""
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.formats.caffemodel import read_caffemodel, read_weights, write_caffemodel
from netspec.formats.export import export_state_dict, import_state_dict

DATA = Path(__file__).parent / "data" / "caffe"


def caffe_params(model="layers_net.caffemodel"):
    return {name: blobs for name, (_, blobs) in read_weights(DATA / model).items() if blobs}


def test_export_loads_with_weights_only_and_keeps_values(tmp_path):
    params = caffe_params()
    path = tmp_path / "w.pt"
    export_state_dict(params, path)
    state = torch.load(path, weights_only=True)
    assert "conv1.0" in state and "bn4.2" in state and "relu1.0" not in state
    for name, blobs in params.items():
        for i, blob in enumerate(blobs):
            assert np.array_equal(state[f"{name}.{i}"].numpy(), blob), f"{name}.{i}"


def test_import_gives_back_caffe_blobs_and_a_caffemodel(tmp_path):
    params = caffe_params("loss_net.caffemodel")
    export_state_dict({k: [torch.from_numpy(b) for b in v] for k, v in params.items()}, tmp_path / "w.pt")
    back = import_state_dict(tmp_path / "w.pt")
    assert list(back) == list(params)
    assert all(np.array_equal(a, b) for k in params for a, b in zip(params[k], back[k]))
    net = read_caffemodel(DATA / "loss_net.caffemodel")
    write_caffemodel(tmp_path / "w.caffemodel", net, back)
    assert (tmp_path / "w.caffemodel").read_bytes() == (DATA / "loss_net.caffemodel").read_bytes()


def test_import_maps_blob_names_and_dotted_layer_names(tmp_path):
    state = {"inception.3a/1x1.bias": torch.ones(2), "inception.3a/1x1.weight": torch.zeros(2, 3),
             "bn.variance": torch.ones(4), "bn.scale_factor": torch.ones(1), "bn.mean": torch.zeros(4)}
    torch.save(state, tmp_path / "named.pt")
    back = import_state_dict(tmp_path / "named.pt")
    assert [b.shape for b in back["inception.3a/1x1"]] == [(2, 3), (2,)]
    assert [b.shape for b in back["bn"]] == [(4,), (4,), (1,)] and back["bn"][1].tolist() == [1.0] * 4


@pytest.mark.parametrize("state, expected", [
    ({"conv1.gamma": torch.ones(1)}, "key 'conv1.gamma' is not"),
    ({"conv1": torch.ones(1)}, "key 'conv1' is not"),
    ({"conv1.0": torch.ones(1), "conv1.2": torch.ones(1)},
     "layer 'conv1': blobs [0, 2] are not numbered 0..1"),
    ({"conv1.0": torch.ones(1), "conv1.weight": torch.ones(1)}, "mix indices and names"),
    ({"conv1.0": [1.0]}, "holds a list, expected a tensor"),
    ([torch.ones(1)], "holds a list, expected a dict of tensors"),
])
def test_import_errors(state, expected, tmp_path):
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(NetspecError) as e:
        import_state_dict(path)
    assert "\n" not in str(e.value) and "bad.pt" in str(e.value) and expected in str(e.value)


def test_import_refuses_pickled_objects_and_missing_files(tmp_path):
    torch.save({"conv1.0": torch.ones(1), "meta": object()}, tmp_path / "pickle.pt")
    with pytest.raises(NetspecError, match="pickle.pt: not a tensors-only .pt state_dict"):
        import_state_dict(tmp_path / "pickle.pt")
    with pytest.raises(NetspecError, match="nope.pt: no such file"):
        import_state_dict(tmp_path / "nope.pt")


def test_cli_export_then_import_round_trip(tmp_path, capsys):
    from netspec.cli import main

    pt, model, bare = tmp_path / "w.pt", tmp_path / "w.caffemodel", tmp_path / "bare.caffemodel"
    assert main(["export", str(DATA / "layers_net.caffemodel"), str(pt)]) == 0
    assert main(["import", str(pt), str(model), "-model", str(DATA / "layers_net.prototxt"),
                 "-phase", "TEST"]) == 0
    assert main(["import", str(pt), str(bare)]) == 0
    original = caffe_params()
    for path in (model, bare):
        again = {k: b for k, (_, b) in read_weights(path).items() if b}
        assert list(again) == list(original)
        assert all(np.array_equal(a, b) for k in original for a, b in zip(original[k], again[k])), path
    assert read_weights(model)["conv1"][0] == "Convolution" and read_weights(bare)["conv1"][0] == ""
    assert main(["export", str(tmp_path / "nope.caffemodel"), str(pt)]) == 1
    assert "nope.caffemodel: no such file" in capsys.readouterr().err


def test_named_blobs_are_ordered_as_caffe_stores_them(tmp_path):
    path = tmp_path / "named.pt"
    torch.save({"sc.bias": torch.full((3,), 2.0), "sc.scale": torch.ones(3), "sc2.bias": torch.zeros(3),
                "pr.slope": torch.full((3,), 0.25), "ip.bias": torch.zeros(2), "ip.weight": torch.ones(2, 3)}, path)
    layers = import_state_dict(path)
    assert [b.tolist() for b in layers["sc"]] == [[1.0] * 3, [2.0] * 3]    # Scale with bias_term
    assert [b.shape for b in layers["sc2"]] == [(3,)]                        # two-bottom Scale: bias only
    assert layers["pr"][0].tolist() == [0.25] * 3 and [b.shape for b in layers["ip"]] == [(2, 3), (2,)]
    torch.save({"x.0": torch.ones(1), "x.bias": torch.ones(1)}, path)
    with pytest.raises(NetspecError, match="mix indices and names"):
        import_state_dict(path)
