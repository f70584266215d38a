"""Tar header bytes exactly as the docker CLI (classic builder) writes them.

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
   record is ``"%d %s=%s\\n"`` where the length counts itself
   (``formatPAXRecord``, strconv.go).
3. The ``x`` block: name is ``path.Join(dir, "PaxHeaders.0", file)`` of the
   real name, made ASCII, cut to 100 bytes, trailing ``/`` removed
   (``writeRawFile``); mode/uid/gid/mtime are octal 0, size is the record
   length, magic ``ustar\\0`` version ``00``, and uname/gname/devmajor/devminor
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
"""

from __future__ import annotations

import os
import stat as _stat
import struct
from dataclasses import dataclass

from .errors import CtxpackError

__all__ = [
    "TarHeader",
    "TarHeaderError",
    "encode_header",
    "padding",
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


class TarHeaderError(CtxpackError, ValueError):
    """Go's Writer would refuse this header (``archive/tar: cannot encode header``).

    The docker CLI logs such an error and leaves the entry out of the tar
    (go-archive ``TarWithOptions`` only logs ``addTarFile`` failures).
    """


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
# mode..mtime are contiguous (offset 100..148) and packed as one 48-byte run;
# uname/gname are always empty (no user lookups) so they are pad bytes.
# struct's "s" pads short values with NULs, which is exactly formatString's
# "copy then NUL-terminate if room" for the values we pass.
_HEADER = struct.Struct("100s48s8sc100s8s64x16s155s12x")
assert _HEADER.size == BLOCK_SIZE

_MAGIC_USTAR = b"ustar\x0000"  # magicUSTAR + versionUSTAR (used for PAX too)
_SUM_MAGIC = sum(_MAGIC_USTAR)
_SUM_CHKSUM_SPACES = 8 * 0x20  # computeChecksum treats the field as spaces
_SUM_CONST = _SUM_MAGIC + _SUM_CHKSUM_SPACES
_CHKSUM_SPACES = b" " * 8

# Numeric run for mode/uid/gid/size/mtime: formatOctal pads to width-1 digits
# and NUL-terminates; uid/gid come from ChownOpts 0:0.
_NUMS_FMT = b"%07o\x000000000\x000000000\x00%011o\x00%011o\x00"
_DEVS_FMT = b"%07o\x00%07o\x00"
_DEVS_ZERO = _DEVS_FMT % (0, 0)
_SUM_DEVS_ZERO = sum(_DEVS_ZERO)

# fitsInOctal(n, x): 0 <= x < 1 << ((n-1)*3).
_OCTAL12_LIMIT = 1 << 33  # size, mtime: 8 GiB / year 2242
_OCTAL8_LIMIT = 1 << 21  # mode, devmajor, devminor

# time.Time{} (year 1) is IsZero(): verifyTime skips it and templateV7Plus
# writes the Unix epoch instead.  A file can only have it by utime(2).
_GO_ZERO_TIME_UNIX = -62135596800

# Bytes toASCII drops: NUL and everything >= 0x80 (Go ranges over the string;
# a multi-byte rune and each invalid byte (U+FFFD) are all >= 0x80, so
# dropping these bytes is the same as dropping those runes).
_NOT_ASCII = bytes([0]) + bytes(range(0x80, 0x100))

_HEADER_ONLY = frozenset((TYPE_LINK, TYPE_SYMLINK, TYPE_CHAR, TYPE_BLOCK, TYPE_DIR, TYPE_FIFO))
_NO_TRAILING_SLASH = frozenset((TYPE_REG, TYPE_CHAR, TYPE_BLOCK, TYPE_FIFO, "S"))
_TYPEFLAG_BYTES = {chr(c): bytes([c]) for c in range(0x20, 0x7F)}

_PADDINGS = tuple(bytes(n) for n in range(BLOCK_SIZE))

# maxSpecialFileSize (format.go): a PAX data section larger than 1 MiB is an error.
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
    is ``/``, puts one NUL right after the last non-``/`` byte (so buggy
    readers do not see a directory).
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
    """One ``"<len> <key>=<value>\\n"`` record; ``<len>`` counts the whole record.

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
    return b"00000000000\x00"


def _encode_pax(
    h: TarHeader,
    nb: bytes,
    lb: bytes,
    tfb: bytes,
    records: dict[bytes, bytes],
    mtime: int,
    devs: bytes,
) -> bytes:
    """``writePAXHeader``: the ``x`` block, its records, then the main block."""
    for key, value in h.xattrs:
        kb = key.encode("utf-8", "surrogateescape")
        # validPAXRecord: no NUL and no "=" in the key.
        if not kb or b"=" in kb or b"\x00" in kb:
            raise TarHeaderError(f"archive/tar: cannot encode header: invalid PAX record: xattr {key!r}")
        records[_PAX_XATTR + kb] = bytes(value)

    data = b"".join([format_pax_record(k, records[k]) for k in sorted(records)])
    if len(data) > _MAX_SPECIAL_FILE_SIZE:
        raise TarHeaderError("archive/tar: header field too long")

    # The "x" block (writeRawFile): numbers are octal 0 except the size, the
    # device fields are not formatted at all (left NUL).
    pname = pax_header_name(nb)
    pnums = _NUMS_FMT % (0, len(data), 0)
    chk = _SUM_CONST + sum(pname) + sum(pnums) + 0x78
    xblock = _HEADER.pack(pname, pnums, b"%06o\x00 " % chk, b"x", b"", _MAGIC_USTAR, b"", b"")

    # The main block: toASCII names (cut, slash quirk), no prefix, numbers
    # that do not fit are zero.
    name_f = _pax_field(nb)
    link_f = _pax_field(lb) if lb else b""
    nums = b"%07o\x000000000\x000000000\x00%s%s" % (h.mode, _octal12(h.size), _octal12(mtime))
    chk = _SUM_CONST + sum(name_f) + sum(nums) + tfb[0] + sum(link_f) + sum(devs)
    main = _HEADER.pack(name_f, nums, b"%06o\x00 " % chk, tfb, link_f, _MAGIC_USTAR, devs, b"")
    return xblock + data + _PADDINGS[-len(data) & 511] + main


def encode_header(h: TarHeader) -> bytes:
    """Encode ``h`` as Go's ``tar.Writer.WriteHeader`` would for the docker CLI.

    Returns the main 512-byte header, preceded by the PAX extended header
    (one ``x`` block plus its padded records) when one is needed.  File data
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
    name = h.name
    tf = h.typeflag
    if tf == "\x00":
        # WriteHeader promotes the legacy TypeRegA by the trailing slash.
        tf = TYPE_DIR if name.endswith("/") else TYPE_REG
    tfb = _TYPEFLAG_BYTES.get(tf)
    if tfb is None or tf in "xgLK":
        raise TarHeaderError(f"archive/tar: cannot encode header: typeflag {tf!r} not supported")
    if tf in _NO_TRAILING_SLASH and name.endswith("/"):
        raise TarHeaderError("archive/tar: cannot encode header: filename may not have trailing slash")
    if "\x00" in name or "\x00" in h.linkname:
        # validPAXRecord rejects NUL in path/linkpath; USTAR cannot hold it either.
        raise TarHeaderError("archive/tar: cannot encode header: invalid PAX record: NUL in name")

    mode = h.mode
    if not 0 <= mode < _OCTAL8_LIMIT:
        raise TarHeaderError(f"archive/tar: cannot encode header: PAX cannot encode Mode={mode}")
    major, minor = h.devmajor, h.devminor
    if major or minor:
        if not (0 <= major < _OCTAL8_LIMIT and 0 <= minor < _OCTAL8_LIMIT):
            raise TarHeaderError(
                f"archive/tar: cannot encode header: PAX cannot encode Devmajor/Devminor={major},{minor}"
            )
        devs = _DEVS_FMT % (major, minor)
        sum_devs = sum(devs)
    else:
        devs = _DEVS_ZERO
        sum_devs = _SUM_DEVS_ZERO

    records: dict[bytes, bytes] = {}
    need_pax = bool(h.xattrs)  # PAXRecords => format.mayOnlyBe(FormatPAX)

    # Name: USTAR takes ASCII <= 100 bytes as is, or split into prefix/name.
    prefix = b""
    try:
        nb = name.encode("ascii")
        ascii_name = True
    except UnicodeEncodeError:
        nb = name.encode("utf-8", "surrogateescape")
        ascii_name = False
    name_f = nb
    if not ascii_name or len(nb) > 100:
        records[_PAX_PATH] = nb  # recorded even when USTAR can split it
        split = _split_ustar(nb) if ascii_name else None
        if split is None:
            need_pax = True
        else:
            prefix, name_f = split

    # Link name: never split.
    link = h.linkname
    lb = b""
    if link:
        try:
            lb = link.encode("ascii")
            ascii_link = True
        except UnicodeEncodeError:
            lb = link.encode("utf-8", "surrogateescape")
            ascii_link = False
        if not ascii_link or len(lb) > 100:
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
            mtime = 0  # time.Time{}.IsZero(): no check, epoch written
        else:
            # formatPAXTime: whole seconds (go-archive truncated the nanoseconds).
            records[_PAX_MTIME] = b"%d" % mtime
            need_pax = True

    if need_pax:
        return _encode_pax(h, nb, lb, tfb, records, mtime, devs)

    # writeUSTARHeader.
    nums = _NUMS_FMT % (mode, size, mtime)
    chk = _SUM_CONST + sum(name_f) + sum(nums) + tfb[0] + sum(lb) + sum_devs + sum(prefix)
    return _HEADER.pack(name_f, nums, b"%06o\x00 " % chk, tfb, lb, _MAGIC_USTAR, devs, prefix)


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
    m = st.st_mode
    size = 0
    link = ""
    if _stat.S_ISREG(m):
        tf = TYPE_REG
        size = st.st_size
    elif _stat.S_ISDIR(m):
        tf = TYPE_DIR
        if not name.endswith("/"):
            name += "/"
    elif _stat.S_ISLNK(m):
        tf = TYPE_SYMLINK
        link = linkname
    elif _stat.S_ISCHR(m):
        tf = TYPE_CHAR
    elif _stat.S_ISBLK(m):
        tf = TYPE_BLOCK
    elif _stat.S_ISFIFO(m):
        tf = TYPE_FIFO
    elif _stat.S_ISSOCK(m):
        raise TarHeaderError("archive/tar: sockets not supported")
    else:
        raise TarHeaderError(f"archive/tar: unknown file mode {m:o}")
    major = minor = 0
    if m & (_stat.S_IFBLK | _stat.S_IFCHR):
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return TarHeader(
        name=name,
        typeflag=tf,
        mode=m & 0o7777,
        size=size,
        mtime=st.st_mtime_ns // 1_000_000_000,  # Truncate(time.Second) == floor
        linkname=link,
        devmajor=major,
        devminor=minor,
        xattrs=xattrs,
    )


def read_security_capability(path: str | bytes) -> tuple[tuple[str, bytes], ...]:
    """The xattrs go-archive stores for ``path``: ``security.capability`` only.

    Mirrors ``ReadSecurityXattrToTarHeader``: ``lgetxattr`` (symlinks are not
    followed), errors and a missing attribute mean "none", and a revision-3
    capability (namespaced root uid) is rewritten to revision 2 and cut to
    20 bytes.
    """
    try:
        value = os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return ()
    if len(value) > 3 and value[3] == 3:  # VFS_CAP_REVISION_3 in the top byte
        value = value[:3] + b"\x02" + value[4:20]
    return (("security.capability", value),)
