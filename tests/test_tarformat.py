"""Tests of ctxpack.tar.header: header bytes identical to the docker CLI's.

Two kinds of tests:

* Pure unit tests (no docker): hand-derived vectors for every Go rule the
  encoder mirrors, a cross-check against Python's ``tarfile`` for plain USTAR
  headers, and property tests that ``tarfile`` reads back what we encode.
* Differential tests against the real docker CLI (``docker_cli`` fixture from
  tests/conftest.py, which skips without docker and fails on CI): one context
  tree exercising every header case is uploaded by ``DOCKER_BUILDKIT=0 docker
  build``; every captured 512-byte block (PAX blocks included) must equal
  ``encode_header(header_from_stat(...))``, and so must the whole stream.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from dockercli import DockerCLI
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxpack.tar.header import BLOCK_SIZE, END_OF_ARCHIVE, TYPE_BLOCK, TYPE_CHAR, TYPE_DIR, TYPE_FIFO, TYPE_LINK, TYPE_REG, TYPE_SYMLINK, TarHeader, encode_header, format_pax_record, header_from_stat, padding, pax_header_name, read_security_capability
from ctxpack.engine.fake import FakeDaemon
from ctxpack.errors import TarHeaderError

# --------------------------------------------------------------------------
# Helpers: split raw tar bytes into fields / entries
# --------------------------------------------------------------------------

_FIELDS = [
    ("name", 0, 100), ("mode", 100, 108), ("uid", 108, 116), ("gid", 116, 124),
    ("size", 124, 136), ("mtime", 136, 148), ("chksum", 148, 156),
    ("typeflag", 156, 157), ("linkname", 157, 257), ("magic", 257, 263),
    ("version", 263, 265), ("uname", 265, 297), ("gname", 297, 329),
    ("devmajor", 329, 337), ("devminor", 337, 345), ("prefix", 345, 500),
    ("pad", 500, 512),
]


def field(block: bytes, name: str) -> bytes:
    """Raw bytes of one header field."""
    for fname, start, end in _FIELDS:
        if fname == name:
            return block[start:end]
    raise KeyError(name)


def explain_diff(ours: bytes, theirs: bytes) -> str:
    """Human-readable, field-by-field difference between two header runs."""
    lines = [f"lengths: ours={len(ours)} docker={len(theirs)}"]
    for i in range(0, max(len(ours), len(theirs)), BLOCK_SIZE):
        a, b = ours[i:i + BLOCK_SIZE], theirs[i:i + BLOCK_SIZE]
        if a == b:
            continue
        lines.append(f"block at offset {i}:")
        if len(a) < BLOCK_SIZE or len(b) < BLOCK_SIZE:
            lines.append(f"  ours={a!r}\n  docker={b!r}")
            continue
        for fname, start, end in _FIELDS:
            if a[start:end] != b[start:end]:
                lines.append(f"  {fname}: ours={a[start:end]!r} docker={b[start:end]!r}")
        if not any(a[s:e] != b[s:e] for _, s, e in _FIELDS):
            lines.append(f"  data: ours={a!r}\n  docker={b!r}")
    return "\n".join(lines)


def _octal(b: bytes) -> int:
    b = b.strip(b" \x00")
    return int(b, 8) if b else 0


def _parse_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    while data:
        length, _, rest = data.partition(b" ")
        n = int(length)
        rec = data[len(length) + 1:n - 1]
        assert data[n - 1:n] == b"\n"
        key, _, value = rec.partition(b"=")
        out[key] = value
        data = data[n:]
    return out


@dataclasses.dataclass
class RawEntry:
    """One archive member as it appears in the stream."""

    name: bytes
    typeflag: str
    header: bytes  # x block + records + main block, exactly as sent
    records: dict[bytes, bytes]
    main: bytes  # the main 512-byte block
    data: bytes


def split_entries(tar: bytes) -> tuple[list[RawEntry], bytes]:
    """Split a tar stream into members; returns them and the trailer bytes."""
    off = 0
    out: list[RawEntry] = []
    zero = bytes(BLOCK_SIZE)
    while off < len(tar) and tar[off:off + BLOCK_SIZE] != zero:
        start = off
        blk = tar[off:off + BLOCK_SIZE]
        records: dict[bytes, bytes] = {}
        if blk[156:157] == b"x":
            size = _octal(field(blk, "size"))
            records = _parse_records(tar[off + BLOCK_SIZE:off + BLOCK_SIZE + size])
            off += BLOCK_SIZE + -(-size // BLOCK_SIZE) * BLOCK_SIZE
            blk = tar[off:off + BLOCK_SIZE]
        off += BLOCK_SIZE
        header_end = off
        tf = blk[156:157].decode()
        prefix = field(blk, "prefix").split(b"\x00", 1)[0]
        short = field(blk, "name").split(b"\x00", 1)[0]
        name = records.get(b"path", prefix + b"/" + short if prefix else short)
        size = int(records[b"size"]) if b"size" in records else _octal(field(blk, "size"))
        data = b""
        if tf == TYPE_REG:
            data = tar[off:off + size]
            off += -(-size // BLOCK_SIZE) * BLOCK_SIZE
        out.append(RawEntry(name, tf, tar[start:header_end], records, blk, data))
    return out, tar[off:]


def checksum_ok(block: bytes) -> bool:
    """Verify a header block's checksum (Go format.go computeChecksum)."""
    total = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    return field(block, "chksum") == b"%06o\x00 " % total


def blocks(buf: bytes) -> list[bytes]:
    return [buf[i:i + BLOCK_SIZE] for i in range(0, len(buf), BLOCK_SIZE)]


# --------------------------------------------------------------------------
# Pure unit tests
# --------------------------------------------------------------------------


def test_end_of_archive_and_padding() -> None:
    assert END_OF_ARCHIVE == bytes(1024)  # Writer.Close: two zero blocks, no record padding
    assert padding(0) == b""
    assert padding(1) == bytes(511)
    assert padding(511) == bytes(1)
    assert padding(512) == b""
    assert padding(513) == bytes(511)
    assert padding(8 << 30) == b""


# The header docker CLI 28.2.2 sent for a 3-byte file "a" (captured once).
DOCKER_GOLDEN_A = (
    b"a".ljust(100, b"\x00")
    + b"0000644\x000000000\x000000000\x0000000000003\x0015302705627\x00007407\x00 0"
    + bytes(100) + b"ustar\x0000" + bytes(64) + b"0000000\x000000000\x00" + bytes(167)
)


def test_plain_file_exact_bytes() -> None:
    h = TarHeader("a", TYPE_REG, 0o644, 3, 0o15302705627)
    b = encode_header(h)
    assert b == DOCKER_GOLDEN_A
    assert len(b) == BLOCK_SIZE
    assert field(b, "name") == b"a" + bytes(99)
    assert field(b, "mode") == b"0000644\x00"
    assert field(b, "uid") == field(b, "gid") == b"0000000\x00"
    assert field(b, "size") == b"00000000003\x00"
    assert field(b, "mtime") == b"15302705627\x00"
    assert field(b, "typeflag") == b"0"
    assert field(b, "magic") + field(b, "version") == b"ustar\x0000"
    assert field(b, "uname") == field(b, "gname") == bytes(32)
    assert field(b, "devmajor") == field(b, "devminor") == b"0000000\x00"
    assert field(b, "prefix") == bytes(155)
    assert field(b, "pad") == bytes(12)
    assert checksum_ok(b)
    assert field(b, "chksum")[6:] == b"\x00 "


USTAR_CASES = [
    TarHeader("Dockerfile", TYPE_REG, 0o644, 13, 1700000000),
    TarHeader("dir/", TYPE_DIR, 0o755, 0, 0),
    TarHeader("dir/sub/file.txt", TYPE_REG, 0o4755, 511, 8**11 - 1),
    TarHeader("sticky/", TYPE_DIR, 0o1777, 0, 1),
    TarHeader("link", TYPE_SYMLINK, 0o777, 0, 5, linkname="../x/y"),
    TarHeader("hard", TYPE_LINK, 0o600, 0, 5, linkname="dir/sub/file.txt"),
    TarHeader("null", TYPE_CHAR, 0o666, 0, 5, devmajor=1, devminor=3),
    TarHeader("blk", TYPE_BLOCK, 0o660, 0, 5, devmajor=4095, devminor=1048575),
    TarHeader("fifo", TYPE_FIFO, 0o644, 0, 5),
    TarHeader("x" * 100, TYPE_REG, 0o644, 8**11 - 1, 5),
    TarHeader("l", TYPE_SYMLINK, 0o777, 0, 5, linkname="t" * 100),
]


@pytest.mark.parametrize("h", USTAR_CASES, ids=lambda h: h.name[:20])
def test_plain_ustar_matches_python_tarfile(h: TarHeader) -> None:
    """For short ASCII names Python's USTAR writer lays out the same fields.

    Python leaves devmajor/devminor NUL for non-devices where Go writes
    ``0000000``, so those fields (and the checksum) are compared separately.
    """
    info = tarfile.TarInfo(h.name)
    info.type = h.typeflag.encode()
    info.mode, info.size, info.mtime = h.mode, h.size, h.mtime
    info.linkname = h.linkname
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.devmajor, info.devminor = h.devmajor, h.devminor
    expected = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    ours = encode_header(h)
    for fname, start, end in _FIELDS:
        if fname in ("chksum", "devmajor", "devminor"):
            continue
        assert ours[start:end] == expected[start:end], fname
    assert field(ours, "devmajor") == b"%07o\x00" % h.devmajor
    assert field(ours, "devminor") == b"%07o\x00" % h.devminor
    assert checksum_ok(ours)


@pytest.mark.parametrize(
    ("name", "prefix", "short"),
    [
        ("x" * 100, b"", b"x" * 100),  # fits: no split
        ("a/" + "y" * 99, b"a", b"y" * 99),
        ("d" * 154 + "/" + "f" * 10, b"d" * 154, b"f" * 10),
        ("d" * 155 + "/" + "g" * 10, b"d" * 155, b"g" * 10),
        ("p" * 155 + "/" + "n" * 100, b"p" * 155, b"n" * 100),  # 256 bytes: USTAR maximum
        ("sub/" + "y" * 96 + "/", b"sub", b"y" * 96 + b"/"),  # trailing slash ignored for the search
        ("a" * 10 + "/" + "b" * 140 + "/" + "c" * 10, b"a" * 10 + b"/" + b"b" * 140, b"c" * 10),
    ],
)
def test_ustar_prefix_split(name: str, prefix: bytes, short: bytes) -> None:
    tf = TYPE_DIR if name.endswith("/") else TYPE_REG
    b = encode_header(TarHeader(name, tf))
    assert len(b) == BLOCK_SIZE  # no PAX
    assert field(b, "prefix").rstrip(b"\x00") == prefix
    assert field(b, "name").rstrip(b"\x00") == short
    assert checksum_ok(b)


@pytest.mark.parametrize(
    "name",
    [
        "d" * 156 + "/h",  # slash beyond the 155-byte prefix
        "lc/" + "z" * 101,  # last component > 100
        "y" * 101,  # no slash at all
        "d" * 154 + "/",  # a directory: the trailing slash is not a split point
        "a/" + "b" * 160 + "/c",  # only a slash too early
        "é" * 3,  # non-ASCII never uses USTAR
    ],
)
def test_unsplittable_names_use_pax(name: str) -> None:
    tf = TYPE_DIR if name.endswith("/") else TYPE_REG
    b = encode_header(TarHeader(name, tf))
    assert len(b) == 3 * BLOCK_SIZE
    xb, data, main = blocks(b)
    assert field(xb, "typeflag") == b"x"
    assert data.rstrip(b"\x00") == format_pax_record(b"path", name.encode())
    assert field(main, "prefix") == bytes(155)


def test_pax_x_block_layout() -> None:
    b = encode_header(TarHeader("dir/é.txt", TYPE_REG, 0o644, 7, 1234))
    xb, data, main = blocks(b)
    rec = b"19 path=dir/\xc3\xa9.txt\n"
    assert data == rec + bytes(512 - len(rec))
    assert field(xb, "name") == b"dir/PaxHeaders.0/.txt".ljust(100, b"\x00")
    assert field(xb, "mode") == b"0000000\x00"
    assert field(xb, "uid") == field(xb, "gid") == b"0000000\x00"
    assert field(xb, "size") == b"%011o\x00" % len(rec)
    assert field(xb, "mtime") == b"00000000000\x00"
    assert field(xb, "typeflag") == b"x"
    assert field(xb, "magic") + field(xb, "version") == b"ustar\x0000"
    # writeRawFile never formats the device fields: they stay NUL.
    assert field(xb, "devmajor") == field(xb, "devminor") == bytes(8)
    assert checksum_ok(xb) and checksum_ok(main)
    # Main block: toASCII(name) ("é" dropped), the real numbers, "0000000" devs.
    assert field(main, "name") == b"dir/.txt".ljust(100, b"\x00")
    assert field(main, "size") == b"00000000007\x00"
    assert field(main, "mtime") == b"00000002322\x00"
    assert field(main, "devmajor") == b"0000000\x00"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"a", b"PaxHeaders.0/a"),
        (b"a/b/c", b"a/b/PaxHeaders.0/c"),
        (b"a/b/", b"a/b/PaxHeaders.0"),  # directory: file part is empty
        (b"\xc3\xa9", b"PaxHeaders.0"),  # toASCII drops "é", then trailing "/" trimmed
        (b"bad\xff/x", b"bad/PaxHeaders.0/x"),  # an invalid byte is dropped too
        (b"d" * 150 + b"/f", (b"d" * 150 + b"/PaxHeaders.0/f")[:100]),
        (b"d" * 99 + b"/f", b"d" * 99),  # cut to 100 ends with "/", trimmed
    ],
)
def test_pax_header_name(name: bytes, expected: bytes) -> None:
    assert pax_header_name(name) == expected


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (b"path", b"a", b"9 path=a\n"),
        (b"path", b"\xc3\xa9", b"11 path=\xc3\xa9\n"),  # 10 -> 11: length grows a digit
        (b"path", b"x" * 90, b"99 path=" + b"x" * 90 + b"\n"),
        (b"path", b"x" * 91, b"101 path=" + b"x" * 91 + b"\n"),  # 100 -> 101
        (b"mtime", b"-1", b"12 mtime=-1\n"),
    ],
)
def test_pax_record_length(key: bytes, value: bytes, expected: bytes) -> None:
    assert format_pax_record(key, value) == expected
    assert int(expected.split(b" ", 1)[0]) == len(expected)


def test_pax_records_sorted_bytewise() -> None:
    h = TarHeader("é", TYPE_SYMLINK, 0o777, 0, -5, linkname="ü",
                  xattrs=(("security.capability", b"\x01\x00\x00\x02" + bytes(16)),))
    xb, *rest = blocks(encode_header(h))
    records = b"".join(rest[:-1])
    keys = [line.split(b"=", 1)[0].split(b" ", 1)[1] for line in records.rstrip(b"\x00").split(b"\n")
            if line]
    # SCHILY... (upper case) sorts before the lower-case basic keys.
    assert keys == [b"SCHILY.xattr.security.capability", b"linkpath", b"mtime", b"path"]


def test_splittable_name_gets_path_record_when_pax_is_forced() -> None:
    """allowedFormats records "path" for any long name, even if USTAR could split it."""
    name = "split_" + "a" * 60 + "/" + "b" * 60
    assert len(encode_header(TarHeader(name))) == BLOCK_SIZE
    b = encode_header(TarHeader(name, mtime=-100))
    xb, data, main = blocks(b)
    recs = _parse_records(data.rstrip(b"\x00"))
    assert recs == {b"mtime": b"-100", b"path": name.encode()}
    # PAX main header: no prefix, name cut to 100 bytes, mtime zero.
    assert field(main, "name") == name.encode()[:100]
    assert field(main, "prefix") == bytes(155)
    assert field(main, "mtime") == b"00000000000\x00"


def test_trailing_slash_quirk_in_pax_name_field() -> None:
    """formatString: a cut field ending in "/" gets a NUL after the last non-slash."""
    name = "q" * 99 + "/" + "r" * 120
    main = blocks(encode_header(TarHeader(name)))[-1]
    assert field(main, "name") == b"q" * 99 + b"\x00"
    name2 = "q" * 97 + "///" + "r" * 120  # only one byte is overwritten
    main2 = blocks(encode_header(TarHeader(name2)))[-1]
    assert field(main2, "name") == b"q" * 97 + b"\x00//"


@pytest.mark.parametrize(
    ("mtime", "record", "octal"),
    [
        (0, None, b"00000000000\x00"),
        (8**11 - 1, None, b"77777777777\x00"),
        (8**11, b"8589934592", b"00000000000\x00"),
        (10413792000, b"10413792000", b"00000000000\x00"),  # year 2300
        (-1, b"-1", b"00000000000\x00"),
        (-62135596800, None, b"00000000000\x00"),  # Go's zero time: IsZero, epoch written
        (-62135596801, b"-62135596801", b"00000000000\x00"),
    ],
)
def test_mtime_encoding(mtime: int, record: bytes | None, octal: bytes) -> None:
    b = encode_header(TarHeader("f", mtime=mtime))
    main = blocks(b)[-1]
    assert field(main, "mtime") == octal
    if record is None:
        assert len(b) == BLOCK_SIZE
    else:
        assert _parse_records(blocks(b)[1].rstrip(b"\x00")) == {b"mtime": record}


def test_large_size_uses_pax_size_record() -> None:
    b = encode_header(TarHeader("big", size=8 << 30))
    xb, data, main = blocks(b)
    assert _parse_records(data.rstrip(b"\x00")) == {b"size": b"8589934592"}
    assert field(main, "size") == b"00000000000\x00"
    assert len(encode_header(TarHeader("big", size=(8 << 30) - 1))) == BLOCK_SIZE


def test_invalid_utf8_name() -> None:
    name = os.fsdecode(b"bad\xff.txt")
    xb, data, main = blocks(encode_header(TarHeader(name)))
    assert _parse_records(data.rstrip(b"\x00")) == {b"path": b"bad\xff.txt"}
    assert field(main, "name").rstrip(b"\x00") == b"bad.txt"
    assert field(xb, "name").rstrip(b"\x00") == b"PaxHeaders.0/bad.txt"


def test_typera_promoted() -> None:
    assert encode_header(TarHeader("d/", "\x00")) == encode_header(TarHeader("d/", TYPE_DIR))
    assert encode_header(TarHeader("f", "\x00")) == encode_header(TarHeader("f", TYPE_REG))


@pytest.mark.parametrize(
    "h",
    [
        TarHeader("f", mode=0o10000000),
        TarHeader("f", mode=-1),
        TarHeader("d", TYPE_CHAR, devmajor=1 << 21),
        TarHeader("f/", TYPE_REG),
        TarHeader("f/", TYPE_FIFO),
        TarHeader("f", size=-1),
        TarHeader("f", "x"),
        TarHeader("f", "g"),
        TarHeader("f", "L"),
        TarHeader("a\x00b"),
        TarHeader("l", TYPE_SYMLINK, linkname="a\x00"),
        TarHeader("f", xattrs=(("a=b", b"v"),)),
        TarHeader("f", xattrs=(("big", bytes(1 << 20)),)),
    ],
)
def test_refused_headers(h: TarHeader) -> None:
    with pytest.raises(TarHeaderError):
        encode_header(h)


# Path components as the walker would produce them: any bytes but "/" and NUL
# (decoded with surrogateescape), or any text without surrogates.
_component = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="/\x00"), min_size=1, max_size=70),
    st.binary(min_size=1, max_size=70).filter(lambda b: b"/" not in b and b"\x00" not in b).map(os.fsdecode),
).filter(lambda s: s not in (".", ".."))
_names = st.lists(_component, min_size=1, max_size=5).map("/".join)


@settings(max_examples=300, deadline=None)
@given(
    name=_names,
    is_dir=st.booleans(),
    mode=st.integers(0, 0o7777),
    size=st.integers(0, 1 << 40),
    mtime=st.integers(-(1 << 40), 1 << 40),
    link=st.one_of(st.just(""), _names),
    cap=st.booleans(),
)
def test_python_tarfile_reads_back(name: str, is_dir: bool, mode: int, size: int, mtime: int,
                                   link: str, cap: bool) -> None:
    """Whatever we emit is a well-formed tar that decodes to the input."""
    if is_dir:
        h = TarHeader(name + "/", TYPE_DIR, mode, 0, mtime)
    elif link:
        h = TarHeader(name, TYPE_SYMLINK, mode, 0, mtime, linkname=link)
    else:
        h = TarHeader(name, TYPE_REG, mode, size, mtime)
    if cap:
        h = dataclasses.replace(h, xattrs=(("security.capability", b"\x01\x00\x00\x02" + bytes(16)),))
    raw = encode_header(h)
    assert len(raw) % BLOCK_SIZE == 0
    assert all(checksum_ok(b) for b in blocks(raw) if b[257:263] == b"ustar\x00")
    # Give tarfile fake data for a regular file (only the header matters).
    data_len = h.size if h.typeflag == TYPE_REG else 0
    with tempfile.TemporaryFile() as stream:  # sparse: sizes up to 1 TiB are fine
        stream.write(raw)
        if data_len:
            stream.seek(len(raw) + data_len + len(padding(data_len)))
        stream.write(END_OF_ARCHIVE)
        stream.seek(0)
        with tarfile.open(fileobj=stream, mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
            (info,) = tf.getmembers()
    assert info.name == h.name.rstrip("/")
    assert info.type == h.typeflag.encode()
    assert info.mode == h.mode
    assert info.size == h.size
    # Go's zero time (year 1) is written as the epoch (templateV7Plus).
    assert info.mtime == (0 if h.mtime == -62135596800 else h.mtime)
    assert info.linkname == h.linkname
    assert info.uid == info.gid == 0
    if cap:
        assert info.pax_headers["SCHILY.xattr.security.capability"] == os.fsdecode(h.xattrs[0][1])


def test_header_from_stat(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello")
    os.chmod(f, 0o4751)
    os.utime(f, ns=(0, -1_500_000_000))  # -1.5 s floors to -2
    h = header_from_stat("f", os.lstat(f))
    assert (h.typeflag, h.mode, h.size, h.mtime, h.devmajor) == (TYPE_REG, 0o4751, 5, -2, 0)
    d = tmp_path / "d"
    d.mkdir()
    assert header_from_stat("d", os.lstat(d)).name == "d/"
    assert header_from_stat("d", os.lstat(d)).typeflag == TYPE_DIR
    (tmp_path / "l").symlink_to("target")
    hl = header_from_stat("l", os.lstat(tmp_path / "l"), linkname="target")
    assert (hl.typeflag, hl.linkname, hl.size, hl.mode) == (TYPE_SYMLINK, "target", 0, 0o777)
    os.mkfifo(tmp_path / "p")
    assert header_from_stat("p", os.lstat(tmp_path / "p")).typeflag == TYPE_FIFO
    assert read_security_capability(str(f)) == ()


# --------------------------------------------------------------------------
# Differential tests against the docker CLI
# --------------------------------------------------------------------------

NOW = time.time()


def _cap_v2() -> bytes:
    # VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE, permitted = CAP_NET_RAW (13).
    return bytes.fromhex("01000002") + (1 << 13).to_bytes(4, "little") + bytes(12)


def _cap_v3(rootid: int) -> bytes:
    return bytes.fromhex("01000003") + (1 << 13).to_bytes(4, "little") + bytes(12) + rootid.to_bytes(4, "little")


# (case id, path relative to the context as bytes).  Each is created by
# build_tree(); the differential tests look every one up in the capture.
LONG300 = b"deep/" + b"/".join([b"d" * 48] * 5) + b"/" + b"f" * 50
CASES: list[tuple[str, bytes]] = [
    ("dockerfile", b"Dockerfile"),
    ("dockerignore", b".dockerignore"),
    ("size0", b"sizes/s0"),
    ("size1", b"sizes/s1"),
    ("size511", b"sizes/s511"),
    ("size512", b"sizes/s512"),
    ("size513", b"sizes/s513"),
    ("dir-empty", b"empty/"),
    ("dir-nested", b"nested/a/b/c/"),
    ("file-nested", b"nested/a/b/c/f"),
    ("name-100", b"exact100/" + b"x" * 91),
    ("name-101-split", b"exact100/" + b"y" * 92),
    ("dir-101-split", b"sub/" + b"y" * 96 + b"/"),
    ("prefix-154", b"d" * 154 + b"/" + b"f" * 10),
    ("prefix-155", b"d" * 155 + b"/" + b"g" * 10),
    ("prefix-156-pax", b"d" * 156 + b"/h"),
    ("dir-154-pax", b"d" * 154 + b"/"),
    ("name-256", b"p" * 155 + b"/" + b"n" * 100),
    ("split-late-slash", b"a" * 10 + b"/" + b"b" * 140 + b"/" + b"c" * 10),
    ("split-too-early", b"e" * 2 + b"/" + b"b" * 160 + b"/c"),
    ("path-300", LONG300),
    ("last-component-120", b"lc/" + b"z" * 120),
    ("slash-quirk", b"q" * 99 + b"/" + b"r" * 120),
    ("nonascii-e", "é.txt".encode()),
    ("nonascii-emoji", "emoji_😀.txt".encode()),
    ("nonascii-dir", "dir_é/".encode()),
    ("nonascii-in-dir", "dir_é/inner".encode()),
    ("nonascii-long", "é".encode() * 60),
    ("nonascii-long-ascii", "ü".encode() + b"a" * 150),
    ("invalid-utf8", b"bad\xff.txt"),
    ("invalid-utf8-dir", b"baddir\xfe/"),
    ("invalid-utf8-in-dir", b"baddir\xfe/x"),
    ("symlink-rel", b"ln/rel"),
    ("symlink-abs", b"ln/abs"),
    ("symlink-dangling", b"ln/dangling"),
    ("symlink-target-100", b"ln/t100"),
    ("symlink-target-long", b"ln/long"),
    ("symlink-target-nonascii", b"ln/nonascii"),
    ("symlink-target-invalid-utf8", b"ln/badutf8"),
    ("symlink-long-name-and-target", b"ln/" + b"s" * 130),
    ("symlink-to-dir", b"ln/todir"),
    ("hardlink-first-excluded", b"hl/a2"),
    ("hardlink3-first", b"hl/b1"),
    ("hardlink3-second", b"hl/b2"),
    ("hardlink3-third", b"hl/b3"),
    ("hardlink-long-target-first", b"hl/L" + b"L" * 110),
    ("hardlink-long-target", b"hl/c"),
    ("fifo", b"fifo"),
    ("mode-setuid", b"modes/setuid"),
    ("mode-setgid-dir", b"modes/setgid/"),
    ("mode-sticky-dir", b"modes/sticky/"),
    ("mode-0600", b"modes/m0600"),
    ("mode-0777", b"modes/m0777"),
    ("mode-7777", b"modes/m7777"),
    ("mode-0000", b"modes/m0000"),
    ("mtime-now", b"times/now"),
    ("mtime-zero", b"times/zero"),
    ("mtime-one", b"times/one"),
    ("mtime-neg1", b"times/neg1"),
    ("mtime-neg-frac", b"times/negfrac"),
    ("mtime-1901", b"times/y1901"),
    ("mtime-frac", b"times/frac"),
    ("mtime-8^11-1", b"times/oct11max"),
    ("mtime-8^11", b"times/oct11"),
    ("mtime-2300", b"times/y2300"),
    ("mtime-2^36", b"times/pow36"),
    ("mtime-2^40", b"times/pow40"),
    ("mtime-go-zero", b"times/gozero"),
    ("mtime-go-zero-minus-1", b"times/gozerom1"),
    ("mtime-neg-dir", b"times/negdir/"),
    ("mtime-neg-split", b"times/negsplit_" + b"a" * 60 + b"/" + b"b" * 60),
    ("chardev", b"dev/null"),
    ("chardev-max", b"dev/max"),
    ("blockdev", b"dev/blk"),
    ("cap", b"cap/file"),
    ("cap-v3", b"cap/v3"),
    ("cap-hardlink", b"cap/link"),
    ("cap-split-name", b"cap/" + b"k" * 60 + b"/" + b"m" * 60),
    ("cap-long-name", b"cap/" + b"n" * 120),
]

# Cases that need a filesystem feature; skipped (with the reason) if absent.
_OPTIONAL: dict[str, str] = {}


def _pick_base() -> str | None:
    """A tmpfs directory (full 64-bit timestamps, xattrs), if there is one."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def _touch(path: Path, data: bytes = b"", mtime: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def build_tree(root: Path) -> dict[str, str]:
    """Create the context; returns {case id: reason} for cases not created."""
    missing: dict[str, str] = {}
    b = os.fsencode(root)

    def p(rel: bytes) -> bytes:
        return os.path.join(b, rel)

    _touch(root / "Dockerfile", b"FROM scratch\nCOPY . /\n")
    _touch(root / ".dockerignore", b"hl/a1\n")
    for n in (0, 1, 511, 512, 513):
        _touch(root / "sizes" / f"s{n}", bytes((i * 7 + n) & 0xFF for i in range(n)))
    (root / "empty").mkdir()
    _touch(root / "nested/a/b/c/f", b"nested\n")

    for case, rel in CASES:
        if case.startswith(("name-", "dir-1", "prefix-", "dir-154", "split-", "path-", "last-",
                            "slash-", "nonascii-", "invalid-utf8")):
            if rel.endswith(b"/"):
                os.makedirs(p(rel), exist_ok=True)
            else:
                os.makedirs(os.path.dirname(p(rel)), exist_ok=True)
                with open(p(rel), "wb") as fh:
                    fh.write(case.encode())

    os.makedirs(p(b"ln"))
    os.symlink(b"../sizes/s1", p(b"ln/rel"))
    os.symlink(b"/etc/passwd", p(b"ln/abs"))
    os.symlink(b"nope/none", p(b"ln/dangling"))
    os.symlink(b"t" * 100, p(b"ln/t100"))
    os.symlink(b"t/" * 60, p(b"ln/long"))
    os.symlink("é/😀".encode(), p(b"ln/nonascii"))
    os.symlink(b"bad\xfe", p(b"ln/badutf8"))
    os.symlink(b"u" * 140, p(b"ln/" + b"s" * 130))
    os.symlink(b"../nested", p(b"ln/todir"))

    os.makedirs(p(b"hl"))
    _touch(root / "hl/a1", b"a")
    os.link(p(b"hl/a1"), p(b"hl/a2"))
    _touch(root / "hl/b1", b"b")
    os.link(p(b"hl/b1"), p(b"hl/b2"))
    os.link(p(b"hl/b1"), p(b"hl/b3"))
    _touch(root / ("hl/L" + "L" * 110), b"L")
    os.link(p(b"hl/L" + b"L" * 110), p(b"hl/c"))

    os.mkfifo(p(b"fifo"))

    modes = root / "modes"
    modes.mkdir()
    for name, mode in (("setuid", 0o4755), ("m0600", 0o600), ("m0777", 0o777), ("m7777", 0o7777),
                       ("m0000", 0o000)):
        _touch(modes / name, name.encode())
        os.chmod(modes / name, mode)
    for name, mode in (("setgid", 0o2755), ("sticky", 0o1777)):
        (modes / name).mkdir()
        os.chmod(modes / name, mode)

    times = root / "times"
    wanted = {
        "now": NOW, "zero": 0, "one": 1, "neg1": -1, "negfrac": -1.5, "y1901": -(2**31),
        "frac": 1700000000.999999, "oct11max": 8**11 - 1, "oct11": 8**11, "y2300": 10413792000,
        "pow36": 2**36, "pow40": 2**40, "gozero": -62135596800, "gozerom1": -62135596801,
    }
    for name, t in wanted.items():
        _touch(times / name, name.encode())
        try:
            os.utime(times / name, (t, t))
        except OSError as exc:
            missing[f"times/{name}"] = f"cannot set mtime {t}: {exc}"
            continue
        got = os.lstat(times / name).st_mtime_ns // 10**9
        if got != int(t // 1):
            missing[f"times/{name}"] = f"filesystem stored mtime {got} instead of {t}"
    split = times / ("negsplit_" + "a" * 60) / ("b" * 60)
    _touch(split, b"x", -100)
    (times / "negdir").mkdir()
    os.utime(times / "negdir", (-12345, -12345))

    dev = root / "dev"
    dev.mkdir()
    for name, kind, major, minor in (("null", stat.S_IFCHR, 1, 3), ("max", stat.S_IFCHR, 4095, 1048575),
                                     ("blk", stat.S_IFBLK, 1, 3)):
        try:
            os.mknod(dev / name, 0o640 | kind, os.makedev(major, minor))
        except OSError as exc:
            missing[f"dev/{name}"] = f"mknod failed: {exc}"

    cap = root / "cap"
    cap.mkdir()
    _touch(cap / "file", b"cap")
    _touch(cap / "v3", b"cap3")
    _touch(cap / ("k" * 60) / ("m" * 60), b"cap")
    _touch(cap / ("n" * 120), b"cap")
    for cap_rel, value in (("file", _cap_v2()), ("v3", _cap_v3(1000)),
                           ("k" * 60 + "/" + "m" * 60, _cap_v2()), ("n" * 120, _cap_v2())):
        try:
            os.setxattr(cap / cap_rel, "security.capability", value)
        except OSError as exc:
            missing[f"cap/{cap_rel}"] = f"cannot set security.capability: {exc}"
    os.link(cap / "file", cap / "link")

    # Directory mtimes last (creating entries changed them).
    os.utime(times / "negdir", (-12345, -12345))
    return missing


def expected_header(root: Path, entry: RawEntry) -> bytes:
    """Our encoding of one captured member, from os.lstat of the file."""
    path = os.path.join(os.fsencode(root), entry.name.rstrip(b"/"))
    st_ = os.lstat(path)
    link = os.fsdecode(os.readlink(path)) if stat.S_ISLNK(st_.st_mode) else ""
    h = header_from_stat(os.fsdecode(entry.name), st_, linkname=link,
                         xattrs=read_security_capability(path))
    if entry.typeflag == TYPE_LINK:
        # Which name comes first is the walker's business; take it from docker.
        target = entry.records.get(b"linkpath", field(entry.main, "linkname").split(b"\x00", 1)[0])
        h = dataclasses.replace(h, typeflag=TYPE_LINK, linkname=os.fsdecode(target), size=0)
    return encode_header(h)


@dataclasses.dataclass
class Captured:
    root: Path
    tar: bytes
    entries: list[RawEntry]
    trailer: bytes
    missing: dict[str, str]

    def entry(self, rel: bytes) -> RawEntry:
        for e in self.entries:
            if e.name == rel:
                return e
        raise KeyError(rel)


@pytest.fixture(scope="module")
def captured(docker_cli: DockerCLI) -> Iterator[Captured]:
    base = _pick_base()
    tmp = tempfile.mkdtemp(prefix="ctxpack-tarformat-", dir=base)
    try:
        root = Path(tmp) / "ctx"
        root.mkdir()
        missing = build_tree(root)
        cap = docker_cli.capture(root).check()
        assert cap.tar is not None
        entries, trailer = split_entries(cap.tar)
        yield Captured(root, cap.tar, entries, trailer, missing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.docker_cli
@pytest.mark.parametrize(("case", "rel"), CASES, ids=[c for c, _ in CASES])
def test_case_matches_docker(captured: Captured, case: str, rel: bytes) -> None:
    key = rel.decode("ascii", "replace").rstrip("/")
    for prefix, reason in captured.missing.items():
        if key == prefix or key.startswith(prefix + "/"):
            pytest.skip(reason)
    entry = captured.entry(rel)
    ours = expected_header(captured.root, entry)
    assert ours == entry.header, explain_diff(ours, entry.header)


@pytest.mark.docker_cli
def test_case_kinds_were_exercised(captured: Captured) -> None:
    """Guard against a vacuous run: the capture holds what the cases intend."""
    by_name = {e.name: e for e in captured.entries}
    kinds = {c: by_name[r].typeflag for c, r in CASES if r in by_name}
    assert kinds["hardlink-first-excluded"] == TYPE_REG
    assert b"hl/a1" not in by_name
    assert kinds["hardlink3-second"] == kinds["hardlink3-third"] == TYPE_LINK
    assert kinds["hardlink-long-target"] == TYPE_LINK
    assert kinds["symlink-rel"] == TYPE_SYMLINK
    assert kinds["fifo"] == TYPE_FIFO
    if "dev/null" not in captured.missing:
        assert kinds["chardev"] == TYPE_CHAR
    with_pax = {c for c, r in CASES if r in by_name and by_name[r].records}
    for case in ("prefix-156-pax", "path-300", "nonascii-e", "invalid-utf8", "symlink-target-long",
                 "mtime-neg1", "mtime-2300", "hardlink-long-target"):
        assert case in with_pax, case
    for case in ("name-101-split", "prefix-155", "name-256", "mtime-8^11-1"):
        assert case not in with_pax, case
    if "cap/file" not in captured.missing:
        assert b"SCHILY.xattr.security.capability" in by_name[b"cap/file"].records
        # Revision 3 is rewritten to revision 2 (20 bytes) by go-archive.
        v3 = by_name[b"cap/v3"].records[b"SCHILY.xattr.security.capability"]
        assert v3[3] == 2 and len(v3) == 20


@pytest.mark.docker_cli
def test_every_member_matches_docker(captured: Captured) -> None:
    bad = []
    for entry in captured.entries:
        ours = expected_header(captured.root, entry)
        if ours != entry.header:
            bad.append(f"{entry.name!r}:\n{explain_diff(ours, entry.header)}")
    assert not bad, "\n".join(bad)


@pytest.mark.docker_cli
def test_whole_stream_matches_docker(captured: Captured) -> None:
    """Headers + data + padding + END_OF_ARCHIVE rebuild the upload byte for byte."""
    out = bytearray()
    for entry in captured.entries:
        out += expected_header(captured.root, entry)
        if entry.typeflag == TYPE_REG:
            path = os.path.join(os.fsencode(captured.root), entry.name)
            with open(path, "rb") as fh:
                data = fh.read()
            out += data + padding(len(data))
    out += END_OF_ARCHIVE
    assert captured.trailer == END_OF_ARCHIVE
    assert bytes(out) == captured.tar


def test_setcap_tool_agrees_with_fixture_blob(tmp_path: Path) -> None:
    """The hand-made capability blob is what setcap(8) writes (when available)."""
    setcap = shutil.which("setcap")
    if setcap is None or os.geteuid() != 0:
        pytest.skip("setcap not available or not root")
    f = tmp_path / "f"
    f.write_bytes(b"x")
    proc = subprocess.run([setcap, "cap_net_raw+ep", str(f)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"setcap failed: {proc.stderr.decode(errors='replace')}")
    assert read_security_capability(str(f)) == (("security.capability", _cap_v2()),)


# --------------------------------------------------------------------------
# Opt-in: a file of 8 GiB + 3 bytes (PAX "size" record) through the real CLI
# --------------------------------------------------------------------------


def _head_and_tail(body: BinaryIO) -> tuple[bytes, bytes, int]:
    """A fake daemon's build-body consumer keeping only the first 64 KiB and
    the last 4 KiB of a huge upload, and its length."""
    head, tail, total = bytearray(), b"", 0
    while chunk := body.read(1 << 20):
        total += len(chunk)
        if len(head) < 1 << 16:
            head += chunk[:(1 << 16) - len(head)]
        tail = (tail + chunk)[-4096:]
    return bytes(head), tail, total


@pytest.mark.big  # uploads 8 GiB through the docker CLI: run with `pytest -m big`
@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI not on PATH")
def test_8gib_file_matches_docker() -> None:
    base = _pick_base()
    tmp = tempfile.mkdtemp(prefix="ctxpack-big-", dir=base)
    try:
        ctx = os.path.join(tmp, "ctx")
        os.mkdir(ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
            fh.write("FROM scratch\n")
        big = os.path.join(ctx, "zbig")
        size = (8 << 30) + 3
        with open(big, "wb") as fh:
            fh.truncate(size)  # sparse
        with FakeDaemon(tmp, consume=_head_and_tail) as daemon:
            env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
            env.update(DOCKER_BUILDKIT="0", DOCKER_HOST=daemon.docker_host, DOCKER_CONFIG=os.path.join(tmp, "cfg"))
            proc = subprocess.run(["docker", "build", ctx], env=env, capture_output=True, timeout=600)
            uploads = [r.result for r in daemon.take() if r.path == "/build"]
        assert proc.returncode == 0, proc.stderr
        assert len(uploads) == 1
        head, tail, total = uploads[0]
        ours = encode_header(header_from_stat("zbig", os.lstat(big)))
        assert len(ours) == 3 * BLOCK_SIZE  # x block, records, main
        assert head[1024:1024 + len(ours)] == ours, explain_diff(ours, head[1024:1024 + len(ours)])
        assert total == 1024 + len(ours) + size + len(padding(size)) + len(END_OF_ARCHIVE)
        assert tail[-1024:] == END_OF_ARCHIVE
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
