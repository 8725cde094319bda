"""Bring legacy Caffe nets to the current format (follows Caffe's src/caffe/util/upgrade_proto.cpp).

Caffe reads old model-zoo files by upgrading them in memory, in this order (UpgradeNetAsNeeded):
  1. data-layer transformation fields: V1 DATA / IMAGE_DATA / WINDOW_DATA layers that set
     scale, mean_file, crop_size or mirror in their own *_param move them to transform_param;
  2. V1 nets (`layers { type: CONVOLUTION blobs_lr: 1 ... }`) become `layer { type: "Convolution"
     param { lr_mult: 1 } ... }`;
  3. net-level `input:` with `input_shape:` / `input_dim:` becomes an Input layer named "input",
     placed first (an `input:` with no shape, as in old .caffemodel files, is simply dropped);
  4. BatchNorm layers that list exactly 3 ParamSpecs (the old way to freeze the statistics) get
     lr_mult and decay_mult 0 on each.
V0 nets (`layers { layer { ... } }`, Caffe before 2014) are refused: convert them with Caffe's own
upgrade_net_proto_text. Where Caffe would log an error and carry on, netspec raises NetspecError.
"""
from __future__ import annotations

from ..errors import NetspecError
from ..proto.v1types import V1_LAYER_TYPES, v1_type
from ..proto import pb

__all__ = ["needs_upgrade", "upgrade_net", "upgrade_v1_layer", "V1_LAYER_TYPES"]

# V1 data layers whose own *_param still carries the pre-TransformationParameter fields.
_LEGACY_TRANSFORM_OWNERS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                            "WINDOW_DATA": "window_data_param"}
_LEGACY_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def needs_upgrade(net: pb.NetParameter) -> bool:
    """True when `upgrade_net` would change `net` (or refuse it, for V0)."""
    legacy_input = net.input or net.input_shape or net.input_dim
    return bool(net.layers or legacy_input) or any(_is_old_batch_norm(lp) for lp in net.layer)


def upgrade_net(net: pb.NetParameter, source: str | None = None) -> pb.NetParameter:
    """A copy of `net` in the current format; `source` names the file in errors."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    if out.layers:
        _check_v1_net(out, source)
        _upgrade_data_transformation(out)
        _upgrade_v1_net(out)
    if out.input or out.input_shape or out.input_dim:
        _upgrade_input(out, source)
    for layer in out.layer:
        if _is_old_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult, spec.decay_mult = 0.0, 0.0
    return out


def _check_v1_net(net: pb.NetParameter, source) -> None:
    for v1 in net.layers:
        if v1.HasField("layer"):
            name = v1.layer.name or v1.name or None
            raise NetspecError("V0 net format (layers { layer { ... } }, Caffe before 2014) is not "
                               "supported; convert it with Caffe's upgrade_net_proto_text",
                               file=source, layer=name)
    if net.layer:
        # Caffe drops the `layer` entries with a logged error; losing layers silently is worse.
        raise NetspecError(f"mixes {len(net.layer)} current 'layer' and {len(net.layers)} legacy V1 "
                           "'layers' entries; write every layer in one form", file=source)


def _upgrade_data_transformation(net: pb.NetParameter) -> None:
    """Caffe's UpgradeNetDataTransformation, on the V1 layers."""
    for v1 in net.layers:
        owner = _LEGACY_TRANSFORM_OWNERS.get(pb.V1LayerParameter.LayerType.Name(v1.type))
        if owner is None or not v1.HasField(owner):
            continue
        param = getattr(v1, owner)
        for name in _LEGACY_TRANSFORM_FIELDS:
            if param.HasField(name):
                setattr(v1.transform_param, name, getattr(param, name))
                param.ClearField(name)


def _upgrade_v1_net(net: pb.NetParameter) -> None:
    """Caffe's UpgradeV1Net: every `layers` entry becomes a `layer` entry."""
    upgraded = [upgrade_v1_layer(v1) for v1 in net.layers]
    net.ClearField("layers")
    net.layer.extend(upgraded)


def upgrade_v1_layer(v1: pb.V1LayerParameter) -> pb.LayerParameter:
    """Caffe's UpgradeV1LayerParameter for one layer (V0 content already refused)."""
    layer = pb.LayerParameter(bottom=v1.bottom, top=v1.top, include=v1.include, exclude=v1.exclude,
                              blobs=v1.blobs, loss_weight=v1.loss_weight)
    if v1.HasField("name"):
        layer.name = v1.name
    if v1.HasField("type"):
        layer.type = v1_type(v1.type)
    # The i-th ParamSpec gathers the i-th entry of each per-blob list; lists may differ in length.
    per_blob = [("name", v1.param), ("share_mode", v1.blob_share_mode), ("lr_mult", v1.blobs_lr),
                ("decay_mult", v1.weight_decay)]
    for field, values in per_blob:
        for i, value in enumerate(values):
            while len(layer.param) <= i:
                layer.param.add()
            # V1 DimCheckMode and ParamSpec DimCheckMode share names and numbers (STRICT, PERMISSIVE).
            setattr(layer.param[i], field, value)
    for field, value in v1.ListFields():
        if field.name.endswith("_param"):
            getattr(layer, field.name).CopyFrom(value)
    return layer


def _upgrade_input(net: pb.NetParameter, source) -> None:
    """Caffe's UpgradeNetInput: legacy net inputs become one Input layer, first in the net."""
    names, shapes, dims = list(net.input), list(net.input_shape), list(net.input_dim)
    for field in ("input", "input_shape", "input_dim"):
        net.ClearField(field)
    if not shapes and not dims:
        return  # a bare `input:` (old .caffemodel files): nothing to build
    if shapes and len(shapes) != len(names):
        raise NetspecError(f"{len(names)} input: blobs but {len(shapes)} input_shape: entries; "
                           "expected one shape per input", file=source)
    if not shapes and len(dims) != 4 * len(names):
        raise NetspecError(f"{len(names)} input: blobs but {len(dims)} input_dim: values; "
                           "expected 4 per input (num, channels, height, width)", file=source)
    if not shapes:
        shapes = [pb.BlobShape(dim=dims[4 * i: 4 * i + 4]) for i in range(len(names))]
    layer = pb.LayerParameter(name="input", type="Input", top=names)
    layer.input_param.shape.extend(shapes)
    layers = [layer, *net.layer]
    net.ClearField("layer")
    net.layer.extend(layers)


def _is_old_batch_norm(layer: pb.LayerParameter) -> bool:
    """Caffe's NetNeedsBatchNormUpgrade, less the layers whose 3 ParamSpecs already say 0 and 0."""
    if layer.type != "BatchNorm" or len(layer.param) != 3:
        return False
    frozen = [s.HasField("lr_mult") and s.HasField("decay_mult") and s.lr_mult == s.decay_mult == 0
              for s in layer.param]
    return not all(frozen)
