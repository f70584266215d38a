"""The protobuf wire format, read: varints and the fields of a message.

The two places ctxpack meets protobuf are small and fixed (BuildKit's status
messages in a build's progress, fsutil's and BuildKit's session messages), so
a reader of a few dozen lines serves both instead of generated code and the
``protobuf`` runtime.  Malformed bytes raise :class:`WireError` (a
``ValueError``), never anything else.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["WireError", "read_varint", "fields", "signed64"]


class WireError(ValueError):
    """Bytes that are not a valid protobuf message."""


def read_varint(buf: bytes | memoryview, i: int) -> tuple[int, int]:
    """The unsigned varint at ``buf[i:]`` and the index after it."""
    result = shift = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than ten bytes")


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a message; varints as
    ``int`` (unsigned), length-delimited and fixed32/64 fields as ``bytes``."""
    i = 0
    n = len(buf)
    while i < n:
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError("field number 0")
        if wt == 0:
            v, i = read_varint(buf, i)
            yield num, wt, v
        elif wt == 2:
            ln, i = read_varint(buf, i)
            if i + ln > n:
                raise WireError("truncated length-delimited field")
            yield num, wt, bytes(buf[i:i + ln])
            i += ln
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            if i + size > n:
                raise WireError(f"truncated fixed{size * 8}")
            yield num, wt, bytes(buf[i:i + size])
            i += size
        else:
            raise WireError(f"unsupported wire type {wt}")


def signed64(v: int) -> int:
    """A varint read as Go's ``int64`` (two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v
