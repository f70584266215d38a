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
from typing import Any

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


def _vertex(buf: bytes) -> Vertex:
    vx = Vertex()
    for num, wt, v in fields(buf):
        if wt != 2 and num != 4:
            continue
        if num == 1:
            vx.digest = _text(v)
        elif num == 2:
            vx.inputs.append(_text(v))
        elif num == 3:
            vx.name = _text(v)
        elif num == 4 and wt == 0:
            vx.cached = bool(v)
        elif num == 5:
            vx.started = _timestamp(v)
        elif num == 6:
            vx.completed = _timestamp(v)
        elif num == 7:
            vx.error = _text(v)
    return vx


def _status(buf: bytes) -> VertexStatus:
    s = VertexStatus()
    for num, wt, v in fields(buf):
        if num == 1 and wt == 2:
            s.id = _text(v)
        elif num == 2 and wt == 2:
            s.vertex = _text(v)
        elif num == 3 and wt == 2:
            s.name = _text(v)
        elif num == 4 and wt == 0:
            s.current = _int(v)
        elif num == 5 and wt == 0:
            s.total = _int(v)
        elif num == 6 and wt == 2:
            s.timestamp = _timestamp(v)
        elif num == 7 and wt == 2:
            s.started = _timestamp(v)
        elif num == 8 and wt == 2:
            s.completed = _timestamp(v)
    return s


def _log(buf: bytes) -> VertexLog:
    lg = VertexLog()
    for num, wt, v in fields(buf):
        if num == 1 and wt == 2:
            lg.vertex = _text(v)
        elif num == 2 and wt == 2:
            lg.timestamp = _timestamp(v)
        elif num == 3 and wt == 0:
            lg.stream = _int(v)
        elif num == 4 and wt == 2:
            lg.msg = _bytes(v)
    return lg


def _warning(buf: bytes) -> VertexWarning:
    w = VertexWarning()
    for num, wt, v in fields(buf):
        if num == 1 and wt == 2:
            w.vertex = _text(v)
        elif num == 2 and wt == 0:
            w.level = _int(v)
        elif num == 3 and wt == 2:
            w.short = _bytes(v)
        elif num == 4 and wt == 2:
            w.detail.append(_bytes(v))
        elif num == 5 and wt == 2:
            w.url = _text(v)
    return w


def decode_status(aux: str | bytes) -> StatusResponse:
    """Decode a ``moby.buildkit.trace`` aux payload (base64 text, or the raw
    protobuf bytes).  Undecodable input gives what could be read before the
    damage (possibly nothing); it never raises."""
    out = StatusResponse()
    try:
        raw = base64.b64decode(aux) if isinstance(aux, str) else bytes(aux)
        for num, wt, v in fields(raw):
            if wt != 2:
                continue
            if num == 1:
                out.vertexes.append(_vertex(_bytes(v)))
            elif num == 2:
                out.statuses.append(_status(_bytes(v)))
            elif num == 3:
                out.logs.append(_log(_bytes(v)))
            elif num == 4:
                out.warnings.append(_warning(_bytes(v)))
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
