"""The `netspec` command: Caffe's `caffe <command>` front door, one module per subcommand.

Each subcommand lives in `netspec/cli/cmd_<name>.py` and defines `HELP` (one line), `EXAMPLES`
(optional text), `add_arguments(parser)` and `run(args) -> int`. Modules are found by name, so adding
a command touches one new file. Caffe's single-dash long flags (`-solver`, `-gpu=0`,
`-resize_height=256`) are accepted as aliases of `--solver`, `--gpu=0`, ...
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import re
import sys

from ..errors import NetspecError

_SINGLE_DASH = re.compile(r"^-([A-Za-z][A-Za-z0-9_]+)(=.*)?$")


def caffe_flags(argv: list[str]) -> list[str]:
    """Rewrite Caffe's `-flag`/`-flag=v` into argparse's `--flag`/`--flag=v` (not `-1`, not `-v`)."""
    return ["-" + a if _SINGLE_DASH.match(a) and not a.startswith("--") else a for a in argv]


def _commands() -> dict[str, object]:
    names = sorted(m.name[4:] for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_"))
    return {n.replace("_", "-"): importlib.import_module(f"{__name__}.cmd_{n}") for n in names}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    cmds = _commands()
    epilog = "examples:\n" + "".join(getattr(m, "EXAMPLES", "") for m in cmds.values())
    parser = argparse.ArgumentParser(
        prog="netspec", description="Caffe's workflow on PyTorch: compile prototxt nets, train with "
        "Caffe's solvers, read and write Caffe's formats.", epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, mod in cmds.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                           epilog=getattr(mod, "EXAMPLES", None),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def report_errors(prog: str, debug: bool, fn, *args) -> int:
    """Run `fn(*args)` as a program: a NetspecError becomes one line on stderr and exit status 1."""
    try:
        return int(fn(*args) or 0)
    except NetspecError as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _setup_logging(verbose: int) -> None:
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose + 1, 2)],
                        format="%(message)s")


def main(argv: list[str] | None = None) -> int:
    argv = caffe_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return report_errors(f"netspec {args.command}", args.debug, args._run, args)


def tool_main(command: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """One subcommand as a stand-alone program: Caffe's tools/*.py scripts (`tools/convert_imagenet.py`)."""
    mod = importlib.import_module(f"{__name__}.cmd_{command.replace('-', '_')}")
    parser = argparse.ArgumentParser(prog=prog or command, description=mod.HELP)
    mod.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-v", "--verbose", action="count", default=1, help="more log output")
    args = parser.parse_args(caffe_flags(list(sys.argv[1:] if argv is None else argv)))
    _setup_logging(args.verbose)
    return report_errors(prog or command, args.debug, mod.run, args)


if __name__ == "__main__":
    sys.exit(main())
