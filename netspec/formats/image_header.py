"""An encoded image's declared width and height, read from its header without decoding it.

OpenCV allocates the full bitmap a header declares before it looks at the pixel data, so a 750 KB PNG
that declares 16000x16000 costs 768 MB per decode, and a JPEG that declares 65000x65000 fails inside
OpenCV with a raw assertion. netspec reads the size from the header first (JPEG SOFn, PNG IHDR, GIF
logical screen, BMP info header, WebP VP8/VP8L/VP8X) and refuses images above a pixel limit
(NETSPEC_MAX_IMAGE_PIXELS, default 200 million: well above any real photograph, below a bomb).
Formats not listed here (TIFF, ...) are left to OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS).
"""
from __future__ import annotations

import os
import struct

from ..errors import NetspecError

DEFAULT_MAX_PIXELS = 200_000_000
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_NO_LENGTH = {0x01, 0xD8} | set(range(0xD0, 0xD8))


def max_pixels() -> int:
    """The configured pixel limit (NETSPEC_MAX_IMAGE_PIXELS)."""
    value = os.environ.get("NETSPEC_MAX_IMAGE_PIXELS", "")
    try:
        return int(value) if value else DEFAULT_MAX_PIXELS
    except ValueError:
        raise NetspecError(f"NETSPEC_MAX_IMAGE_PIXELS must be an integer, found '{value}'") from None


def jpeg_frame(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, components, precision, SOF marker) of a JPEG's frame header, or None."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        if marker in _SOF:
            if i + 10 > len(data):
                return None
            precision, h, w, components = struct.unpack_from(">BHHB", data, i + 4)
            return w, h, components, precision, marker
        if marker == 0xDA:  # start of scan before any frame header: not a size we can read
            return None
        i += 2 + struct.unpack_from(">H", data, i + 2)[0]
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack_from("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    return None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) an encoded image declares, or None for a format this module does not read."""
    data = bytes(data[:1 << 16]) if len(data) > (1 << 16) else bytes(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack_from(">II", data, 16)
    if data.startswith(b"\xff\xd8"):
        frame = jpeg_frame(data)
        return frame[:2] if frame else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack_from("<HH", data, 6)
    if data.startswith(b"BM") and len(data) >= 26:
        w, h = struct.unpack_from("<ii", data, 18)
        return abs(w), abs(h)
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def check_size(data: bytes, what: str, limit: int | None = None) -> None:
    """Refuse an encoded image whose header declares more than `limit` pixels (before decoding it)."""
    size = declared_size(data)
    if size is None:
        return
    limit = max_pixels() if limit is None else limit
    w, h = size
    if w * h > limit:
        raise NetspecError(f"{what}: the image declares {w}x{h} = {w * h} pixels, more than the limit of "
                           f"{limit} (set NETSPEC_MAX_IMAGE_PIXELS to raise it)")
