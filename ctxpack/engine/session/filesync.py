"""``moby.filesync.v1.FileSync/DiffCopy``, the sending side, from ctxpack's listing.

BuildKit asks for a directory by name (metadata ``dir-name``): ``dockerfile``
(the Dockerfile, with ``followpaths`` naming it and its ``.dockerignore``)
and ``context`` (first with ``followpaths: .dockerignore``, then the whole
context).  The sender (fsutil ``send.go``) streams one ``STAT`` packet per
entry in walk order, ends the listing with an empty ``STAT``, answers each
``REQ{id}`` (``id`` = the ordinal of the STAT, directories counted) with
``DATA`` chunks of at most 32 KiB and an empty ``DATA``, and answers the
receiver's ``FIN`` with a ``FIN``.  The receiver diffs the listing against
its cached copy of the previous upload (same session shared key) and asks
only for files whose metadata changed: that is the incremental upload.

What is in ``context`` is ctxpack's decision, not the daemon's: the listing is
exactly :func:`ctxpack.walker.list_entries` for the BuildKit dialect, and the
``dockerfile`` directory carries a comment-only ``<Dockerfile>.dockerignore``
so the frontend takes no exclude patterns from anywhere else (BuildKit 0.8
prefers it over the context's ``.dockerignore`` as soon as it exists).  The
daemon's ``exclude-patterns`` are therefore ignored, as the docker CLI
ignores them when it has excludes of its own, unless it sets
``override-excludes: true``; ``include-patterns`` and ``followpaths`` narrow
the listing as fsutil does (a path is sent when it or a parent matches; a
directory on the way to a match is sent just before its first sent child;
symlinks on a followed path are followed inside the context).

Owners are sent as 0:0, as the docker CLI does for ``context``
(``resetUIDAndGID``); modes are Go ``os.FileMode`` bits.
"""

from __future__ import annotations

import dataclasses
import os
import stat as st
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...context import BuildContext, Dialect
from ...errors import ContextError
from . import wire
from .grpcserver import Call, RpcError, Status

if TYPE_CHECKING:
    from ...ignore.matcher import Matcher

__all__ = [
    "CHUNK_SIZE", "IGNORE_COMMENT", "go_file_mode", "ListedEntry", "Listing", "context_listing",
    "dockerfile_listing", "DirStats", "FileSyncService",
]

#: fsutil's copy buffer: the largest DATA payload.
CHUNK_SIZE = 32 * 1024

#: The content of the ``<Dockerfile>.dockerignore`` served in ``dockerfile``.
IGNORE_COMMENT = b"# ctxpack filters the build context itself; BuildKit must not filter it again.\n"

# Go os.FileMode type bits.
_MODE_DIR = 1 << 31
_MODE_SYMLINK = 1 << 27
_MODE_DEVICE = 1 << 26
_MODE_NAMED_PIPE = 1 << 25
_MODE_SOCKET = 1 << 24
_MODE_SETUID = 1 << 23
_MODE_SETGID = 1 << 22
_MODE_CHAR_DEVICE = 1 << 21
_MODE_STICKY = 1 << 20


def go_file_mode(st_mode: int) -> int:
    """``st_mode`` → Go ``os.FileMode`` (what ``os.Lstat(...).Mode()`` returns)."""
    mode = st_mode & 0o777
    fmt = st.S_IFMT(st_mode)
    if fmt == st.S_IFDIR:
        mode |= _MODE_DIR
    elif fmt == st.S_IFLNK:
        mode |= _MODE_SYMLINK
    elif fmt == st.S_IFIFO:
        mode |= _MODE_NAMED_PIPE
    elif fmt == st.S_IFCHR:
        mode |= _MODE_DEVICE | _MODE_CHAR_DEVICE
    elif fmt == st.S_IFBLK:
        mode |= _MODE_DEVICE
    elif fmt == st.S_IFSOCK:
        mode |= _MODE_SOCKET
    if st_mode & st.S_ISUID:
        mode |= _MODE_SETUID
    if st_mode & st.S_ISGID:
        mode |= _MODE_SETGID
    if st_mode & st.S_ISVTX:
        mode |= _MODE_STICKY
    return mode


@dataclass(slots=True)
class ListedEntry:
    """One entry as served: its ``Stat`` (path relative to the directory,
    ``/``-separated), where its content comes from (``source``: an absolute
    path, or ``data``), and its inode key for hard links."""

    stat: wire.Stat
    source: str | None = None
    data: bytes | None = None
    inode: tuple[int, int] | None = None

    @property
    def path(self) -> str:
        return self.stat.path

    @property
    def is_dir(self) -> bool:
        return bool(self.stat.mode & _MODE_DIR)


def _can_request(mode: int) -> bool:
    # os.ModeType = Dir|Symlink|NamedPipe|Socket|Device|CharDevice|Irregular
    return mode & ((1 << 31) | (1 << 27) | (1 << 25) | (1 << 24) | (1 << 26) | (1 << 21) | (1 << 19)) == 0


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            pass
    return out


def stat_of(rel: str, abs_path: str, s: os.stat_result, *, link: str = "", xattrs: bool = True) -> wire.Stat:
    """The fsutil ``Stat`` of one ``lstat`` result (owners reset to 0:0)."""
    mode = go_file_mode(s.st_mode)
    fmt = st.S_IFMT(s.st_mode)
    out = wire.Stat(rel, mode, 0, 0, 0 if fmt == st.S_IFDIR else s.st_size, s.st_mtime_ns, link)
    if fmt in (st.S_IFCHR, st.S_IFBLK):
        out.devmajor, out.devminor = os.major(s.st_rdev), os.minor(s.st_rdev)
    if xattrs:
        out.xattrs = _xattrs(abs_path)
    return out


@dataclass
class Listing:
    """A directory as served: entries in walk order."""

    name: str
    entries: list[ListedEntry]
    root: str = ""


def context_listing(ctx: BuildContext) -> Listing:
    """ctxpack's exact BuildKit-dialect context (``ctx`` a
    :class:`ctxpack.context.BuildContext` opened with ``dialect="buildkit"``)
    as ``Stat`` entries.  Raises :class:`ContextError` as the walker does."""
    from ...walker import EntryKind, list_entries

    if ctx.dialect is not Dialect.BUILDKIT:
        raise ContextError("a session serves the BuildKit dialect's context; open it with dialect='buildkit'")
    root = ctx.root
    out: list[ListedEntry] = []
    for e in list_entries(ctx):
        if e.stat is None:
            continue  # synthetic entries are a classic-dialect matter
        absp = os.path.join(root, e.path)
        s = e.stat
        if e.kind == EntryKind.HARDLINK:
            stt = stat_of(e.path, absp, s, link=e.link or "")
        elif e.kind == EntryKind.SYMLINK:
            stt = stat_of(e.path, absp, s, link=e.link or "")
        else:
            stt = stat_of(e.path, absp, s)
        inode = (s.st_dev, s.st_ino) if e.kind in (EntryKind.FILE, EntryKind.HARDLINK) and s.st_nlink > 1 else None
        source = absp if e.kind in (EntryKind.FILE, EntryKind.HARDLINK) else None
        out.append(ListedEntry(stt, source, None, inode))
    return Listing("context", out, root)


def dockerfile_listing(dockerfile_path: str | None, data: bytes | None, name: str) -> Listing:
    """The ``dockerfile`` directory: the Dockerfile as ``name`` (from
    ``dockerfile_path``, or ``data`` for one read from stdin) and a
    comment-only ``name.dockerignore``.  Names sort bytewise, as fsutil walks."""
    entries = []
    if data is None and dockerfile_path is not None:
        s = os.stat(dockerfile_path)  # a symlinked Dockerfile is served as its target
        df = wire.Stat(name, go_file_mode((s.st_mode & 0o7777) | st.S_IFREG), 0, 0, s.st_size, s.st_mtime_ns)
        entries.append(ListedEntry(df, dockerfile_path))
    else:
        body = data or b""
        entries.append(ListedEntry(wire.Stat(name, 0o644, 0, 0, len(body), 0), None, body))
    ign = wire.Stat(name + ".dockerignore", 0o644, 0, 0, len(IGNORE_COMMENT), 0)
    entries.append(ListedEntry(ign, None, IGNORE_COMMENT))
    entries.sort(key=lambda e: e.path.encode("utf-8", "surrogateescape"))
    return Listing("dockerfile", entries, os.path.dirname(dockerfile_path or ""))


# --------------------------------------------------------------------------
# include-patterns / followpaths
# --------------------------------------------------------------------------


def _clean(p: str) -> str:
    parts: list[str] = []
    for part in p.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def follow_links(listing: Listing, paths: Iterable[str], limit: int = 255) -> list[str]:
    """fsutil ``FollowLinks`` on the listing: each path, plus the targets of
    the symlinks met on it (relative targets from the link's directory,
    absolute ones from the context root), recursively."""
    by_path = {e.path: e for e in listing.entries}
    out: set[str] = set()

    def add(p: str, depth: int) -> None:
        p = _clean(p)
        if depth > limit or not p:
            return
        parts = p.split("/")
        for i in range(1, len(parts) + 1):
            cur = "/".join(parts[:i])
            e = by_path.get(cur)
            if e is not None and e.stat.mode & _MODE_SYMLINK:
                if cur in out and i == len(parts):
                    return
                out.add(cur)
                target = e.stat.linkname
                base = "" if target.startswith("/") else "/".join(parts[:i - 1])
                rest = "/".join(parts[i:])
                add("/".join(x for x in (base, target, rest) if x), depth + 1)
                return
        out.add(p)

    for p in paths:
        add(p, 0)
    return sorted(out)


def _include_matcher(patterns: Sequence[str]) -> Matcher:
    from ...ignore.matcher import Matcher
    from ...ignore.reader import parse_ignore

    text = "\n".join(p for p in patterns if p.strip()).encode("utf-8", "surrogateescape")
    return Matcher.from_raw(parse_ignore(text, source="include-patterns"))


def _may_contain(dir_path: str, literal_prefixes: Sequence[str | None]) -> bool:
    # None: a pattern with wildcards before its end, which could match anything below.
    for lit in literal_prefixes:
        if lit is None or lit == dir_path or lit.startswith(dir_path + "/"):
            return True
    return False


def _literal_prefix(p: str) -> str | None:
    p = _clean(p)
    for suffix in ("/**", "/*"):
        if p.endswith(suffix):
            p = p[: -len(suffix)]
    return None if any(c in p for c in "*?[\\") else p


def select(listing: Listing, includes: Sequence[str] | None, followpaths: Sequence[str] | None) -> list[ListedEntry]:
    """The entries fsutil sends for these ``include-patterns`` and
    ``followpaths`` (``None``/empty: no narrowing), hard links re-pointed
    when their first name is not sent."""
    patterns = list(includes or [])
    if followpaths:
        patterns += follow_links(listing, followpaths)
    if not includes and not followpaths:
        chosen = listing.entries
    else:
        matcher = _include_matcher(patterns)
        prefixes = [_literal_prefix(p) for p in patterns]
        chosen = []
        held: list[ListedEntry] = []  # directories on the way to a match, not yet sent
        for e in listing.entries:
            while held and not (e.path.startswith(held[-1].path + "/")):
                held.pop()
            if matcher.matches_or_parent_matches(e.path)[0]:
                chosen.extend(held)
                held.clear()
                chosen.append(e)
            elif e.is_dir and _may_contain(e.path, prefixes):
                held.append(e)
    return _relink(chosen)


def _relink(entries: list[ListedEntry]) -> list[ListedEntry]:
    """Hard links whose first name is not in ``entries`` become files, and
    later names point at the first name that is."""
    first: dict[tuple[int, int], str] = {}
    out = []
    for e in entries:
        if e.inode is None:
            out.append(e)
            continue
        seen = first.get(e.inode)
        if seen is None:
            first[e.inode] = e.path
            if e.stat.linkname and not e.stat.mode & _MODE_SYMLINK:
                e = ListedEntry(dataclasses.replace(e.stat, linkname=""), e.source, e.data, e.inode)
        elif e.stat.linkname != seen:
            e = ListedEntry(dataclasses.replace(e.stat, linkname=seen), e.source, None, e.inode)
        out.append(e)
    return out


# --------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------


@dataclass
class DirStats:
    """What one DiffCopy call served."""

    dir_name: str
    entries: int = 0
    requests: int = 0
    requested_paths: list[str] = field(default_factory=list)
    data_bytes: int = 0
    stat_bytes: int = 0
    packet_bytes: int = 0
    #: Seconds from the call's start to the receiver's FIN (the upload).
    seconds: float = 0.0


#: Keep at most this many requested paths per call in :class:`DirStats`.
MAX_REQUESTED_PATHS = 1000

_FLUSH = 256 * 1024


class FileSyncService:
    """Serves ``dockerfile`` and ``context`` listings to DiffCopy calls.

    ``listings`` maps a ``dir-name`` to a :class:`Listing` or to a function
    that makes one (called once, on first use, from the call's thread).
    ``stats`` collects one :class:`DirStats` per call.
    """

    def __init__(self, listings: dict[str, object], *, recv_timeout: float = 600.0):
        self._sources = dict(listings)
        self._made: dict[str, Listing] = {}
        self._lock = threading.Lock()
        self._errors: dict[str, BaseException] = {}
        self.stats: list[DirStats] = []
        self.recv_timeout = recv_timeout

    def prepare(self, name: str) -> None:
        """Make the listing ``name`` now (e.g. in a thread while the session starts)."""
        try:
            self.listing(name)
        except Exception:  # noqa: BLE001 - reported when the daemon asks for it
            pass

    def listing(self, name: str) -> Listing:
        with self._lock:
            if name in self._made:
                return self._made[name]
            if name in self._errors:
                raise self._errors[name]
            src = self._sources.get(name)
            if src is None:
                raise RpcError(Status.NOT_FOUND, f"no access allowed to dir {name!r}")
            try:
                made = src if isinstance(src, Listing) else src()  # type: ignore[operator]
            except Exception as e:
                self._errors[name] = e
                raise
            self._made[name] = made
            return made

    def diff_copy(self, call: Call) -> None:
        """The DiffCopy handler (runs in the call's thread)."""
        md = call.metadata

        def values(key: str) -> list[str]:
            vals = md.get(key, [])
            if md.get(key + "-encoded", [""])[0] == "1":
                vals = [urllib.parse.unquote(v) for v in vals]
            return vals

        name = (values("dir-name") or [""])[0]
        stats = DirStats(name)
        self.stats.append(stats)
        t0 = time.monotonic()
        try:
            self._diff_copy(call, name, values, stats)
        finally:
            stats.seconds = time.monotonic() - t0

    def _diff_copy(self, call: Call, name: str, values: Callable[[str], list[str]], stats: DirStats) -> None:
        md = call.metadata
        try:
            listing = self.listing(name)
        except RpcError:
            raise
        except Exception as err:  # noqa: BLE001 - the daemon shows it as the build error
            msg = str(err)
            call.send(wire.encode_packet(wire.Packet(wire.PACKET_ERR, data=msg.encode("utf-8", "replace"))))
            raise RpcError(Status.UNKNOWN, msg) from None
        entries = select(listing, values("include-patterns"), values("followpaths"))
        # exclude-patterns: ctxpack's rules already decided (see the module docstring).
        if md.get("override-excludes", [""])[0] == "true" and values("exclude-patterns"):
            excl = _include_matcher(values("exclude-patterns"))
            entries = _relink([e for e in entries if not excl.matches_or_parent_matches(e.path)[0]])
        stats.entries = len(entries)
        files: dict[int, ListedEntry] = {}
        buf = bytearray()
        payload = 0
        for i, e in enumerate(entries):
            body = wire.encode_packet(wire.Packet(wire.PACKET_STAT), wire.encode_stat(e.stat))
            buf += len(body).to_bytes(5, "big")
            buf += body
            payload += len(body)
            if _can_request(e.stat.mode) and not (e.stat.linkname and e.inode is not None):
                files[i] = e
            if len(buf) >= _FLUSH:
                call.send_raw(buf, payload)
                stats.stat_bytes += payload
                buf, payload = bytearray(), 0
        end = wire.encode_packet(wire.Packet(wire.PACKET_STAT))
        buf += len(end).to_bytes(5, "big") + end
        call.send_raw(buf, payload + len(end))
        stats.stat_bytes += payload + len(end)
        self._serve_requests(call, files, stats)

    def _serve_requests(self, call: Call, files: dict[int, ListedEntry], stats: DirStats) -> None:
        buf = bytearray()
        payload = 0
        while True:
            msg = call.recv_nowait() if buf else call.recv(self.recv_timeout)
            if msg is Call.EMPTY:
                call.send_raw(buf, payload)
                stats.packet_bytes += payload
                buf, payload = bytearray(), 0
                continue
            if msg is None:
                break  # the receiver ended its side without FIN
            assert isinstance(msg, bytes)
            p = wire.decode_packet(msg)
            if p.type == wire.PACKET_REQ:
                e = files.pop(p.id, None)
                if e is None:
                    raise RpcError(Status.INVALID_ARGUMENT, f"invalid file id {p.id}")
                stats.requests += 1
                if len(stats.requested_paths) < MAX_REQUESTED_PATHS:
                    stats.requested_paths.append(e.path)
                for chunk in _chunks(e):
                    body = wire.encode_data_packet(p.id, chunk)
                    buf += len(body).to_bytes(5, "big")
                    buf += body
                    payload += len(body)
                    stats.data_bytes += len(chunk)
                    if len(buf) >= _FLUSH:
                        call.send_raw(buf, payload)
                        stats.packet_bytes += payload
                        buf, payload = bytearray(), 0
                body = wire.encode_data_packet(p.id, b"")
                buf += len(body).to_bytes(5, "big") + body
                payload += len(body)
            elif p.type == wire.PACKET_FIN:
                body = wire.encode_packet(wire.Packet(wire.PACKET_FIN))
                buf += len(body).to_bytes(5, "big") + body
                call.send_raw(buf, payload + len(body))
                stats.packet_bytes += payload + len(body)
                return
            elif p.type == wire.PACKET_ERR:
                raise RpcError(Status.UNKNOWN, "error from receiver: " + p.data.decode("utf-8", "replace"))
        if buf:
            call.send_raw(buf, payload)
            stats.packet_bytes += payload


def _chunks(e: ListedEntry) -> Iterable[bytes]:
    if e.data is not None:
        for i in range(0, len(e.data), CHUNK_SIZE):
            yield e.data[i:i + CHUNK_SIZE]
        return
    if e.source is None:
        return
    try:
        fd = os.open(e.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as err:
        # fsutil: a file that cannot be opened is sent empty.
        if err.errno in (2, 40):  # ENOENT, ELOOP: gone or replaced by a link meanwhile
            return
        raise
    try:
        while True:
            chunk = os.read(fd, CHUNK_SIZE)
            if not chunk:
                return
            yield chunk
    finally:
        os.close(fd)
