"""The schema: generated module up to date, Caffe's own files read and re-written unchanged, Caffe's
field numbers and defaults, and netspec's additions kept at numbers >= 10000."""
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from netspec.proto import pb

ROOT = Path(__file__).resolve().parent.parent
CAFFE = ROOT / "tests" / "data" / "caffe"
PROTO = ROOT / "protos" / "netspec.proto"

PROTOTXTS = sorted(p.name for p in CAFFE.glob("*.prototxt"))
BINARIES = {  # file written by real Caffe -> the message it holds
    "loss_net.caffemodel": pb.NetParameter,
    "layers_net.caffemodel": pb.NetParameter,
    "sgd_step_iter_12.caffemodel": pb.NetParameter,
    "sgd_step_iter_12.solverstate": pb.SolverState,
    "mean.binaryproto": pb.BlobProto,
}


def message_for(name: str):
    return pb.SolverParameter if name.endswith("_solver.prototxt") else pb.NetParameter


def test_committed_module_matches_the_proto():
    pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) is needed to run protoc")
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "tools" / "gen_proto.py")
    gen_proto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_proto)
    committed = (ROOT / "netspec" / "proto" / "netspec_pb2.py").read_text()
    assert gen_proto.generate() == committed, \
        "netspec/proto/netspec_pb2.py is stale: run `python tools/gen_proto.py` and commit the result"


def test_fixture_list_is_complete():
    assert {"loss_net.prototxt", "layers_net.prototxt", "data_net.prototxt",
            "sgd_step_solver.prototxt"} <= set(PROTOTXTS)
    written = {p.name for p in CAFFE.iterdir() if p.suffix in (".caffemodel", ".solverstate", ".binaryproto")}
    assert written == set(BINARIES), "a new binary fixture needs an entry in BINARIES"


@pytest.mark.parametrize("name", PROTOTXTS)
def test_prototxt_parses_and_round_trips(name):
    text = (CAFFE / name).read_text()
    message = text_format.Parse(text, message_for(name)())
    assert message.ByteSize() > 0, f"{name} parsed to an empty message"
    written = text_format.MessageToString(message)
    again = text_format.Parse(written, message_for(name)())
    assert again == message, f"{name}: text -> message -> text -> message changed the message"
    assert text_format.MessageToString(again) == written


def test_prototxt_content_lands_in_the_right_fields():
    solver = text_format.Parse((CAFFE / "sgd_step_solver.prototxt").read_text(), pb.SolverParameter())
    assert (solver.net, solver.lr_policy, solver.stepsize, solver.max_iter) == \
        ("loss_net.prototxt", "step", 5, 12)
    assert solver.solver_mode == pb.SolverParameter.CPU and solver.random_seed == 1
    net = text_format.Parse((CAFFE / "loss_net.prototxt").read_text(), pb.NetParameter())
    conv1 = net.layer[1]
    assert (conv1.type, conv1.convolution_param.num_output, list(conv1.convolution_param.stride)) == \
        ("Convolution", 8, [2])
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1, 1), (2, 0)]


@pytest.mark.parametrize("name", sorted(BINARIES))
def test_caffe_binary_files_parse_and_reserialise_to_the_same_bytes(name):
    data = (CAFFE / name).read_bytes()
    message = BINARIES[name]()
    message.ParseFromString(data)
    assert message.SerializeToString() == data, f"{name}: re-serialising changed the bytes"
    # Every field real Caffe wrote must be a known field: dropping unknown fields changes nothing.
    known = BINARIES[name]()
    known.CopyFrom(message)
    known.DiscardUnknownFields()
    assert known.SerializeToString() == data, f"{name} holds fields netspec's schema does not know"


def test_binary_contents_look_like_caffes():
    mean = pb.BlobProto.FromString((CAFFE / "mean.binaryproto").read_bytes())
    assert (mean.num, mean.channels, mean.height, mean.width) == (1, 3, 64, 64)
    assert len(mean.data) == 3 * 64 * 64
    state = pb.SolverState.FromString((CAFFE / "sgd_step_iter_12.solverstate").read_bytes())
    assert state.iter == 12 and state.learned_net.endswith("sgd_step_iter_12.caffemodel")
    model = pb.NetParameter.FromString((CAFFE / "loss_net.caffemodel").read_bytes())
    conv1 = next(layer for layer in model.layer if layer.name == "conv1")
    assert [list(b.shape.dim) for b in conv1.blobs] == [[8, 3, 3, 3], [8]]


def field(message, name):
    return message.DESCRIPTOR.fields_by_name[name]


@pytest.mark.parametrize("message, name, number", [
    (pb.LayerParameter, "convolution_param", 106), (pb.LayerParameter, "transform_param", 100),
    (pb.LayerParameter, "batch_norm_param", 139), (pb.LayerParameter, "input_param", 143),
    (pb.LayerParameter, "param", 6), (pb.LayerParameter, "include", 8), (pb.LayerParameter, "phase", 10),
    (pb.NetParameter, "layer", 100), (pb.NetParameter, "layers", 2), (pb.NetParameter, "input_dim", 4),
    (pb.ConvolutionParameter, "dilation", 18), (pb.ConvolutionParameter, "group", 5),
    (pb.SolverParameter, "type", 40), (pb.SolverParameter, "random_seed", 20),
    (pb.SolverParameter, "layer_wise_reduce", 41), (pb.SolverParameter, "weights", 42),
    (pb.SolverState, "current_step", 4), (pb.BlobProto, "shape", 7), (pb.BlobProto, "double_data", 8),
    (pb.Datum, "encoded", 7), (pb.V1LayerParameter, "blobs_lr", 7), (pb.V1LayerParameter, "layer", 1),
    (pb.ParamSpec, "lr_mult", 3), (pb.ParamSpec, "decay_mult", 4),
])
def test_field_numbers_are_caffes(message, name, number):
    assert field(message, name).number == number, f"{message.__name__}.{name}"


@pytest.mark.parametrize("message, name, default", [
    (pb.PoolingParameter, "pool", pb.PoolingParameter.MAX), (pb.LRNParameter, "k", 1.0),
    (pb.LRNParameter, "local_size", 5), (pb.LRNParameter, "beta", 0.75),
    (pb.SolverParameter, "random_seed", -1), (pb.SolverParameter, "type", "SGD"),
    (pb.SolverParameter, "solver_mode", pb.SolverParameter.GPU), (pb.SolverParameter, "clip_gradients", -1.0),
    (pb.SolverParameter, "test_initialization", True), (pb.SolverParameter, "momentum2", np.float32(0.999)),
    (pb.ParamSpec, "lr_mult", 1.0), (pb.ParamSpec, "decay_mult", 1.0),
    (pb.FillerParameter, "type", "constant"), (pb.FillerParameter, "std", 1.0),
    (pb.FillerParameter, "sparse", -1), (pb.ConvolutionParameter, "bias_term", True),
    (pb.LossParameter, "normalization", pb.LossParameter.VALID), (pb.NetState, "phase", pb.TEST),
    (pb.DataParameter, "backend", pb.DataParameter.LEVELDB), (pb.DropoutParameter, "dropout_ratio", 0.5),
    (pb.BatchNormParameter, "moving_average_fraction", np.float32(0.999)),
])
def test_defaults_are_caffes(message, name, default):
    # float fields are float32 in Caffe: 0.999 is compared as the float32 nearest to it
    assert getattr(message(), name) == default, f"{message.__name__}.{name}"
    assert field(message, name).has_default_value, f"{message.__name__}.{name} lost its explicit default"


def declared_extensions() -> dict[tuple[str, str], int]:
    """Fields the .proto declares after a 'netspec extension' comment inside a message body."""
    found, stack = {}, []  # stack of [block name, inside-extension-section]
    for line in PROTO.read_text().splitlines():
        code = line.split("//")[0]
        if "netspec extension" in line and stack:
            stack[-1][1] = True
        m = re.match(r"\s*(?:optional|repeated|required)\s+\S+\s+(\w+)\s*=\s*(\d+)", code)
        if m and stack and stack[-1][1]:
            found[(stack[-1][0], m.group(1))] = int(m.group(2))
        for brace in re.finditer(r"(?:(?:message|enum|oneof)\s+(\w+)\s*)?\{|\}", code):
            if brace.group(0) == "}":
                stack.pop()
            else:
                stack.append([brace.group(1) or "?", False])
    return found


def all_fields():
    def walk(desc):
        for f in desc.fields:
            yield desc.name, f.name, f.number
        for nested in desc.nested_types:
            yield from walk(nested)
    for desc in pb.DESCRIPTOR.message_types_by_name.values():
        yield from walk(desc)


def test_netspec_extensions_are_numbered_from_10000():
    declared = declared_extensions()
    assert {("LayerParameter", "device"), ("TransformationParameter", "color_aug_param"),
            ("SolverParameter", "device_map"), ("SolverParameter", "precision"),
            ("SolverParameter", "channels_last"), ("SolverParameter", "torch_compile"),
            ("SolverParameter", "cudnn_benchmark")} <= set(declared)
    low = {key: number for key, number in declared.items() if number < 10000}
    assert not low, f"netspec extension fields below 10000 would collide with Caffe's: {low}"
    high = {(msg, name) for msg, name, number in all_fields() if number >= 10000}
    forks_high = {key for key, (number, _) in FORK_FIELDS.items() if number >= 10000}
    assert high == set(declared) | forks_high, \
        f"fields >= 10000 not marked as netspec or fork extensions: {high ^ (set(declared) | forks_high)}"


# Fields of Caffe forks kept at the fork's own number (README "Fork layers"): (number, fork).
FORK_FIELDS = {
    ("LayerParameter", "permute_param"): (202, "SSD"),
    ("LayerParameter", "prior_box_param"): (203, "SSD"),
    ("LayerParameter", "detection_output_param"): (204, "SSD"),
    ("LayerParameter", "norm_param"): (206, "SSD"),
    ("LayerParameter", "shuffle_channel_param"): (164, "ShuffleNet"),
    ("LayerParameter", "roi_pooling_param"): (8266711, "Faster R-CNN"),
    ("LayerParameter", "smooth_l1_loss_param"): (8266712, "Faster R-CNN"),
    ("PoolingParameter", "ceil_mode"): (1013, "OpenCV"),
}
# BVLC caffe.proto's first free number in the messages forks extend ("next available ID: 149";
# PoolingParameter ends at round_mode = 13): a fork number below it would collide with Caffe's.
BVLC_NEXT_FREE = {"LayerParameter": 149, "PoolingParameter": 14}


def declared_fork_fields() -> dict[tuple[str, str], tuple[int, str]]:
    """Fields whose declaring line ends in '// fork extension: <fork>', with the enclosing message."""
    found, stack = {}, []
    for line in PROTO.read_text().splitlines():
        code, _, comment = line.partition("//")
        m = re.match(r"\s*(?:optional|repeated)\s+\S+\s+(\w+)\s*=\s*(\d+)", code)
        fork = re.match(r"\s*fork extension:\s*(.+?)\s*$", comment)
        if m and fork and stack:
            found[(stack[-1], m.group(1))] = (int(m.group(2)), fork.group(1))
        for brace in re.finditer(r"(?:(?:message|enum|oneof)\s+(\w+)\s*)?\{|\}", code):
            stack.pop() if brace.group(0) == "}" else stack.append(brace.group(1) or "?")
    return found


def test_fork_fields_keep_their_documented_numbers_clear_of_caffes():
    declared = declared_fork_fields()
    assert declared == FORK_FIELDS, f"fork fields differ from the documented list: {set(declared) ^ set(FORK_FIELDS)}"
    for (message, name), (number, fork) in declared.items():
        assert field(getattr(pb, message), name).number == number
        assert number >= BVLC_NEXT_FREE[message], f"{message}.{name} ({fork}) = {number} collides with BVLC's range"
