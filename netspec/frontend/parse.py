"""Reading prototxt text into messages, with errors as `file:line:col: message`.

protobuf's text_format does all the parsing. It keeps no positions in the messages, so
`layer_lines` finds where each top-level `layer {` / `layers {` block starts by a brace-depth scan
(strings and comments skipped): the front end uses it to put file:line into validation errors.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from ..errors import NetspecError

_POS = re.compile(r"^(\d+):(\d+)\s*:\s*")


def parse_text(text: str, message: Message, source: str | os.PathLike | None = None) -> Message:
    """Merge prototxt `text` into `message` (Caffe's ReadProtoFromTextFile) and return it."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        msg = str(e)
        line, col = e.GetLine(), e.GetColumn()
        m = _POS.match(msg)
        if m:
            line, col, msg = int(m.group(1)), int(m.group(2)), msg[m.end():]
        raise NetspecError(f"cannot parse {type(message).__name__}: {msg}", file=source or "<string>",
                           line=line, column=col) from None
    return message


def read_text_file(path: str | os.PathLike, message: Message) -> Message:
    """Parse the prototxt file at `path` into `message`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise NetspecError(f"no such file (looked in {Path.cwd()})", file=path) from None
    except IsADirectoryError:
        raise NetspecError("is a directory, expected a prototxt file", file=path) from None
    except UnicodeDecodeError:
        raise NetspecError("is not a text file (binary data); expected a prototxt", file=path) from None
    return parse_text(text, message, source=path)


def write_text_file(path: str | os.PathLike, message: Message) -> None:
    """Write `message` as prototxt (temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text_format.MessageToString(message))
    os.replace(tmp, path)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[{}<>]|[A-Za-z_][A-Za-z0-9_]*|\n')


def layer_lines(text: str, field: str = "layer") -> list[int]:
    """1-based line of every top-level `field { ... }` block, in order of appearance."""
    lines, depth, line, prev = [], 0, 1, None
    for m in _TOKEN.finditer(text):
        tok = m.group(0)
        if tok == "\n":
            line += 1
            continue
        if tok[0] in "\"'#":
            line += tok.count("\n")
            continue
        if tok in "{<":
            if depth == 0 and prev is not None and prev[0] == field:
                lines.append(prev[1])
            depth += 1
        elif tok in "}>":
            depth -= 1
        prev = (tok, line)
    return lines
