"""models/alexnet and models/caffenet: they compile for TRAIN and TEST, train a step on the CPU, have
the paper's spatial sizes and the parameter counts their READMEs work out by hand, place AlexNet's
columns on gpu0/gpu1 with copies only into conv3 and the fully connected layers, compute what BVLC's
grouped single-device AlexNet computes, and export through torch.compile and ONNX.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.proto import pb

MODELS = Path(__file__).resolve().parent.parent / "models"
ALEXNET, CAFFENET = MODELS / "alexnet", MODELS / "caffenet"
BATCH = 2
# Blobs whose spatial size the paper fixes: 55 / 27 / 27 / 13 / 13 / 13 / 13 / 6.
SPATIAL = {"conv1": 55, "pool1": 27, "conv2": 27, "pool2": 13, "conv3": 13, "conv4": 13, "conv5": 13,
           "pool5": 6}


def with_inputs(net: pb.NetParameter, batch: int = BATCH) -> pb.NetParameter:
    """The net with each Data layer replaced by an Input layer of the same tops (no LMDB needed)."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    for lp in out.layer:
        if lp.type == "Data":
            crop = lp.transform_param.crop_size
            tops = list(lp.top)
            name = lp.name
            lp.Clear()
            lp.name, lp.type = name, "Input"
            lp.top.extend(tops)
            lp.input_param.shape.add().dim.extend([batch, 3, crop, crop])
            lp.input_param.shape.add().dim.extend([batch])
    return out


def compile_model(folder: Path, phase: int, device_map="cpu", seed: int = 7, batch: int = BATCH):
    path = folder / "train_val.prototxt"
    net = with_inputs(load_net(path, phase=phase), batch)
    return compile_net(net, phase=phase, device_map=device_map, seed=seed, source=str(path))


def compile_deploy(folder: Path, device_map="cpu", batch: int = BATCH, seed: int = 7):
    """deploy.prototxt has no fillers (weights come from a .caffemodel): fill them from N(0, 0.01²)."""
    path = folder / "deploy.prototxt"
    net = compile_net(load_net(path), device_map=device_map, seed=seed, source=str(path),
                      input_shapes={"data": (batch, 3, 227, 227)})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    return net


def images(batch: int = BATCH, seed: int = 0) -> torch.Tensor:
    """Mean-subtracted pixels: roughly N(0, 50²)."""
    return torch.randn((batch, 3, 227, 227), generator=torch.Generator().manual_seed(seed)) * 50


def labels(batch: int = BATCH) -> torch.Tensor:
    return torch.arange(batch, dtype=torch.float32) * 7


@pytest.fixture(scope="module")
def alexnet_test():
    return compile_model(ALEXNET, pb.TEST)


@pytest.fixture(scope="module")
def caffenet_deploy():
    return compile_deploy(CAFFENET, batch=1)


# ---- shapes and parameter counts -------------------------------------------------------------
@pytest.mark.parametrize("folder", [ALEXNET, CAFFENET], ids=["alexnet", "caffenet"])
@pytest.mark.parametrize("phase", [pb.TRAIN, pb.TEST], ids=["TRAIN", "TEST"])
def test_train_val_compiles_with_the_papers_spatial_sizes(folder, phase):
    net = compile_model(folder, phase)
    seen = set()
    for blob, shape in net.blob_shapes.items():
        stem = blob.split("_")[0]
        if stem in SPATIAL and "both" not in blob:
            assert shape[0] == BATCH and shape[2:] == (SPATIAL[stem],) * 2, f"blob {blob} has shape {shape}"
            seen.add(stem)
    assert seen == set(SPATIAL)
    assert net.blob_shapes["fc8"] == (BATCH, 1000)
    expected = {"loss"} | ({"accuracy", "accuracy_top5"} if phase == pb.TEST else set())
    assert set(net.output_names) == expected


def _readme_count_rows(readme: Path) -> list[tuple[str, str, int]]:
    """The `name  arithmetic = number` rows of the fenced block under '## Parameter count'."""
    text = readme.read_text()
    section = text.split("## Parameter count", 1)[1]
    block = section.split("```", 2)[1]
    rows = []
    for line in block.splitlines()[1:]:
        m = re.match(r"^(\w+)\s+(.*?)\s*=\s*([\d,]+)\s*$", line)
        if m:
            rows.append((m.group(1), m.group(2), int(m.group(3).replace(",", ""))))
    return rows


@pytest.mark.parametrize("folder", [ALEXNET, CAFFENET], ids=["alexnet", "caffenet"])
def test_parameter_count_equals_the_readmes_hand_count(folder):
    rows = _readme_count_rows(folder / "README.md")
    net = compile_deploy(folder, batch=1)
    per_layer = {info.layer: 0 for info in net.learnable_params()}
    for info in net.learnable_params():
        per_layer[info.layer] += info.tensor.numel()
    total = [n for name, _, n in rows if name == "total"]
    assert len(total) == 1 and len(rows) == 9, f"README rows: {rows}"
    for name, arithmetic, value in rows:
        if name == "total":
            continue
        assert re.fullmatch(r"[\d×+() ]+", arithmetic), f"row {name}: '{arithmetic}' is not plain arithmetic"
        assert eval(arithmetic.replace("×", "*")) == value, f"README row {name}: {arithmetic} != {value:,}"
        netspec = sum(n for layer, n in per_layer.items() if layer.split("_")[0] == name)
        assert netspec == value, f"layer(s) {name}: netspec counts {netspec:,}, README {value:,}"
    assert sum(v for name, _, v in rows if name != "total") == total[0]
    assert sum(per_layer.values()) == total[0], f"netspec {sum(per_layer.values()):,}, README {total[0]:,}"


# ---- training on the CPU -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("folder", [ALEXNET, CAFFENET], ids=["alexnet", "caffenet"])
def test_forward_backward_on_cpu(folder):
    net = compile_model(folder, pb.TRAIN)
    blobs = net(data=images(), label=labels())
    loss = net.total_loss(blobs)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for info in net.learnable_params():
        g = info.tensor.grad
        assert g is not None and torch.isfinite(g).all(), f"{info.layer} blob {info.index} has no finite grad"
    # weights are N(0, 0.01²) except biases: every weight blob gets some gradient
    assert all(info.tensor.grad.abs().sum() > 0 for info in net.learnable_params() if info.index == 0)


# ---- AlexNet's placement --------------------------------------------------------------------------
COLUMN_LAYER = re.compile(r"^(conv|relu|norm|pool|fc|drop|concat)\d_([01])$")


def test_alexnet_columns_are_bound_to_gpu0_and_gpu1(alexnet_test):
    gm = alexnet_test.graph_module()
    placed = {n.meta["netspec_layer"]: n.meta["netspec_device"]
              for n in gm.graph.nodes if "netspec_layer" in n.meta}
    columns = {name: m.group(2) for name in placed if (m := COLUMN_LAYER.match(name))}
    assert len(columns) == 2 * 24, sorted(columns)   # 24 layers per column at TEST
    for name, col in columns.items():
        assert placed[name] == f"gpu{col}", f"layer {name} is on '{placed[name]}'"
    assert {placed[n] for n in ("concat7", "fc8", "loss", "accuracy")} == {"gpu0"}


def test_alexnet_copies_only_into_conv3_and_the_fully_connected_layers(alexnet_test):
    gm = alexnet_test.graph_module()
    transfers = [n.meta for n in gm.graph.nodes if "netspec_transfer" in n.meta]
    readers: dict[str, set[str]] = {}
    for lp in alexnet_test.layer_params:
        for b in lp.bottom:
            readers.setdefault(b, set()).add(lp.name)
    feeds = {lp.name: set().union(*(readers.get(t, set()) for t in lp.top))
             for lp in alexnet_test.layer_params}
    # the input blobs are delivered to the devices that read them: the image to both first layers
    delivered = sorted((m["netspec_transfer"], m["netspec_consumer"]) for m in transfers
                       if m["netspec_transfer"][0] in alexnet_test.input_names)
    assert delivered == [(("data", "", "gpu0"), "conv1_0"), (("data", "", "gpu1"), "conv1_1"),
                         (("label", "", "gpu0"), "accuracy"), (("label", "", "gpu0"), "accuracy_top5"),
                         (("label", "", "gpu0"), "loss")]
    transfers = [m for m in transfers if m["netspec_transfer"][0] not in alexnet_test.input_names]
    assert len(transfers) == 7, [m["netspec_transfer"] for m in transfers]
    for meta in transfers:
        blob, src, dst = meta["netspec_transfer"]
        consumer = meta["netspec_consumer"]
        # the concat layers gather both columns for exactly conv3, fc6, fc7 and fc8
        assert consumer.startswith("concat"), f"blob {blob} copied {src}->{dst} into {consumer}"
        targets = {t.split("_")[0] for t in feeds[consumer]}
        assert len(targets) == 1 and targets <= {"conv3", "fc6", "fc7", "fc8"}, (consumer, feeds[consumer])
        assert {src, dst} == {"gpu0", "gpu1"}


def test_alexnet_on_two_cpu_devices_equals_the_single_device_run():
    mapped = compile_model(ALEXNET, pb.TEST, device_map="gpu0=cpu,gpu1=cpu", seed=3)
    single = compile_model(ALEXNET, pb.TEST, device_map=None, seed=3)
    x, y = images(), labels()
    a, b = mapped(data=x, label=y), single(data=x, label=y)
    for blob in ("pool2_both_1", "fc7_both", "fc8", "loss"):
        assert torch.equal(a[blob], b[blob]), f"blob {blob}: worst error {(a[blob] - b[blob]).abs().max()}"


def _grouped_alexnet() -> pb.NetParameter:
    """BVLC's layout of the same net: CaffeNet's layers with group 2 in conv2, conv4 and conv5."""
    net = load_net(CAFFENET / "deploy.prototxt")
    for lp in net.layer:
        if lp.name in ("conv2", "conv4", "conv5"):
            lp.convolution_param.group = 2
    return net


@pytest.mark.slow
def test_alexnet_columns_compute_bvlcs_grouped_alexnet():
    """Two columns = one device with groups, once LRN cannot see across the column boundary.

    With alpha 0 LRN is a plain scale, so only the wiring (which maps each layer reads) is compared;
    with the paper's alpha, BVLC's LRN windows straddle channels 47|48 (128|127 in layer 2).
    """
    two = load_net(ALEXNET / "deploy.prototxt")
    one = _grouped_alexnet()
    for net in (two, one):
        for lp in net.layer:
            if lp.type == "LRN":
                lp.lrn_param.alpha = 0.0
    two = compile_net(two, device_map="gpu0=cpu,gpu1=cpu", input_shapes={"data": (BATCH, 3, 227, 227)})
    one = compile_net(one, device_map="cpu", input_shapes={"data": (BATCH, 3, 227, 227)})
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, layer in one.layers.items():
            for blob_name in layer.blob_names:
                halves = [getattr(two.layers[n], blob_name) for n in (f"{name}_0", f"{name}_1")] \
                    if name != "fc8" else [getattr(two.layers["fc8"], blob_name)]
                for h in halves:
                    h.copy_(torch.randn(h.shape, generator=gen) * (0.01 if blob_name == "weight" else 0.1))
                getattr(layer, blob_name).copy_(torch.cat(halves, 0))
        x = images()
        a, b = two(x)["fc8"], one(x)["fc8"]
    err = (a - b).abs().max().item()
    assert err <= 1e-5 * b.abs().max().item(), f"blob fc8: worst error {err:.3g} (scale {b.abs().max():.3g})"


@pytest.mark.cuda
def test_alexnet_both_columns_on_one_gpu():
    cpu = compile_deploy(ALEXNET, device_map="cpu")
    gpu = compile_deploy(ALEXNET, device_map="gpu0=cuda:0,gpu1=cuda:0")
    x = images()
    with torch.no_grad():
        a = cpu(x)["prob"]
        b = gpu(x.cuda())["prob"]
    assert b.device.type == "cuda"
    err = (a - b.cpu()).abs().max().item()
    assert err < 1e-4, f"blob prob: worst error {err:.3g}"


# ---- torch.compile and ONNX -------------------------------------------------------------------------
class _Prob(torch.nn.Module):
    """The net's `prob` blob as a plain tensor output (exporters want tensors, not dicts)."""

    def __init__(self, net):
        super().__init__()
        self.gm = net.graph_module(outputs=["prob"])

    def forward(self, data):
        return self.gm(data)["prob"]


@pytest.mark.slow
def test_caffenet_deploy_under_torch_compile(caffenet_deploy):
    gm = caffenet_deploy.graph_module(outputs=["prob", "fc8"])
    x = images(1)
    with torch.no_grad():
        ref = gm(x)
        try:
            got = torch.compile(gm)(x)
        except Exception as e:  # noqa: BLE001 - only a missing toolchain is a reason to skip
            if re.search(r"compiler|cc1|gcc|g\+\+|clang", str(e), re.I) and "netspec" not in str(e):
                pytest.skip(f"torch.compile cannot build kernels here: {str(e).splitlines()[0]}")
            raise
    for blob in ("fc8", "prob"):
        err = (got[blob] - ref[blob]).abs().max().item()
        assert err <= 1e-5 * max(ref[blob].abs().max().item(), 1e-3), f"blob {blob}: worst error {err:.3g}"


def _export(module, x, path):
    torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["data"], output_names=["prob"])
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


@pytest.mark.slow
def test_caffenet_deploy_exports_to_onnx(caffenet_deploy, tmp_path):
    from onnx_reference import evaluator

    x = images(1)
    model = _export(_Prob(caffenet_deploy), x, tmp_path / "caffenet.onnx")
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Softmax"} <= ops, f"exported operators: {sorted(ops)}"
    with torch.no_grad():
        ref = _Prob(caffenet_deploy)(x).numpy()
    got = evaluator(model).run(None, {"data": x.numpy()})[0]
    err = float(np.abs(got - ref).max())
    assert err < 1e-5, f"blob prob: worst error {err:.3g}"
