r"""Tar header bytes exactly as the docker CLI (classic builder) writes them.

``DOCKER_BUILDKIT=0 docker build`` packs the context with moby/go-archive
``TarWithOptions`` (``ChownOpts`` 0:0) on top of Go's ``archive/tar`` Writer.
This module reproduces, byte for byte, what that Writer emits for one entry:
the optional PAX extended header (``x`` block plus its records) followed by the
main header block.  It does no I/O apart from the two optional helpers at the
bottom (:func:`header_from_stat` and :func:`read_security_capability`).

The format facts it mirrors (Go sources under ``src/archive/tar/``):

1. Format choice.  go-archive ``FileInfoHeader`` sets ``hdr.Format =
   FormatPAX``; ``Header.allowedFormats`` (common.go) then allows USTAR *or*
   PAX (never GNU), and ``Writer.WriteHeader`` (writer.go) uses USTAR whenever
   it can.  PAX is used when one of these holds: the name is not ASCII (any
   byte >= 0x80 or NUL) or longer than 100 bytes and cannot be split into the
   155-byte prefix + 100-byte name; the link name is not ASCII or longer than
   100 bytes (link names are never split); the size is outside
   ``[0, 8**11)``; the mtime is outside ``[0, 8**11)`` seconds; there is any
   xattr (``PAXRecords`` forces PAX).
2. Records.  A ``path`` record is produced whenever the name is non-ASCII or
   longer than 100 bytes, *even if the name could be split*: it only shows up
   when something else forces PAX.  Likewise ``linkpath``; ``size`` and
   ``mtime`` (decimal seconds, ``formatPAXTime``) only when they overflow;
   xattrs as ``SCHILY.xattr.<key>``.  Records are sorted by key bytes
   (``slices.Sort``), so ``SCHILY.*`` comes before the lower-case keys.  Each
   record is ``"%d %s=%s\n"`` where the length counts itself
   (``formatPAXRecord``, strconv.go).
3. The ``x`` block: name is ``path.Join(dir, "PaxHeaders.0", file)`` of the
   real name, made ASCII, cut to 100 bytes, trailing ``/`` removed
   (``writeRawFile``); mode/uid/gid/mtime are octal 0, size is the record
   length, magic ``ustar\0`` version ``00``, and uname/gname/devmajor/devminor
   stay all-NUL (``writeRawFile`` never formats them).
4. In a PAX main header the name and link name fields get ``toASCII`` of the
   value (non-ASCII bytes dropped), cut to 100 bytes; if the cut leaves a ``/``
   in the last byte, the byte after the last non-``/`` is set to NUL
   (``formatString``).  No prefix is used.  A number that does not fit its
   octal field is written as zero (``formatOctal``).
5. Numbers: octal, zero-padded to field width - 1, then one NUL (mode 7
   digits, size/mtime 11 digits, devmajor/devminor 7 digits, uid/gid always
   ``0000000``).  Base-256 is never used (that is GNU-only).  The checksum is
   6 octal digits, NUL, space, computed with the checksum field as 8 spaces
   (``setFormat``, format.go).
6. The archive ends with two 512-byte zero blocks and nothing else: no padding
   to a 10 KiB record (``Writer.Close``).  File data is padded to 512 bytes.
7. Oddities kept on purpose: an mtime of exactly 0001-01-01T00:00:00Z (Go's
   zero ``time.Time``) skips the checks and is written as 0 with no record
   (``verifyTime``/``templateV7Plus``); the typeflag ``"\x00"`` is promoted to
   ``5`` or ``0`` by the trailing slash (``WriteHeader``).
8. A header Go refuses (:class:`TarHeaderError`) is not written at all; the
   docker CLI logs ``Can't add file ... to tar`` and goes on with the next
   entry (go-archive ``TarWithOptions``).

All of this was checked block for block against uploads of docker CLI 28.2.2
(Go 1.24.3); see tests/test_tarformat.py.
"""

from __future__ import annotations

import os
import stat as _stat
import struct
import zlib
from dataclasses import dataclass

from ctxpack.errors import TarHeaderError

__all__ = [
    "TarHeader",
    "encode_header",
    "encode_fields",
    "padding",
    "PADDINGS",
    "END_OF_ARCHIVE",
    "BLOCK_SIZE",
    "TYPE_REG",
    "TYPE_LINK",
    "TYPE_SYMLINK",
    "TYPE_CHAR",
    "TYPE_BLOCK",
    "TYPE_DIR",
    "TYPE_FIFO",
    "header_from_stat",
    "header_from_mode",
    "encode_from_mode",
    "read_security_capability",
    "pax_header_name",
    "format_pax_record",
]

BLOCK_SIZE = 512

# Typeflags (common.go).  Only these are produced by FileInfoHeader plus the
# hard-link rewrite in go-archive's addTarFile.
TYPE_REG = "0"
TYPE_LINK = "1"
TYPE_SYMLINK = "2"
TYPE_CHAR = "3"
TYPE_BLOCK = "4"
TYPE_DIR = "5"
TYPE_FIFO = "6"

#: Two zero blocks: Writer.Close writes exactly this and nothing more.
END_OF_ARCHIVE = bytes(2 * BLOCK_SIZE)


@dataclass(frozen=True, slots=True)
class TarHeader:
    """One tar entry's metadata, as go-archive fills a Go ``tar.Header``.

    Attributes:
        name: Archive name, ``/``-separated, no leading ``./``; directories end
            with ``/``.  Bytes that are not valid UTF-8 are carried as lone
            surrogates (``os.fsdecode`` / ``surrogateescape``).
        typeflag: One of the ``TYPE_*`` one-character strings.
        mode: Permission bits plus setuid/setgid/sticky (``0o7777`` mask); no
            file-type bits.
        size: Data size; only regular files have a non-zero size.
        mtime: Whole seconds since the epoch, already truncated (floor) the way
            go-archive does (``ModTime.Truncate(time.Second)``).  May be
            negative or beyond the 11-octal-digit range (a PAX record is
            written then).
        linkname: Symlink text, or the first archive name for a hard link.
            Same surrogate convention as ``name``.
        devmajor: Device major number (char/block devices).
        devminor: Device minor number.
        xattrs: ``(key, value)`` pairs written as ``SCHILY.xattr.<key>`` PAX
            records; the docker CLI only ever sends ``security.capability``.
    """

    name: str
    typeflag: str = TYPE_REG
    mode: int = 0o644
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()


# -- precomputed pieces ------------------------------------------------------

# Header layout (format.go headerV7/headerUSTAR): name[100] mode[8] uid[8]
# gid[8] size[12] mtime[12] chksum[8] typeflag[1] linkname[100] magic[6]
# version[2] uname[32] gname[32] devmajor[8] devminor[8] prefix[155] pad[12].
# Packed as: name, mode+uid+gid (24), size+mtime (24), chksum, typeflag,
# linkname, magic+version, 64 pad bytes (uname/gname are always empty: no
# user lookups), devmajor+devminor (16), prefix, 12 pad bytes.  struct's "s"
# pads short values with NULs, which is exactly formatString's "copy, then
# NUL-terminate if there is room" for the values we pass.
_HEADER = struct.Struct("100s24s24s8sc100s8s64x16s155s12x")
assert _HEADER.size == BLOCK_SIZE

_MAGIC_USTAR = b"ustar\x0000"  # magicUSTAR + versionUSTAR (setFormat; PAX uses it too)
# computeChecksum treats the checksum field as 8 spaces.
_SUM_CONST = sum(_MAGIC_USTAR) + 8 * 0x20

# formatOctal: zero-padded to field width - 1, then NUL.  uid/gid come from
# ChownOpts 0:0.
_MODE_UID_GID_FMT = b"%07o\x000000000\x000000000\x00"
_SIZE_MTIME_FMT = b"%011o\x00%011o\x00"
_DEVS_FMT = b"%07o\x00%07o\x00"
_OCTAL12_ZERO = b"00000000000\x00"

# fitsInOctal(n, x) (strconv.go): 0 <= x < 1 << ((n-1)*3).
_OCTAL12_LIMIT = 1 << 33  # size and mtime: 8 GiB / 2242-03-16
_OCTAL8_LIMIT = 1 << 21  # mode, devmajor, devminor

# time.Time{} (year 1) is IsZero(): verifyTime skips it and templateV7Plus
# writes the Unix epoch instead.  A file gets it only through utime(2).
_GO_ZERO_TIME_UNIX = -62135596800

# Bytes toASCII drops: NUL and everything >= 0x80.  Go ranges over the string;
# every byte of a multi-byte rune and every invalid byte (U+FFFD) is >= 0x80,
# so dropping these bytes drops exactly those runes.
_NOT_ASCII = bytes([0]) + bytes(range(0x80, 0x100))

_HEADER_ONLY = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))
# allowedFormats: these may not have a trailing slash (links may: they can
# point at directories).
_NO_TRAILING_SLASH = frozenset((TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO, "S"))
# Typeflags Writer refuses to write from a user Header ("x", "L", "K"), or
# that need a different code path ("g", global headers), or are not one byte.
_REFUSED_TYPEFLAGS = frozenset("xgLK")

_PADDINGS = tuple(bytes(n) for n in range(BLOCK_SIZE))
PADDINGS = _PADDINGS  # PADDINGS[-size & 511] == padding(size), without the call

# maxSpecialFileSize (format.go): PAX records over 1 MiB are an error.
_MAX_SPECIAL_FILE_SIZE = 1 << 20

_PAX_PATH = b"path"
_PAX_LINKPATH = b"linkpath"
_PAX_SIZE = b"size"
_PAX_MTIME = b"mtime"
_PAX_XATTR = b"SCHILY.xattr."


def padding(size: int) -> bytes:
    """Return the NULs that pad ``size`` bytes of file data to a block edge.

    Mirrors ``blockPadding`` (format.go): ``-size & 511`` bytes.
    """
    return _PADDINGS[-size & (BLOCK_SIZE - 1)]


# -- checksums ----------------------------------------------------------------
#
# The checksum is the plain sum of the block's bytes.  Every block this
# module emits is pure ASCII (USTAR fields are ASCII by definition, PAX main
# blocks and "x" blocks carry toASCII'd names), so a block sums to at most
# 512 * 127 = 65024.  Adler-32's low half is (1 + sum of bytes) mod 65521,
# hence exact here, and zlib computes it in C: several times faster than
# Python's sum() over a bytes object.


def _asum(*parts: bytes) -> int:
    """Exact byte sum of ASCII ``parts`` whose total is below 65520."""
    a = 1
    for part in parts:
        a = zlib.adler32(part, a)
    return (a & 0xFFFF) - 1


# -- helpers -----------------------------------------------------------------


def _split_ustar(nb: bytes) -> tuple[bytes, bytes] | None:
    """Go ``splitUSTARPath`` for an ASCII name longer than 100 bytes.

    Returns ``(prefix, name)`` or ``None``.  The split is at the last ``/``
    within the first 156 bytes (ignoring a trailing ``/`` when the whole name
    is that short); the prefix must be 1..155 bytes and the rest 1..100.
    """
    length = len(nb)
    if length > 156:  # prefixSize + 1
        length = 156
    elif nb[length - 1] == 0x2F:
        length -= 1
    i = nb.rfind(b"/", 0, length)
    nlen = len(nb) - i - 1
    if i <= 0 or nlen > 100 or nlen == 0 or i > 155:
        return None
    return nb[:i], nb[i + 1 :]


def _pax_field(b: bytes) -> bytes:
    """Value of a 100-byte string field in a PAX main header.

    ``writePAXHeader`` formats ``toASCII(s)`` with ``formatString``, which
    keeps the first 100 bytes of a too-long value and, if the last kept byte
    is ``/``, puts one NUL right after the last non-``/`` byte (so that buggy
    readers do not take a file for a directory).
    """
    b = b.translate(None, _NOT_ASCII)
    if len(b) <= 100:
        return b
    b = b[:100]
    if b[99] == 0x2F:
        n = len(b.rstrip(b"/"))
        b = b[:n] + b"\x00" + b[n + 1 :]
    return b


def _go_clean(p: bytes) -> bytes:
    """Go ``path.Clean`` on bytes (lexical: ``//``, ``.``, ``..``)."""
    if not p:
        return b"."
    rooted = p[:1] == b"/"
    out: list[bytes] = []
    for part in p.split(b"/"):
        if not part or part == b".":
            continue
        if part == b"..":
            if out and out[-1] != b"..":
                out.pop()
            elif not rooted:
                out.append(part)
            continue
        out.append(part)
    joined = b"/".join(out)
    if rooted:
        return b"/" + joined
    return joined or b"."


def pax_header_name(name: bytes) -> bytes:
    """Name field of the ``x`` block that precedes the entry ``name``.

    ``writePAXHeader``: ``dir, file := path.Split(name)``;
    ``path.Join(dir, "PaxHeaders.0", file)``; then ``writeRawFile`` applies
    ``toASCII``, keeps 100 bytes and trims trailing ``/``.  So ``a/b`` gives
    ``a/PaxHeaders.0/b`` and the directory ``a/b/`` gives ``a/b/PaxHeaders.0``.
    """
    i = name.rfind(b"/")
    dir_, file = name[: i + 1], name[i + 1 :]
    joined = b"/".join(part for part in (dir_, b"PaxHeaders.0", file) if part)
    out = _go_clean(joined).translate(None, _NOT_ASCII)
    return out[:100].rstrip(b"/")


def format_pax_record(key: bytes, value: bytes) -> bytes:
    r"""One ``"<len> <key>=<value>\n"`` record; ``<len>`` counts the whole record.

    Same two-step length fix-up as Go ``formatPAXRecord`` (strconv.go).
    """
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        record = b"%d %s=%s\n" % (len(record), key, value)
    return record


def _octal12(x: int) -> bytes:
    """``formatOctal`` into a 12-byte field: 11 digits + NUL, or zero if it does not fit."""
    if 0 <= x < _OCTAL12_LIMIT:
        return b"%011o\x00" % x
    return _OCTAL12_ZERO


def _encode_name(s: str) -> tuple[bytes, bool]:
    """``s`` as bytes (surrogateescape) and whether it is ASCII."""
    try:
        return s.encode("ascii"), True
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape"), False


# -- per (typeflag, mode, devices) constants ----------------------------------

# (typeflag byte, mode+uid+gid bytes, devices bytes, constant checksum part,
#  whether a trailing "/" is allowed)
_Prep = tuple[bytes, bytes, bytes, int, bool]

# Fast-path caches: (typeflag, mode) -> _Prep for headers without device
# numbers (at most 7 * 4096 entries), and checksum -> checksum field bytes
# (every checksum is below 65536, see above).
_FAST_PREP: dict[tuple[str, int], _Prep] = {}
_CHKSUM_FIELD: dict[int, bytes] = {}


def _prepare(tf: str, mode: int, major: int, minor: int) -> _Prep:
    """Validate and precompute the fields that depend on type, mode and devices.

    Raises:
        TarHeaderError: As ``allowedFormats`` does for these fields: mode and
            device numbers have no PAX record (``paxNone``), so a value that
            does not fit 7 octal digits cannot be encoded at all.
    """
    if len(tf) != 1 or tf in _REFUSED_TYPEFLAGS or not " " <= tf <= "~":
        raise TarHeaderError(f"archive/tar: cannot encode header: typeflag {tf!r} not supported")
    if not 0 <= mode < _OCTAL8_LIMIT:
        raise TarHeaderError(f"archive/tar: cannot encode header: PAX cannot encode Mode={mode}")
    if not (0 <= major < _OCTAL8_LIMIT and 0 <= minor < _OCTAL8_LIMIT):
        raise TarHeaderError(
            f"archive/tar: cannot encode header: PAX cannot encode Devmajor/Devminor={major}/{minor}"
        )
    tfb = tf.encode("ascii")
    mug = _MODE_UID_GID_FMT % mode
    devs = _DEVS_FMT % (major, minor)
    const = _SUM_CONST + tfb[0] + _asum(mug, devs)
    return (tfb, mug, devs, const, tf not in _NO_TRAILING_SLASH)


def _chksum_field(chk: int) -> bytes:
    """Checksum field bytes: 6 octal digits, NUL, space (``setFormat``)."""
    field = _CHKSUM_FIELD.get(chk)
    if field is None:
        field = _CHKSUM_FIELD[chk] = b"%06o\x00 " % chk
    return field


# -- encoding ------------------------------------------------------------------


def encode_header(h: TarHeader) -> bytes:
    """Encode ``h`` as Go's ``tar.Writer.WriteHeader`` would for the docker CLI.

    Returns the main 512-byte header, preceded by the PAX extended header
    (one ``x`` block plus its records, padded) when one is needed.  File data
    and its :func:`padding` are the caller's job; header-only types (links,
    directories, devices, FIFOs) never carry data, whatever ``size`` says.

    Raises:
        TarHeaderError: Go would refuse the header: mode or device numbers
            that do not fit 7 octal digits, a NUL in a name, a negative size on
            a regular file, a trailing ``/`` on a regular/device/FIFO name, an
            unknown or reserved typeflag, an invalid xattr key, or more than
            1 MiB of PAX records.
        UnicodeEncodeError: ``name``/``linkname`` holds a surrogate that
            ``surrogateescape`` cannot turn back into a byte.
    """
    if h.xattrs or h.devmajor or h.devminor:
        return _encode_slow(h)
    return encode_fields(h.name, h.typeflag, h.mode, h.size, h.mtime, h.linkname)


def encode_fields(name: str, typeflag: str, mode: int, size: int, mtime: int, linkname: str = "") -> bytes:
    """:func:`encode_header` of ``TarHeader(name, typeflag, mode, size, mtime,
    linkname)``, without building the header object (the packer's per-file
    path)."""
    # Fast path: a plain USTAR header (ASCII names of at most 100 bytes, size
    # and mtime in [0, 8**11), no devices, no xattrs).  Anything else, and
    # every error, is handled by _encode_slow.
    # (size | mtime) >> 33 is 0 exactly when both are in [0, 2**33): a
    # negative int keeps its sign bits after the shift.
    if (size | mtime) >> 33 or "\x00" in name:
        return _encode_slow(TarHeader(name, typeflag, mode, size, mtime, linkname))
    key = (typeflag, mode)
    prep = _FAST_PREP.get(key)
    if prep is None:
        if typeflag == "\x00":
            return _encode_slow(TarHeader(name, typeflag, mode, size, mtime, linkname))
        prep = _prepare(typeflag, mode, 0, 0)
        if len(_FAST_PREP) >= 1 << 16:  # only odd callers get here
            _FAST_PREP.clear()
        _FAST_PREP[key] = prep
    tfb, mug, devs, const, slash_ok = prep
    try:
        nb = name.encode("ascii")
    except UnicodeEncodeError:
        nb = b""
    if len(nb) > 100 or not nb or (not slash_ok and name[-1] == "/"):
        return _encode_slow(TarHeader(name, typeflag, mode, size, mtime, linkname))
    sm = _SIZE_MTIME_FMT % (size, mtime)
    if linkname:
        try:
            lb = linkname.encode("ascii")
        except UnicodeEncodeError:
            lb = b"\x00"
        if len(lb) > 100 or b"\x00" in lb:
            return _encode_slow(TarHeader(name, typeflag, mode, size, mtime, linkname))
        a = zlib.adler32(lb, zlib.adler32(sm, zlib.adler32(nb)))
    else:
        lb = b""
        a = zlib.adler32(sm, zlib.adler32(nb))
    chk = const + (a & 0xFFFF) - 1
    field = _CHKSUM_FIELD.get(chk) or _chksum_field(chk)
    return _HEADER.pack(nb, mug, sm, field, tfb, lb, _MAGIC_USTAR, devs, b"")


def _encode_slow(h: TarHeader) -> bytes:
    """Every case: validation, USTAR prefix split, and the PAX format."""
    name = h.name
    tf = h.typeflag
    if tf == "\x00":
        # WriteHeader promotes the legacy TypeRegA by the trailing slash.
        tf = TYPE_DIR if name.endswith("/") else TYPE_REG
    tfb, mug, devs, const, slash_ok = _prepare(tf, h.mode, h.devmajor, h.devminor)
    if not slash_ok and name.endswith("/"):
        raise TarHeaderError("archive/tar: cannot encode header: filename may not have trailing slash")
    if "\x00" in name or "\x00" in h.linkname:
        # validPAXRecord rejects NUL in path/linkpath; USTAR cannot hold it either.
        raise TarHeaderError("archive/tar: cannot encode header: invalid PAX record: NUL in name")

    # allowedFormats (common.go) with Format = FormatPAX: USTAR unless some
    # field needs a PAX record.  "path" is recorded for any non-ASCII or long
    # name, even one USTAR can split; it is only written if PAX is chosen.
    records: dict[bytes, bytes] = {}
    need_pax = bool(h.xattrs)  # PAXRecords => format.mayOnlyBe(FormatPAX)

    nb, ascii_name = _encode_name(name)
    prefix = b""
    name_f = nb
    if not ascii_name or len(nb) > 100:
        records[_PAX_PATH] = nb
        split = _split_ustar(nb) if ascii_name else None
        if split is None:
            need_pax = True
        else:
            prefix, name_f = split

    lb = b""
    if h.linkname:
        lb, ascii_link = _encode_name(h.linkname)
        if not ascii_link or len(lb) > 100:  # link names are never split
            records[_PAX_LINKPATH] = lb
            need_pax = True

    size = h.size
    if not 0 <= size < _OCTAL12_LIMIT:
        if size < 0 and tf not in _HEADER_ONLY:
            raise TarHeaderError("archive/tar: cannot encode header: negative size on header-only type")
        records[_PAX_SIZE] = b"%d" % size
        need_pax = True

    mtime = h.mtime
    if not 0 <= mtime < _OCTAL12_LIMIT:
        if mtime == _GO_ZERO_TIME_UNIX:
            mtime = 0  # time.Time{}.IsZero(): not checked, epoch written
        else:
            # formatPAXTime of a whole second (go-archive truncated the ns).
            records[_PAX_MTIME] = b"%d" % mtime
            need_pax = True

    if not need_pax:
        # writeUSTARHeader.
        sm = _SIZE_MTIME_FMT % (size, mtime)
        chk = const + _asum(name_f, sm, lb, prefix)
        return _HEADER.pack(name_f, mug, sm, _chksum_field(chk), tfb, lb, _MAGIC_USTAR, devs, prefix)

    # writePAXHeader.
    for key, value in h.xattrs:
        kb = key.encode("utf-8", "surrogateescape")
        # validPAXRecord: the key must be non-empty, without NUL or "=".
        if not kb or b"=" in kb or b"\x00" in kb:
            raise TarHeaderError(f"archive/tar: cannot encode header: invalid PAX record: xattr {key!r}")
        records[_PAX_XATTR + kb] = bytes(value)
    # slices.Sort(keys): byte order.
    data = b"".join([format_pax_record(k, records[k]) for k in sorted(records)])
    if len(data) > _MAX_SPECIAL_FILE_SIZE:
        raise TarHeaderError("archive/tar: header field too long")

    # The "x" block (writeRawFile): mode/uid/gid/mtime octal 0, the size of
    # the records, and the device fields never formatted (left NUL).
    pname = pax_header_name(nb)
    xmug = _MODE_UID_GID_FMT % 0
    xsm = b"%011o\x00%s" % (len(data), _OCTAL12_ZERO)
    chk = _SUM_CONST + 0x78 + _asum(pname, xmug, xsm)
    xblock = _HEADER.pack(pname, xmug, xsm, _chksum_field(chk), b"x", b"", _MAGIC_USTAR, b"", b"")

    # The main block (templateV7Plus with toASCII strings, formatOctal
    # numbers): no prefix, names cut to 100 bytes, numbers that do not fit
    # written as zero.
    name_f = _pax_field(nb)
    link_f = _pax_field(lb) if lb else b""
    sm = _octal12(size) + _octal12(mtime)
    chk = const + _asum(name_f, sm, link_f)
    main = _HEADER.pack(name_f, mug, sm, _chksum_field(chk), tfb, link_f, _MAGIC_USTAR, devs, b"")
    return xblock + data + _PADDINGS[-len(data) & 511] + main


# -- optional helpers for the packer -----------------------------------------


def header_from_stat(
    name: str,
    st: os.stat_result,
    *,
    linkname: str = "",
    xattrs: tuple[tuple[str, bytes], ...] = (),
) -> TarHeader:
    """Build the header go-archive derives from ``os.Lstat`` of a file.

    Mirrors ``tar.FileInfoHeader`` (common.go) + ``tarheader.statUnix`` +
    go-archive ``FileInfoHeader``: typeflag from the file type, directories get
    a trailing ``/``, mode is ``st_mode & 0o7777``, size only for regular files,
    mtime floored to whole seconds, and device numbers taken from ``st_rdev``
    whenever ``st_mode & (S_IFBLK | S_IFCHR)`` is non-zero.  That last test is
    go-archive's bitwise check, which is also true for directories, symlinks
    and sockets (their ``st_rdev`` is normally 0).

    Hard links are the caller's business: for a later name of an inode
    already sent, use ``dataclasses.replace(h, typeflag=TYPE_LINK,
    linkname=first_name, size=0)``.

    Args:
        name: Archive name relative to the context, ``/``-separated.
        st: ``os.lstat`` result.
        linkname: ``os.readlink`` text for a symlink (ignored otherwise).
        xattrs: Extra xattrs (see :func:`read_security_capability`).

    Raises:
        TarHeaderError: For sockets (``archive/tar: sockets not supported``)
            and unknown file types.
    """
    return header_from_mode(name, st.st_mode, st.st_size, st.st_mtime_ns, st.st_rdev, linkname=linkname, xattrs=xattrs)


def header_from_mode(
    name: str,
    m: int,
    size: int,
    mtime_ns: int,
    rdev: int,
    *,
    linkname: str = "",
    xattrs: tuple[tuple[str, bytes], ...] = (),
) -> TarHeader:
    """:func:`header_from_stat` from the ``lstat`` fields it uses (the packer
    gets them as plain numbers from a walker process)."""
    link = ""
    if _stat.S_ISREG(m):
        tf = TYPE_REG
    elif _stat.S_ISDIR(m):
        tf = TYPE_DIR
        size = 0
        if not name.endswith("/"):
            name += "/"
    elif _stat.S_ISLNK(m):
        tf = TYPE_SYMLINK
        size = 0
        link = linkname
    elif _stat.S_ISCHR(m):
        tf = TYPE_CHAR
        size = 0
    elif _stat.S_ISBLK(m):
        tf = TYPE_BLOCK
        size = 0
    elif _stat.S_ISFIFO(m):
        tf = TYPE_FIFO
        size = 0
    elif _stat.S_ISSOCK(m):
        raise TarHeaderError("archive/tar: sockets not supported")
    else:
        raise TarHeaderError(f"archive/tar: unknown file mode {m:o}")
    major = minor = 0
    if m & (_stat.S_IFBLK | _stat.S_IFCHR):
        major, minor = os.major(rdev), os.minor(rdev)
    return TarHeader(
        name=name,
        typeflag=tf,
        mode=m & 0o7777,
        size=size,
        mtime=mtime_ns // 1_000_000_000,  # Truncate(time.Second) == floor
        linkname=link,
        devmajor=major,
        devminor=minor,
        xattrs=xattrs,
    )


def encode_from_mode(name: str, m: int, size: int, mtime_ns: int, rdev: int, linkname: str = "") -> bytes | None:
    """``encode_header(header_from_mode(...))`` for the common kinds, without
    building a :class:`TarHeader`: a regular file, directory or symlink with
    no device numbers and no xattrs.  ``None`` for anything else (use the
    long way).  Raises what :func:`encode_header` raises."""
    if rdev:
        return None
    mtime = mtime_ns // 1_000_000_000  # Truncate(time.Second) == floor
    if _stat.S_ISREG(m):
        return encode_fields(name, TYPE_REG, m & 0o7777, size, mtime)
    if _stat.S_ISDIR(m):
        return encode_fields(name if name.endswith("/") else name + "/", TYPE_DIR, m & 0o7777, 0, mtime)
    if _stat.S_ISLNK(m):
        return encode_fields(name, TYPE_SYMLINK, m & 0o7777, 0, mtime, linkname)
    return None


def read_security_capability(path: str | bytes | int) -> tuple[tuple[str, bytes], ...]:
    """The xattrs go-archive stores for ``path``: ``security.capability`` only.

    Mirrors ``ReadSecurityXattrToTarHeader``: ``lgetxattr`` (symlinks are not
    followed), errors and a missing attribute mean "none", and a revision-3
    capability (namespaced root uid) is rewritten to revision 2 and cut to
    20 bytes.
    """
    try:
        if isinstance(path, int):  # an open file: no path lookup (cheaper)
            value = os.getxattr(path, "security.capability")
        else:
            value = os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return ()
    if len(value) > 3 and value[3] == 3:  # VFS_CAP_REVISION_3 in the top byte
        value = value[:3] + b"\x02" + value[4:20]
    return (("security.capability", value),)
