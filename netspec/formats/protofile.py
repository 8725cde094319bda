"""Reading Caffe's binary protobuf files: whole-file buffers, the wire format, and one-line errors.

Caffe reads .caffemodel/.solverstate/.binaryproto with ReadProtoFromBinaryFile (src/caffe/util/io.cpp),
which lifts protobuf's 64 MB CodedInputStream limit to 2 GB and aborts with "Check failed" on bad
input. Python protobuf on the upb backend has no 64 MB limit. netspec reads the whole file (memory
mapped), and when parsing fails says why: missing, empty, a text file, truncated, or not protobuf.

The wire-format walker (`iter_fields`) also serves the fast paths that pull packed float arrays
straight out of the file bytes (see blobs.py and caffemodel.py).
"""
from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import NetspecError
from ..proto import pb

VARINT, I64, LEN, I32 = 0, 1, 2, 5

# Bytes a text file may hold besides printable ASCII: tab, newline, form feed, carriage return,
# and anything >= 0x80 (UTF-8 sequences; validity is checked separately).
_TEXT_BYTES = bytes([9, 10, 12, 13]) + bytes(range(32, 127)) + bytes(range(128, 256))


class WireError(Exception):
    """Malformed protobuf bytes at `offset`; `truncated` when a record runs past the end of the file."""

    def __init__(self, message: str, offset: int, truncated: bool = False):
        super().__init__(message)
        self.offset, self.truncated = offset, truncated


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """Decode the base-128 varint at `pos`; return (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= end:
            raise WireError("a number runs past the end", pos, truncated=end == len(buf))
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("a number longer than 10 bytes", pos)


def iter_fields(buf, start: int, end: int):
    """Yield (field number, wire type, value, stop) for each field of the message in buf[start:end].

    For VARINT `value` is the number and `stop` None; for LEN, I32 and I64 `value` is where the
    payload starts and `stop` where it ends. Groups (wire types 3, 4) never occur in caffe.proto.
    """
    pos = start
    while pos < end:
        tag_at = pos
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0", tag_at)
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value, None
            continue
        if wire == LEN:
            size, pos = read_varint(buf, pos, end)
        elif wire in (I32, I64):
            size = 4 if wire == I32 else 8
        else:
            raise WireError(f"invalid wire type {wire}", tag_at)
        if pos + size > end:
            raise WireError(f"a record of {size} bytes at byte {tag_at} runs {pos + size - end} bytes past "
                            "the end", tag_at, truncated=end == len(buf))
        yield number, wire, pos, pos + size
        pos += size


def encode_varint(value: int) -> bytes:
    """The base-128 varint of a non-negative `value`."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_len_field(number: int, payload) -> bytes:
    """Tag, length and bytes of a length-delimited field (a message, string or packed array)."""
    return b"".join((encode_varint(number << 3 | LEN), encode_varint(len(payload)), payload))


def signed(value: int, bits: int = 64) -> int:
    """Reinterpret a varint as a two's-complement int32/int64 (negative numbers take 10 bytes)."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@contextlib.contextmanager
def mapped_file(path, kind: str):
    """Yield the bytes of `path` (memory-mapped when possible); one-line errors for unreadable files."""
    path = Path(path)
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open(path, "rb"))
        except FileNotFoundError:
            raise NetspecError(f"no such file (expected a binary {kind})", file=path) from None
        except IsADirectoryError:
            raise NetspecError(f"is a folder, not a binary {kind}", file=path) from None
        except OSError as e:
            raise NetspecError(f"cannot read: {e.strerror}", file=path) from None
        if os.fstat(f.fileno()).st_size == 0:
            raise NetspecError(f"empty file, not a binary {kind}", file=path)
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # pipes and special files cannot be mapped
            buf = f.read()
        try:
            yield buf
        finally:
            if isinstance(buf, mmap.mmap):
                with contextlib.suppress(BufferError):  # a view still alive in a traceback
                    buf.close()


def looks_like_text(head: bytes) -> bool:
    """True when `head` is UTF-8 text. Binary Caffe files start with a small field tag and length."""
    if not head.strip() or head.translate(None, _TEXT_BYTES):
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only a character cut at the end of the sample
    return True


def check_not_text(buf, path, kind: str) -> None:
    if looks_like_text(bytes(buf[:4096])):
        what = "prototxt" if kind == ".caffemodel" else "file"
        raise NetspecError(f"this is a text {what}, not a binary {kind}", file=path)


def diagnose(buf, path, kind: str, message_type) -> NetspecError:
    """Explain why `buf` does not parse as `message_type`."""
    try:
        check_not_text(buf, path, kind)
        fields = list(iter_fields(buf, 0, len(buf)))
    except WireError as e:
        if e.truncated:
            return NetspecError(f"file is truncated ({len(buf)} bytes): {e}", file=path)
        return NetspecError(f"not a binary {kind}: invalid protobuf data at byte {e.offset} ({e})", file=path)
    except NetspecError as e:
        return e
    by_number = message_type.DESCRIPTOR.fields_by_number
    for index, (number, wire, value, stop) in enumerate(fields):
        field = by_number.get(number)
        if field is None or field.message_type is None or wire != LEN:
            continue
        try:
            getattr(pb, field.message_type.name)().ParseFromString(memoryview(buf)[value:stop])
        except DecodeError:
            return NetspecError(f"not a binary {kind}: record {index} ('{field.name}', bytes {value}-{stop})"
                                " is corrupt", file=path)
    return NetspecError(f"not a binary {kind}: protobuf cannot parse it as {message_type.__name__}",
                        file=path)


def read_message(path, message_type, kind: str):
    """Parse the binary protobuf file `path` as `message_type` (a class from netspec.proto.pb)."""
    with mapped_file(path, kind) as buf:
        check_not_text(buf, path, kind)
        message = message_type()
        try:
            message.ParseFromString(memoryview(buf))
        except DecodeError:
            raise diagnose(buf, path, kind, message_type) from None
        return message
