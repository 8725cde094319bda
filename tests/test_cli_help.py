"""The `netspec` front door (netspec/cli/__init__.py): help answers without importing torch, every
command and option says what it does and shows an example, multi-word flags take both spellings."""
import json
import subprocess
import sys

import pytest

from netspec.cli import build_parser, command_names, command_text, load_command

_PROBE = """
import io, json, sys, time, contextlib
from netspec.cli import command_names, main
results = {}
for argv in [["--help"]] + [[c, "--help"] for c in command_names()]:
    t = time.process_time()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv)
        except SystemExit:
            pass
    results[" ".join(argv)] = {"torch": "torch" in sys.modules, "cpu_s": time.process_time() - t,
                               "text": out.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def helps():
    """Every command's help, asked in turn in one fresh interpreter: torch must stay unloaded."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", ["--help", *[f"{c} --help" for c in command_names()]])
def test_help_without_torch(helps, argv):
    # CPU time, not wall time: the machine is shared, and what matters is the work help does. The
    # first entry also pays for the interpreter's first imports (argparse, netspec's schema).
    got = helps[argv]
    assert not got["torch"], f"`netspec {argv}` imported torch"
    assert got["cpu_s"] < 1.0, f"`netspec {argv}` took {got['cpu_s']:.2f} s of CPU"
    assert "usage: netspec" in got["text"]


def test_top_level_help_lists_every_command(helps):
    text = helps["--help"]["text"]
    for name in command_names():
        assert f"    {name}" in text and command_text(name, "HELP")[:30] in text, name


def _parser_of(name):
    parser = build_parser(name)
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("name", command_names())
def test_every_option_has_help_and_the_command_an_example(name):
    mod = load_command(name)
    assert mod.HELP and f"netspec {name}" in mod.EXAMPLES, f"{name}: HELP and EXAMPLES"
    for action in _parser_of(name)._actions:
        assert action.help, f"netspec {name}: option {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("name", command_names())
def test_multi_word_flags_take_both_spellings(name):
    flags = {s for a in _parser_of(name)._actions for s in a.option_strings if s.startswith("--")}
    for flag in flags:
        word = flag[2:]
        for other in (word.replace("-", "_"), word.replace("_", "-")):
            assert f"--{other}" in flags, f"netspec {name}: {flag} without --{other}"


def test_caffe_single_dash_flags_reach_the_same_option():
    parser = build_parser("make-toy-imagenet")
    from netspec.cli import caffe_flags

    for spelling in (["-per_class=7"], ["--per-class", "7"], ["--per_class=7"]):
        args = parser.parse_args(caffe_flags(["make-toy-imagenet", "out", *spelling]))
        assert args.per_class == 7, spelling


def test_the_command_is_found_after_global_options(monkeypatch):
    import netspec.cli as cli

    assert cli._chosen(["--threads", "2", "-v", "shapes", "net.prototxt"]) == "shapes"
    assert cli._chosen(["--threads=2", "plot", "x.log"]) == "plot"
    assert cli._chosen(["--help"]) is None
