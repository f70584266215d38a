"""The protobuf messages the session exchanges, encoded by hand.

Why hand-written and not generated code: the session needs nine tiny proto3
messages (fsutil ``Packet``/``Stat``, grpc health, BuildKit secrets, sshforward
and auth), all made of varints, strings, bytes and one ``map``.  A codec of a
hundred lines has no runtime dependency and no gencode/runtime version
coupling (``protobuf`` 4.x → 5.x → 6.x each broke checked-in generated code),
and it is on the hot path: one ``Packet`` per file and per 32 KiB chunk, where
a direct ``bytes`` join beats building message objects.  The field numbers
are those of the ``.proto`` files (fsutil ``types/stat.proto`` and
``types/wire.proto``; BuildKit ``session/secrets/secrets.proto``,
``session/sshforward/ssh.proto``, ``session/auth/auth.proto``;
``grpc/health/v1/health.proto``), quoted next to each message below.

Decoding is tolerant as proto3 requires: unknown fields are skipped, missing
fields take their zero value.  Negative ``int64`` values use ten-byte
two's-complement varints, as Go's encoder writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ctxpack.engine.protowire import WireError, fields, signed64

__all__ = [
    "WireError",
    "PACKET_STAT", "PACKET_REQ", "PACKET_DATA", "PACKET_FIN", "PACKET_ERR",
    "Stat", "Packet", "encode_stat", "encode_packet", "decode_packet",
    "encode_data_packet", "decode_stat",
    "SERVING", "encode_health_response", "decode_health_request",
    "decode_secret_request", "encode_secret_response",
    "decode_check_agent_request", "decode_bytes_message", "encode_bytes_message",
    "decode_credentials_request", "encode_credentials_response",
    "fields",
]


# fsutil types/wire.proto: enum PacketType { PACKET_STAT = 0; PACKET_REQ = 1;
# PACKET_DATA = 2; PACKET_FIN = 3; PACKET_ERR = 4; }
PACKET_STAT, PACKET_REQ, PACKET_DATA, PACKET_FIN, PACKET_ERR = 0, 1, 2, 3, 4

# grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING
SERVING = 1

_U64 = (1 << 64) - 1


def _varint(n: int) -> bytes:
    n &= _U64  # negatives as Go writes int64: two's complement, ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Precomputed one- and two-byte varints: most lengths, ids and modes' keys.
# Made directly (two bytes: low 7 bits with the continuation bit, then the
# rest), not through _varint: half the start-up time of every session build.
_SMALL = [bytes((i,)) for i in range(128)] + [bytes(((i & 0x7F) | 0x80, i >> 7)) for i in range(128, 1 << 14)]


def varint(n: int) -> bytes:
    """The protobuf varint encoding of ``n`` (negative: as Go's int64)."""
    if 0 <= n < 16384:
        return _SMALL[n]
    return _varint(n)


def _len_field(num: int, data: bytes) -> bytes:
    return _SMALL[(num << 3) | 2] + varint(len(data)) + data


def _str(v: int | bytes) -> str:
    if not isinstance(v, bytes):
        raise WireError("expected a length-delimited field")
    return v.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# fsutil types/stat.proto
#   message Stat { string path = 1; uint32 mode = 2; uint32 uid = 3;
#     uint32 gid = 4; int64 size = 5; int64 modTime = 6; string linkname = 7;
#     int64 devmajor = 8; int64 devminor = 9; map<string, bytes> xattrs = 10; }
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Stat:
    """fsutil's ``Stat``: ``mode`` in Go ``os.FileMode`` bits, ``mod_time`` in
    Unix nanoseconds, ``linkname`` a symlink's target or a hard link's first
    path."""

    path: str
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mod_time: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


def encode_stat(s: Stat) -> bytes:
    """``Stat`` → bytes (zero values omitted, as proto3 does)."""
    path = s.path.encode("utf-8", "surrogateescape")
    parts = [b"\x0a", varint(len(path)), path]
    if s.mode:
        parts += (b"\x10", varint(s.mode))
    if s.uid:
        parts += (b"\x18", varint(s.uid))
    if s.gid:
        parts += (b"\x20", varint(s.gid))
    if s.size:
        parts += (b"\x28", varint(s.size))
    if s.mod_time:
        parts += (b"\x30", varint(s.mod_time))
    if s.linkname:
        parts.append(_len_field(7, s.linkname.encode("utf-8", "surrogateescape")))
    if s.devmajor:
        parts += (b"\x40", varint(s.devmajor))
    if s.devminor:
        parts += (b"\x48", varint(s.devminor))
    for k in sorted(s.xattrs):  # Go marshals map keys sorted
        entry = _len_field(1, k.encode("utf-8", "surrogateescape")) + _len_field(2, s.xattrs[k])
        parts.append(_len_field(10, entry))
    return b"".join(parts)


def decode_stat(buf: bytes) -> Stat:
    """bytes → ``Stat``."""
    s = Stat("", 0)
    for num, wt, v in fields(buf):
        if num == 1:
            s.path = _str(v)
        elif num == 7:
            s.linkname = _str(v)
        elif num == 10 and isinstance(v, bytes):
            key, val = "", b""
            for n2, _, v2 in fields(v):
                if n2 == 1:
                    key = _str(v2)
                elif n2 == 2 and isinstance(v2, bytes):
                    val = v2
            s.xattrs[key] = val
        elif wt == 0 and isinstance(v, int):
            if num == 2:
                s.mode = v & 0xFFFFFFFF
            elif num == 3:
                s.uid = v & 0xFFFFFFFF
            elif num == 4:
                s.gid = v & 0xFFFFFFFF
            elif num == 5:
                s.size = signed64(v)
            elif num == 6:
                s.mod_time = signed64(v)
            elif num == 8:
                s.devmajor = signed64(v)
            elif num == 9:
                s.devminor = signed64(v)
    return s


# --------------------------------------------------------------------------
# fsutil types/wire.proto
#   message Packet { PacketType type = 1; Stat stat = 2; uint32 ID = 3; bytes data = 4; }
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Packet:
    """fsutil's ``Packet``."""

    type: int
    stat: Stat | None = None
    id: int = 0
    data: bytes = b""


def encode_packet(p: Packet, stat_bytes: bytes | None = None) -> bytes:
    """``Packet`` → bytes; ``stat_bytes`` may carry an already encoded Stat.
    An empty STAT packet (the end of the listing) has no ``stat`` at all."""
    parts: list[bytes] = []
    if p.type:
        parts += (b"\x08", varint(p.type))
    if stat_bytes is None and p.stat is not None:
        stat_bytes = encode_stat(p.stat)
    if stat_bytes is not None:
        parts.append(_len_field(2, stat_bytes))
    if p.id:
        parts += (b"\x18", varint(p.id))
    if p.data:
        parts.append(_len_field(4, p.data))
    return b"".join(parts)


def encode_data_packet(ident: int, data: bytes | memoryview) -> bytes:
    """A DATA packet for file ``ident`` (the hot path: no objects)."""
    head = b"\x08\x02" + (b"\x18" + varint(ident) if ident else b"")
    if not data:
        return head
    return head + b"\x22" + varint(len(data)) + bytes(data)


def decode_packet(buf: bytes) -> Packet:
    """bytes → ``Packet``."""
    p = Packet(PACKET_STAT)
    for num, wt, v in fields(buf):
        if num == 1 and isinstance(v, int):
            p.type = v
        elif num == 2 and isinstance(v, bytes):
            p.stat = decode_stat(v)
        elif num == 3 and isinstance(v, int):
            p.id = v & 0xFFFFFFFF
        elif num == 4 and isinstance(v, bytes):
            p.data = v
    return p


# --------------------------------------------------------------------------
# grpc/health/v1/health.proto
#   message HealthCheckRequest { string service = 1; }
#   message HealthCheckResponse { ServingStatus status = 1; }
# --------------------------------------------------------------------------


def decode_health_request(buf: bytes) -> str:
    """The ``service`` asked about ("" = the whole server)."""
    for num, _, v in fields(buf):
        if num == 1:
            return _str(v)
    return ""


def encode_health_response(status: int = SERVING) -> bytes:
    return b"\x08" + varint(status)


# --------------------------------------------------------------------------
# BuildKit session/secrets/secrets.proto
#   message GetSecretRequest { string ID = 1; map<string, string> annotations = 2; }
#   message GetSecretResponse { bytes data = 1; }
# --------------------------------------------------------------------------


def decode_secret_request(buf: bytes) -> tuple[str, dict[str, str]]:
    """(secret id, annotations)."""
    ident = ""
    annotations: dict[str, str] = {}
    for num, _, v in fields(buf):
        if num == 1:
            ident = _str(v)
        elif num == 2 and isinstance(v, bytes):
            k = val = ""
            for n2, _, v2 in fields(v):
                if n2 == 1:
                    k = _str(v2)
                elif n2 == 2:
                    val = _str(v2)
            annotations[k] = val
    return ident, annotations


def encode_secret_response(data: bytes) -> bytes:
    return _len_field(1, data) if data else b""


# --------------------------------------------------------------------------
# BuildKit session/sshforward/ssh.proto
#   message BytesMessage { bytes data = 1; }
#   message CheckAgentRequest { string ID = 1; }   message CheckAgentResponse {}
# --------------------------------------------------------------------------


def decode_check_agent_request(buf: bytes) -> str:
    for num, _, v in fields(buf):
        if num == 1:
            return _str(v)
    return ""


def decode_bytes_message(buf: bytes) -> bytes:
    for num, _, v in fields(buf):
        if num == 1 and isinstance(v, bytes):
            return v
    return b""


def encode_bytes_message(data: bytes) -> bytes:
    return _len_field(1, data) if data else b""


# --------------------------------------------------------------------------
# BuildKit session/auth/auth.proto
#   message CredentialsRequest { string Host = 1; }
#   message CredentialsResponse { string Username = 1; string Secret = 2; }
# --------------------------------------------------------------------------


def decode_credentials_request(buf: bytes) -> str:
    for num, _, v in fields(buf):
        if num == 1:
            return _str(v)
    return ""


def encode_credentials_response(username: str, secret: str) -> bytes:
    out = b""
    if username:
        out += _len_field(1, username.encode())
    if secret:
        out += _len_field(2, secret.encode())
    return out


def encode_map_entry_strings(m: Mapping[str, str], num: int) -> bytes:
    """A ``map<string, string>`` field (tests build requests with it)."""
    return b"".join(
        _len_field(num, _len_field(1, k.encode()) + _len_field(2, v.encode())) for k, v in sorted(m.items())
    )
