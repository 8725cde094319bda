"""Property-based tests (hypothesis) of every reader of user files: prototxt nets and solvers,
.caffemodel, .solverstate, .binaryproto, Datum records (raw and encoded), LMDB files, convert-imagenet
list files and training logs for plot. Whatever the bytes, a reader either succeeds or raises one
NetspecError whose message is one line, and memory stays bounded (declared sizes are checked against
what the file holds, not allocated on trust).

Inputs are mutations of valid files (bit flips, truncations, spliced bytes, numbers at the edges)
and text built from each format's own tokens, plus raw random bytes. The budget is small in CI;
NETSPEC_FUZZ_EXAMPLES=N runs N examples per reader (docs/reliability.md lists what a long run found).
LMDB files are read in a child process, so that a crash inside liblmdb shows as a failure here
instead of ending the test run.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reliability_helpers import jpeg_header, png_header

from netspec.data.convert import read_listfile
from netspec.data.datum import parse, to_array
from netspec.data.mean import load_mean
from netspec.errors import NetspecError
from netspec.formats.binaryproto import read_binaryproto
from netspec.formats.caffemodel import read_caffemodel, read_weights, write_caffemodel
from netspec.formats.solverstate import (
    check_counters,
    history_arrays,
    make_solverstate,
    read_solverstate,
)
from netspec.frontend import load_net, load_solver
from netspec.graph import compile_net
from netspec.proto import pb
from netspec.solver.log import parse_log

EXAMPLES = int(os.environ.get("NETSPEC_FUZZ_EXAMPLES", "25"))
LONG_RUN = "NETSPEC_FUZZ_EXAMPLES" in os.environ   # CI's short run is the same examples every time
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not LONG_RUN,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MEMORY_BOUND = 512 << 20   # what one reader may add to the process's peak resident memory
WORK: Path   # the module's scratch folder, inside pytest's temporary folder (set by the fixture below)


@pytest.fixture(scope="module", autouse=True)
def _bounded_and_cleaned(tmp_path_factory):
    """Blob allocations capped far below the machine's memory; the scratch folder removed after."""
    global WORK
    WORK = tmp_path_factory.mktemp("fuzz")
    saved = os.environ.get("NETSPEC_MAX_BLOB_BYTES")
    os.environ["NETSPEC_MAX_BLOB_BYTES"] = str(64 << 20)
    yield
    if saved is None:
        os.environ.pop("NETSPEC_MAX_BLOB_BYTES", None)
    else:
        os.environ["NETSPEC_MAX_BLOB_BYTES"] = saved


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def one_line_or_success(read, *args):
    """Run `read`; a NetspecError must be one line; any other exception fails the property."""
    before = peak_rss()
    try:
        read(*args)
        event("read")
    except NetspecError as e:
        assert "\n" not in str(e) and str(e).strip(), repr(str(e))
        event("one-line error")
    grown = peak_rss() - before
    assert grown < MEMORY_BOUND, f"peak memory grew by {grown >> 20} MiB"


def write(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


# ---- mutations of valid files ---------------------------------------------------------------------
@st.composite
def mutated(draw, seed: bytes):
    """`seed` with a few edits: bit flips, a truncation, a byte run spliced in, or a varint at an edge."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "edge", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "edge":   # a huge or negative varint where a length or count may stand
            data[at:at + 1] = draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x80\x01",
                                                    b"\xff" * 9 + b"\x01", b"\x00"]))
        elif kind == "delete" and data:
            del data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


def file_bytes(seed: bytes):
    return st.one_of(mutated(seed), st.binary(max_size=256))


def _seed_caffemodel() -> bytes:
    net = load_net(NET_TEXT, pb.TRAIN)
    compiled = compile_net(net, pb.TRAIN)
    path = Path(tempfile.mkdtemp()) / "seed.caffemodel"
    write_caffemodel(path, list(compiled.layer_params), compiled.params())
    data = path.read_bytes()
    path.unlink()
    path.parent.rmdir()
    return data


NET_TEXT = """name: "seed"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  convolution_param { num_output: 2 kernel_size: 3 stride: 1 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "c" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "y" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "y" top: "prob" }
"""
SEED_CAFFEMODEL = _seed_caffemodel()
SEED_STATE = make_solverstate(12, 1, [np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)],
                              "x.caffemodel").SerializeToString()
SEED_BLOB = pb.BlobProto(num=1, channels=2, height=2, width=2, data=[0.5] * 8).SerializeToString()
SEED_DATUM = pb.Datum(channels=2, height=3, width=2, data=bytes(range(12)), label=3).SerializeToString()


# ---- binary protobuf files -------------------------------------------------------------------------
@FUZZ
@given(file_bytes(SEED_CAFFEMODEL))
def test_caffemodel_readers(data):
    path = write("w.caffemodel", data)
    one_line_or_success(read_caffemodel, path)
    one_line_or_success(read_weights, path)


@FUZZ
@given(file_bytes(SEED_STATE))
def test_solverstate_reader(data):
    path = write("s.solverstate", data)

    def read(p):
        state = read_solverstate(p)
        check_counters(state, p)
        history_arrays(state, p)

    one_line_or_success(read, path)


@FUZZ
@given(file_bytes(SEED_BLOB))
def test_binaryproto_readers(data):
    path = write("m.binaryproto", data)
    one_line_or_success(read_binaryproto, path)
    one_line_or_success(load_mean, path)


# ---- Datum records ---------------------------------------------------------------------------------
@st.composite
def encoded_records(draw):
    """An encoded Datum: an image header (declared size at the edges) followed by random bytes."""
    w, h = draw(st.sampled_from([1, 7, 255, 16000, 65000, 65535])), draw(st.sampled_from([1, 9, 16000, 65535]))
    head = draw(st.sampled_from([png_header, jpeg_header]))(w, h)
    body = draw(st.binary(max_size=64))
    return pb.Datum(data=head[:draw(st.integers(8, len(head)))] + body, encoded=True).SerializeToString()


@FUZZ
@given(st.one_of(file_bytes(SEED_DATUM), encoded_records()),
       st.booleans(), st.booleans())
def test_datum_records(value, color, gray):
    def read(v):
        datum = parse(v, "00000000_k", "db")
        to_array(datum, force_color=color and not gray, force_gray=gray and not color, key="00000000_k")

    one_line_or_success(read, value)


# ---- prototxt nets and solvers ---------------------------------------------------------------------
NUMBERS = st.sampled_from(["0", "1", "2", "3", "-1", "-2", "7", "4294967295", "2147483648", "1e9", "0.5",
                           "nan", "-inf", "99999999999999999999"])
LAYER_TYPES = ["Input", "Convolution", "Pooling", "InnerProduct", "ReLU", "Softmax", "SoftmaxWithLoss",
               "Concat", "Slice", "Eltwise", "Reshape", "Flatten", "Dropout", "LRN", "Deconvolution", "Crop",
               "DummyData", "Scale", "BatchNorm", "Accuracy", "Split", "Nonexistent"]
FIELDS = {
    "convolution_param": ["num_output", "kernel_size", "stride", "pad", "dilation", "group", "axis"],
    "pooling_param": ["kernel_size", "stride", "pad", "kernel_h", "stride_w"],
    "inner_product_param": ["num_output", "axis"],
    "input_param": [],
    "reshape_param": ["axis", "num_axes"],
    "concat_param": ["axis"],
    "slice_param": ["axis", "slice_point"],
    "crop_param": ["axis", "offset"],
    "lrn_param": ["local_size"],
}


@st.composite
def prototxt(draw):
    blobs = ["x", "a", "b", "label"]
    batch = draw(st.sampled_from(["2", "0", "-1", "1000000"]))
    first = (f'layer {{ name: "in" type: "Input" top: "x" top: "label" input_param {{ '
             f'shape {{ dim: {batch} dim: 3 dim: 5 dim: 5 }} shape {{ dim: 2 }} }} }}')
    lines = [first]
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(LAYER_TYPES))
        param = draw(st.sampled_from(sorted(FIELDS)))
        fields = " ".join(f"{f}: {draw(NUMBERS)}" for f in draw(st.lists(st.sampled_from(FIELDS[param] or ["x"]),
                                                                              max_size=3)))
        if param == "input_param":
            fields = "shape { " + " ".join(f"dim: {draw(NUMBERS)}" for _ in range(draw(st.integers(0, 4)))) + " }"
        bottoms = " ".join(f'bottom: "{draw(st.sampled_from(blobs))}"' for _ in range(draw(st.integers(0, 2))))
        lines.append(f'layer {{ name: "l{i}" type: "{kind}" {bottoms} top: "{draw(st.sampled_from(blobs))}" '
                     f'{param} {{ {fields} }} }}')
    text = "\n".join(lines)
    if draw(st.booleans()):   # a textual edit: a dropped brace, a stray token, a cut
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["", "}", "{", ":", '"', "\x00", "é", " layer {"])) + text[at + 1:]
    return text


@FUZZ
@given(st.one_of(prototxt(), st.text(max_size=200)))
def test_prototxt_nets(text):
    path = write("net.prototxt", text.encode("utf-8", "surrogatepass"))

    def build(p):
        net = compile_net(load_net(str(p), pb.TRAIN), pb.TRAIN, source=str(p))
        net.close()

    one_line_or_success(build, path)


@FUZZ
@given(st.lists(st.sampled_from(
    ['net: "net.prototxt"', "base_lr: 0.01", "base_lr: -1", 'lr_policy: "step"', 'lr_policy: "bogus"',
     "stepsize: 0", "max_iter: -5", "test_iter: 2", "test_interval: 0", "average_loss: 0", "iter_size: 0",
     'type: "Adam"', 'type: "Nope"', "momentum: 2", "gamma: nan", "display: -1", "snapshot: 3",
     'snapshot_prefix: "/nonexistent/x"', "solver_mode: GPU", "random_seed: -7", "clip_gradients: -1",
     'regularization_type: "L3"', "stepvalue: 5", "stepvalue: 2", "}", "{", "weights: \"none.caffemodel\""]),
    max_size=8))
def test_solver_files(tokens):
    (WORK / "net.prototxt").write_text(NET_TEXT)
    path = write("solver.prototxt", "\n".join(tokens).encode())

    def build(p):
        from netspec.solver.solver import Solver

        cwd = os.getcwd()
        os.chdir(WORK)
        try:
            sp, source = load_solver(str(p))
            Solver(sp, source, device="cpu")
        finally:
            os.chdir(cwd)

    one_line_or_success(build, path)


# ---- list files and logs -----------------------------------------------------------------------------
@FUZZ
@given(st.one_of(st.binary(max_size=200), st.lists(st.tuples(
    st.sampled_from(["a.jpg", "dir/b c.png", "", "x", "é.jpg", "\t"]),
    st.sampled_from(["0", "-1", "7", "2147483647", "2147483648", "-2147483649", "x", "", "1.5", "0x10"])),
    max_size=6).map(lambda rows: "\n".join(f"{p} {l}" for p, l in rows).encode())))
def test_list_files(data):
    one_line_or_success(read_listfile, write("list.txt", data))


LOG_LINES = st.sampled_from([
    "I1129 10:00:00.000000 1 solver.py:1] Iteration {n} (1.5 iter/s, 0.6s/1 iters), loss = {v}",
    "I1129 10:00:0{d}.000000 1 solver.py:1] Iteration {n}, lr = {v}",
    "I1129 10:00:01.000000 1 solver.py:1] Iteration {n}, Testing net (#{d})",
    "I1129 10:00:01.000000 1 solver.py:1]     Test net output #{d}: accuracy = {v}",
    "I1129 10:00:01.000000 1 solver.py:1]     Train net output #{d}: loss = {v} (* 1 = {v} loss)",
    "I1129 10:00:01.000000 1 solver.py:1] Test loss: {v}",
    "I1399 99:99:99.999999 1 solver.py:1] Iteration {n}, loss = {v}",
    "Iteration {n}, loss = {v}", "garbage {v}", ""])


@FUZZ
@given(st.lists(st.tuples(LOG_LINES, st.sampled_from(["0", "5", "-3", "99999999999999999999"]),
                          st.sampled_from(["1.5", "nan", "inf", "-1e309", "1e-45", "x", "0"]),
                          st.sampled_from(["0", "1", "9"])), max_size=12))
def test_training_logs(rows):
    text = "\n".join(t.format(n=n, v=v, d=d) for t, n, v, d in rows)
    one_line_or_success(parse_log, write("train.log", text.encode()))


# ---- LMDB files, read in a child process ------------------------------------------------------------
LMDB_CHILD = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    from netspec.data import db as dbmod
    from netspec.data.datum import parse, to_array
    from netspec.errors import NetspecError
    seed, work, cases = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.stdin.read())
    original = (seed / "data.mdb").read_bytes()
    for edits in cases:
        data = bytearray(original)
        for kind, at, value in edits:
            at %= max(len(data), 1)
            if kind == "truncate":
                del data[at:]
            elif kind == "byte" and data:
                data[at] = value & 0xFF
            elif kind == "page":
                data[at - at % 4096:at - at % 4096 + 4096] = bytes([value & 0xFF]) * 4096
        (work / "data.mdb").write_bytes(bytes(data))
        try:
            for key, value in dbmod.iter_records(work):
                to_array(parse(value, key, str(work)), key=key)
        except NetspecError as e:
            assert "\\n" not in str(e)
    print("ok", len(cases))
""")


@settings(max_examples=max(1, EXAMPLES // 25), deadline=None, database=None, derandomize=not LONG_RUN,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.tuples(st.sampled_from(["truncate", "byte", "page"]), st.integers(0, 1 << 20),
                                   st.integers(0, 255)), min_size=1, max_size=3), min_size=25, max_size=25))
def test_lmdb_files_in_a_child_process(cases):
    from reliability_helpers import make_lmdb

    seed = WORK / "lmdb_seed"
    if not seed.exists():
        make_lmdb(seed, n=40, size=8)
    work = WORK / "lmdb_work"
    work.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", LMDB_CHILD, str(seed), str(work)], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=300, check=False,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.returncode, done.stderr[-2000:], cases)
