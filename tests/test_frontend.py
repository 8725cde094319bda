"""Front end: prototxt parsing errors, NetState filtering (Caffe's FilterNet), validation, solvers."""
from pathlib import Path

import pytest
from google.protobuf import text_format

from netspec.errors import NetspecError
from netspec.frontend import (filter_net, layer_positions, load_net, load_solver, make_state, parse_net_text,
                              state_meets_rule, train_net_source)
from netspec.frontend import test_net_sources as _test_net_sources
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"

TRAIN_VAL = """name: "tv"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" include { phase: TRAIN } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "deep" type: "Accuracy" bottom: "ip" bottom: "label" top: "deep"
  include { phase: TEST min_level: 2 } }
layer { name: "staged" type: "Accuracy" bottom: "ip" bottom: "label" top: "staged"
  include { stage: "val" } }
layer { name: "not_staged" type: "Accuracy" bottom: "ip" bottom: "label" top: "not_staged"
  exclude { stage: "val" } }
"""


def names(net):
    return [l.name for l in net.layer]


def test_phase_filtering_yields_train_and_test_nets():
    assert names(load_net(TRAIN_VAL, pb.TRAIN)) == ["data", "ip", "drop", "loss", "not_staged"]
    assert names(load_net(TRAIN_VAL, pb.TEST)) == ["data", "ip", "loss", "acc", "not_staged"]
    assert names(load_net(TRAIN_VAL, pb.TEST, level=2)) == ["data", "ip", "loss", "acc", "deep", "not_staged"]
    assert names(load_net(TRAIN_VAL, pb.TEST, stages=["val"])) == ["data", "ip", "loss", "acc", "staged"]


@pytest.mark.parametrize("rule, state, meets", [
    ("phase: TRAIN", dict(phase=pb.TRAIN), True),
    ("phase: TRAIN", dict(phase=pb.TEST), False),
    ("min_level: 1", dict(phase=pb.TEST, level=0), False),
    ("min_level: 1 max_level: 3", dict(phase=pb.TEST, level=3), True),
    ("max_level: 3", dict(phase=pb.TEST, level=4), False),
    ("stage: 'a' stage: 'b'", dict(phase=pb.TEST, stages=["a"]), False),
    ("stage: 'a' stage: 'b'", dict(phase=pb.TEST, stages=["b", "a"]), True),
    ("not_stage: 'a'", dict(phase=pb.TEST, stages=["a"]), False),
    ("not_stage: 'a'", dict(phase=pb.TEST, stages=["c"]), True),
])
def test_state_meets_rule(rule, state, meets):
    r = text_format.Parse(rule, pb.NetStateRule())
    assert state_meets_rule(make_state(**state), r) is meets


def test_include_and_exclude_together_is_refused():
    net = parse_net_text('layer { name: "x" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(NetspecError, match="either include rules or exclude rules"):
        filter_net(net, make_state(pb.TRAIN))


def test_parse_error_is_one_line_with_file_line_column(tmp_path):
    f = tmp_path / "bad.prototxt"
    f.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(NetspecError) as e:
        load_net(f)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{f}:4:")
    assert "tpye" in msg


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(NetspecError, match="nope.prototxt: no such file"):
        load_net(tmp_path / "nope.prototxt")


def write(tmp_path, text):
    f = tmp_path / "net.prototxt"
    f.write_text(text)
    return f


INPUT = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'


@pytest.mark.parametrize("body, line, layer, words", [
    ('layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }\n', 2, "r", "bottom 'nothing' is not produced"),
    ('layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\n'
     'layer { name: "b" type: "ReLU" bottom: "data" top: "x" }\n', 3, "b", "top 'x' is already produced by layer 'a'"),
    ('layer { name: "a" type: "Eltwise" bottom: "data" bottom: "y" top: "x" }\n'
     'layer { name: "b" type: "ReLU" bottom: "x" top: "y" }\n', 2, "a", "a cycle"),
    ('layer { name: "a" type: "ReLU" bottom: "y" top: "x" }\n'
     'layer { name: "b" type: "ReLU" bottom: "data" top: "y" }\n', 2, "a", "out of order"),
    ('layer { name: "p" type: "ReLU" bottom: "data" top: "p" }\n'
     'layer { name: "q" type: "ReLU" bottom: "data" top: "data" }\n', 3, "q", "already read"),
])
def test_validation_errors_name_file_line_layer_blob(tmp_path, body, line, layer, words):
    f = write(tmp_path, INPUT + body)
    with pytest.raises(NetspecError) as e:
        load_net(f)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{f}:{line}: layer '{layer}': "), msg
    assert words in msg


def test_in_place_on_a_fresh_blob_is_fine(tmp_path):
    f = write(tmp_path, INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n'
                                'layer { name: "s" type: "ReLU" bottom: "data" top: "s" }\n')
    assert names(load_net(f)) == ["in", "r", "s"]


def test_layer_positions_follow_filtering(tmp_path):
    f = write(tmp_path, TRAIN_VAL)
    net = load_net(f, pb.TEST)
    assert layer_positions(net, f) == [2, 4, 6, 7, 12]


def test_fixture_prototxts_load():
    for phase in (pb.TRAIN, pb.TEST):
        assert len(load_net(DATA / "layers_net.prototxt", phase).layer) == 29
    assert [l.name for l in load_net(DATA / "data_net.prototxt", pb.TEST).layer] == ["data"]


def test_solver_paths_resolve_from_cwd_then_solver_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sp, path = load_solver(DATA / "sgd_step_solver.prototxt")
    assert Path(sp.net) == DATA / "loss_net.prototxt"
    src = train_net_source(sp, path)
    assert src.state.phase == pb.TRAIN and len(src.param.layer) == 10
    (tmp_path / "loss_net.prototxt").write_text('name: "local"')
    sp, _ = load_solver(DATA / "sgd_step_solver.prototxt")
    assert sp.net == "loss_net.prototxt"        # Caffe's rule first: the current directory


def test_solver_type_enum_and_missing_net(tmp_path):
    f = tmp_path / "s.prototxt"
    f.write_text("solver_type: ADAM\nbase_lr: 0.1\n")
    sp, path = load_solver(f)
    assert sp.type == "Adam" and not sp.HasField("solver_type")
    with pytest.raises(NetspecError, match="exactly one train net"):
        train_net_source(sp, path)
    f.write_text('net: "missing.prototxt"\n')
    with pytest.raises(NetspecError, match="net 'missing.prototxt' not found"):
        load_solver(f)


def test_test_nets_from_generic_net_and_test_state(tmp_path):
    net = tmp_path / "n.prototxt"
    net.write_text(TRAIN_VAL)
    f = tmp_path / "s.prototxt"
    f.write_text(f'net: "{net}"\ntest_iter: 5\ntest_iter: 7\ntest_state {{ stage: "val" }}\n'
                 'test_state { level: 2 }\n')
    sp, path = load_solver(f)
    tests = _test_net_sources(sp, path)
    assert len(tests) == 2 and all(t.state.phase == pb.TEST for t in tests)
    assert list(tests[0].state.stage) == ["val"] and tests[1].state.level == 2
    f.write_text(f'train_net: "{net}"\ntest_net: "{net}"\n')
    sp, path = load_solver(f)
    with pytest.raises(NetspecError, match="test_iter must be given once per test net"):
        _test_net_sources(sp, path)


def test_same_named_layers_of_two_phases_keep_their_own_lines(tmp_path):
    f = write(tmp_path, 'layer { name: "data" type: "Input" top: "data" include { phase: TRAIN }\n'
                        '  input_param { shape { dim: 1 dim: 2 } } }\n'
                        'layer { name: "data" type: "Input" top: "data" include { phase: TEST }\n'
                        '  input_param { shape { dim: 1 dim: 3 } } }\n'
                        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    assert layer_positions(load_net(f, pb.TEST), f) == [3, 5]
    assert layer_positions(load_net(f, pb.TRAIN), f) == [1, 5]


def test_legacy_input_nets_keep_layer_lines(tmp_path):
    f = write(tmp_path, 'input: "data"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 3\ninput_dim: 3\n'
                        'layers { name: "r" type: RELU bottom: "data" top: "r" }\n')
    net = load_net(f)
    assert [l.name for l in net.layer] == ["input", "r"]
    assert layer_positions(net, f) == [None, 6]
