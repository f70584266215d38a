"""The engine's build messages, decoded (pure functions, no I/O).

``POST /build`` answers with newline-delimited JSON.  The classic builder
sends ``{"stream": "Step 1/3 : ..."}`` lines, pull ``status`` lines with
``progressDetail``, ``{"aux": {"ID": "sha256:..."}}`` and on failure
``{"errorDetail": {"code": N, "message": "..."}, "error": "..."}``.
BuildKit (``version=2``) sends ``{"id": "moby.buildkit.trace", "aux":
"<base64>"}``: a protobuf ``moby.buildkit.v1.StatusResponse`` (vertexes=1,
statuses=2, logs=3, warnings=4), decoded here by hand (a dozen fields do not
justify a protobuf dependency), and the image as ``{"id": "moby.image.id",
"aux": {"ID": ...}}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, TypeVar

from ctxpack.engine.protowire import WireError, fields, signed64

__all__ = [
    "Vertex",
    "VertexStatus",
    "VertexLog",
    "VertexWarning",
    "StatusResponse",
    "decode_status",
    "parse_message",
    "error_message",
    "message_error",
    "image_id_of",
    "exit_code_of",
    "printable",
]


# --------------------------------------------------------------------------
# BuildKit's StatusResponse (ctxpack.engine.protowire reads the wire format)
# --------------------------------------------------------------------------


def _bytes(v: int | bytes) -> bytes:
    """A length-delimited field's bytes; a varint where bytes belong is a
    malformed message (never ``bytes(n)``: n zero bytes)."""
    if not isinstance(v, bytes):
        raise WireError("expected a length-delimited field, got a varint")
    return v


def _int(v: int | bytes) -> int:
    """A varint field as Go's int64."""
    if not isinstance(v, int):
        raise WireError("expected a varint, got a length-delimited field")
    return signed64(v)


def _timestamp(v: int | bytes) -> float:
    seconds = nanos = 0
    for num, wt, v in fields(_bytes(v)):
        if num == 1 and wt == 0:
            seconds = _int(v)
        elif num == 2 and wt == 0:
            nanos = _int(v)
    return seconds + nanos / 1e9


def _text(v: int | bytes) -> str:
    return _bytes(v).decode("utf-8", "replace")


@dataclass
class Vertex:
    """A step of the build graph (``[2/3] RUN make``)."""

    digest: str = ""
    inputs: list[str] = field(default_factory=list)
    name: str = ""
    cached: bool = False
    started: float | None = None
    completed: float | None = None
    error: str = ""


@dataclass
class VertexStatus:
    """Progress of a part of a vertex (a layer being pulled, bytes copied)."""

    id: str = ""
    vertex: str = ""
    name: str = ""
    current: int = 0
    total: int = 0
    timestamp: float | None = None
    started: float | None = None
    completed: float | None = None


@dataclass
class VertexLog:
    """Output of a vertex (``stream`` 1 stdout, 2 stderr)."""

    vertex: str = ""
    timestamp: float | None = None
    stream: int = 0
    msg: bytes = b""


@dataclass
class VertexWarning:
    vertex: str = ""
    level: int = 0
    short: bytes = b""
    detail: list[bytes] = field(default_factory=list)
    url: str = ""


@dataclass
class StatusResponse:
    vertexes: list[Vertex] = field(default_factory=list)
    statuses: list[VertexStatus] = field(default_factory=list)
    logs: list[VertexLog] = field(default_factory=list)
    warnings: list[VertexWarning] = field(default_factory=list)


# A message's fields: (field number, wire type) -> (attribute, the value as
# read, repeated).  Fields not named, or of another wire type, are skipped,
# as protobuf readers skip what they do not know.
_Fields = dict[tuple[int, int], tuple[str, Callable[[int | bytes], Any], bool]]
_T = TypeVar("_T")


def _decode(obj: _T, buf: bytes, spec: _Fields) -> _T:
    """``obj`` with the fields of the message ``buf`` that ``spec`` names."""
    for num, wt, v in fields(buf):
        named = spec.get((num, wt))
        if named is None:
            continue
        attr, value, repeated = named
        if repeated:
            getattr(obj, attr).append(value(v))
        else:
            setattr(obj, attr, value(v))
    return obj


_VERTEX: _Fields = {
    (1, 2): ("digest", _text, False), (2, 2): ("inputs", _text, True), (3, 2): ("name", _text, False),
    (4, 0): ("cached", bool, False), (5, 2): ("started", _timestamp, False), (6, 2): ("completed", _timestamp, False),
    (7, 2): ("error", _text, False),
}
_STATUS: _Fields = {
    (1, 2): ("id", _text, False), (2, 2): ("vertex", _text, False), (3, 2): ("name", _text, False),
    (4, 0): ("current", _int, False), (5, 0): ("total", _int, False), (6, 2): ("timestamp", _timestamp, False),
    (7, 2): ("started", _timestamp, False), (8, 2): ("completed", _timestamp, False),
}
_LOG: _Fields = {
    (1, 2): ("vertex", _text, False), (2, 2): ("timestamp", _timestamp, False), (3, 0): ("stream", _int, False),
    (4, 2): ("msg", _bytes, False),
}
_WARNING: _Fields = {
    (1, 2): ("vertex", _text, False), (2, 0): ("level", _int, False), (3, 2): ("short", _bytes, False),
    (4, 2): ("detail", _bytes, True), (5, 2): ("url", _text, False),
}
_RESPONSE: _Fields = {
    (1, 2): ("vertexes", lambda v: _decode(Vertex(), _bytes(v), _VERTEX), True),
    (2, 2): ("statuses", lambda v: _decode(VertexStatus(), _bytes(v), _STATUS), True),
    (3, 2): ("logs", lambda v: _decode(VertexLog(), _bytes(v), _LOG), True),
    (4, 2): ("warnings", lambda v: _decode(VertexWarning(), _bytes(v), _WARNING), True),
}


def decode_status(aux: str | bytes) -> StatusResponse:
    """Decode a ``moby.buildkit.trace`` aux payload (base64 text, or the raw
    protobuf bytes).  Undecodable input gives what could be read before the
    damage (possibly nothing); it never raises."""
    out = StatusResponse()
    try:
        raw = base64.b64decode(aux) if isinstance(aux, str) else bytes(aux)
        _decode(out, raw, _RESPONSE)
    except (ValueError, TypeError, binascii.Error):
        pass
    return out


# --------------------------------------------------------------------------
# JSON messages
# --------------------------------------------------------------------------


def parse_message(line: bytes) -> dict[str, Any] | None:
    """One line of the build stream as a dict (``None`` for a blank line;
    a line that is not a JSON object becomes ``{"raw": text}``)."""
    line = line.strip()
    if not line:
        return None
    try:
        msg = json.loads(line)
    except ValueError:
        return {"raw": line.decode("utf-8", "replace")}
    return msg if isinstance(msg, dict) else {"raw": msg}


#: Escaped characters an error may hold before the rest is taken for binary.
_MAX_ESCAPES = 8


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters and undecodable
    bytes (U+FFFD) escaped; from the first of more than a few such
    characters on (an engine quoting a compressed body it took for a
    Dockerfile, say) the rest is left out and said so."""
    out: list[str] = []
    first: tuple[int, int] | None = None  # (index in text, length of out) at the first escape
    escaped = 0
    for i, c in enumerate(text):
        if c in "\n\t" or (c.isprintable() and c != "\ufffd"):
            out.append(c)
            continue
        if first is None:
            first = (i, len(out))
        escaped += 1
        if escaped > _MAX_ESCAPES:
            return "".join(out[: first[1]]).rstrip() + f" [{len(text) - first[0]} characters of binary data left out]"
        out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return "".join(out)


def error_message(body: bytes) -> str:
    """The engine's message in an HTTP error body (``{"message": ...}``),
    as sent (:func:`printable` makes it safe to show)."""
    try:
        doc = json.loads(body)
        if isinstance(doc, dict) and "message" in doc:
            return str(doc["message"]).strip()
    except ValueError:
        pass
    return body.decode("utf-8", "replace").strip()


def message_error(msg: dict[str, Any]) -> str | None:
    """The error a stream message carries, if any, as sent."""
    if "errorDetail" not in msg and "error" not in msg:
        return None
    detail = msg.get("errorDetail")
    text = detail.get("message") if isinstance(detail, dict) else None
    return str(text or msg.get("error") or detail or msg)


def image_id_of(msg: dict[str, Any]) -> str | None:
    """The built image's ID if ``msg`` announces it (classic ``aux.ID``,
    BuildKit ``moby.image.id``)."""
    aux = msg.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("ID"), str) and msg.get("id") in (None, "moby.image.id"):
        return str(aux["ID"])
    return None


_EXIT = re.compile(r"(?:exit code|returned a non-zero code):\s*(\d+)")


def exit_code_of(error: str) -> int | None:
    """The exit code of a failing RUN in an engine error message (classic:
    ``returned a non-zero code: 3``; BuildKit: ``exit code: 3``)."""
    m = _EXIT.search(error)
    return int(m.group(1)) if m else None
