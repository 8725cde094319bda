"""The `netspec` command: Caffe's `caffe <command>` front door, one module per subcommand.

Each subcommand lives in `netspec/cli/cmd_<name>.py` and defines `HELP` (one line, a string literal),
`EXAMPLES` (text), `add_arguments(parser)` and `run(args) -> int`. Modules are found by file name, so
adding a command touches one new file. Help must answer without torch (it takes seconds to import):
`netspec --help` reads HELP from the sources, `netspec CMD --help` imports only cmd_CMD, so a command
module imports torch and the library's heavy parts inside `run`, never at its top. Caffe's single-dash
long flags (`-solver`, `-gpu=0`, `-resize_height=256`) are accepted as aliases of `--solver`, `--gpu=0`,
and every multi-word flag takes both spellings (`--per-class`, `--per_class`).
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib
import logging
import pkgutil
import re
import sys
from pathlib import Path

from ..errors import NetspecError

_SINGLE_DASH = re.compile(r"^-([A-Za-z][A-Za-z0-9_]+)(=.*)?$")


def caffe_flags(argv: list[str]) -> list[str]:
    """Rewrite Caffe's `-flag`/`-flag=v` into argparse's `--flag`/`--flag=v` (not `-1`, not `-v`)."""
    return ["-" + a if _SINGLE_DASH.match(a) and not a.startswith("--") else a for a in argv]


def command_names() -> list[str]:
    """The commands, one per `cmd_<name>.py` file, found without importing any of them."""
    return sorted(m.name[4:].replace("_", "-") for m in pkgutil.iter_modules(__path__)
                  if m.name.startswith("cmd_"))


def load_command(name: str):
    return importlib.import_module(f"{__name__}.cmd_{name.replace('-', '_')}")


def _module_constant(path: Path, attr: str, depth: int = 0):
    """`attr = "literal"` in a module's source, following `from ..x import attr` once; None when not
    literal. Reading the source keeps `netspec --help` from importing every command (and torch)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attr for t in node.targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
        if (isinstance(node, ast.ImportFrom) and depth == 0 and node.level
                and any(a.name == attr and a.asname is None for a in node.names)):
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*(node.module or "").split("."))
            return _module_constant(target.with_suffix(".py"), attr, depth + 1)
    return None


@functools.cache
def command_text(name: str, attr: str) -> str:
    """A command's HELP or EXAMPLES, from its source when literal, else by importing it."""
    value = _module_constant(Path(__file__).with_name(f"cmd_{name.replace('-', '_')}.py"), attr)
    return value if isinstance(value, str) else getattr(load_command(name), attr, "")


def _add_common_options(p: argparse.ArgumentParser) -> None:
    """Options every command takes; SUPPRESS keeps a subcommand from overwriting `netspec -v CMD`."""
    known = p._option_string_actions
    if "--quiet" not in known:
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="log only warnings and errors; no progress bars")
    if "--verbose" not in known:
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="debug lines in the log too")
    if "--debug" not in known:
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
    if "--threads" not in known:
        p.add_argument("--threads", type=int, default=argparse.SUPPRESS, metavar="N",
                       help="compute threads (default: OMP_NUM_THREADS, else the usable cores that the "
                            "load leaves free)")


def _add_other_spellings(p: argparse.ArgumentParser) -> None:
    """Every multi-word flag in both spellings, `--per-class` and `--per_class` (Caffe's tools use
    underscores, Python's dashes); Caffe's single dash (`-per_class`) is caffe_flags' job."""
    for action in list(p._actions):
        for flag in [f for f in action.option_strings if f.startswith("--")]:
            for other in ("--" + flag[2:].replace("-", "_"), "--" + flag[2:].replace("_", "-")):
                if other not in p._option_string_actions:
                    action.option_strings.append(other)
                    p._option_string_actions[other] = action


def _chosen(argv: list[str]) -> str | None:
    """The command named on the line: the first word that is neither an option nor the value of the
    one global option that takes a value (--threads N)."""
    words = iter(argv)
    for a in words:
        if a == "--threads":
            next(words, None)
        elif not a.startswith("-"):
            return a
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `netspec` parser; only `command`'s module is imported (for its options), the others are
    listed from their source."""
    from .. import __version__

    names = command_names()
    parser = argparse.ArgumentParser(
        prog="netspec", description="Caffe's workflow on PyTorch: compile prototxt nets, train with "
        "Caffe's solvers, read and write Caffe's formats.",
        epilog="examples:\n" + "".join(command_text(n, "EXAMPLES").splitlines(True)[0] for n in names
                                       if command_text(n, "EXAMPLES"))
        + "\n`netspec COMMAND --help` gives a command's options and more examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug lines in the log too")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="compute threads (default: OMP_NUM_THREADS, else the usable cores that the load "
                             "leaves free)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in names:
        if name != command:
            sub.add_parser(name, help=command_text(name, "HELP"), add_help=False)
            continue
        mod = load_command(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, epilog=_examples(mod),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        _add_common_options(p)
        _add_other_spellings(p)
        p.set_defaults(_run=mod.run)
    return parser


def _examples(mod) -> str | None:
    text = getattr(mod, "EXAMPLES", "")
    return "examples:\n" + text if text else None


def report_errors(prog: str, debug: bool, fn, *args) -> int:
    """Run `fn(*args)` as a program: a NetspecError becomes one line on stderr and exit status 1."""
    try:
        return int(fn(*args) or 0)
    except NetspecError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # an I/O failure no check foresaw (disk full, quota, a vanished file): one line too
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _setup_logging(args) -> None:
    """Every command logs glog lines (`I1129 23:48:32.123456 12345 file.py:123] msg`) to stderr, as
    Caffe's tools do: INFO by default, WARNING with --quiet, DEBUG with -vv."""
    from ..solver.log import GlogFormatter

    verbose = getattr(args, "verbose", 0) or 0
    level = logging.WARNING if getattr(args, "quiet", False) else (logging.INFO, logging.DEBUG)[min(verbose, 1)]
    global _handler
    root = logging.getLogger()
    if _handler is not None:  # main() called again in one process (tests, tools): one handler
        root.removeHandler(_handler)
    _handler = logging.StreamHandler()
    _handler.setFormatter(GlogFormatter())
    root.addHandler(_handler)
    root.setLevel(level)


_handler: logging.Handler | None = None


def _setup_threads(args) -> None:
    """Choose the compute threads once the command is known (netspec/threads.py says how)."""
    from ..threads import configure

    configure(getattr(args, "threads", None))


def main(argv: list[str] | None = None) -> int:
    argv = caffe_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    _setup_logging(args)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    _setup_threads(args)
    return report_errors(f"netspec {args.command}", args.debug, args._run, args)


def tool_main(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """One subcommand as a stand-alone program: Caffe's tools/*.py scripts (`tools/convert_imagenet.py`)."""
    mod = load_command(command)
    parser = argparse.ArgumentParser(prog=prog or command, description=mod.HELP, epilog=_examples(mod),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mod.add_arguments(parser)
    _add_common_options(parser)
    _add_other_spellings(parser)
    parser.set_defaults(verbose=0, quiet=False, debug=False, threads=None)
    args = parser.parse_args(caffe_flags(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args)
    _setup_threads(args)
    return report_errors(prog or command, args.debug, mod.run, args)


if __name__ == "__main__":
    sys.exit(main())
