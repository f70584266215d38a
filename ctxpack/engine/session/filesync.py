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
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import h2.exceptions

from ...context import BuildContext, Dialect
from ...errors import ChangedDuringReadError, ContextError
from ...fs import RETRIES, SMALL_FILE, read_whole
from . import wire
from .grpcserver import Call, RpcError, Status

if TYPE_CHECKING:
    from ...ignore.matcher import Matcher

__all__ = [
    "CHUNK_SIZE", "IGNORE_COMMENT", "go_file_mode", "ListedEntry", "Listing", "context_listing", "iter_context_listing",
    "dockerfile_listing", "DirStats", "FileSyncService", "framed_stat", "listed_entry",
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
    path, or ``data``), its inode key for hard links, and (``framed``) its
    STAT packet when it was made beforehand."""

    stat: wire.Stat
    source: str | None = None
    data: bytes | None = None
    inode: tuple[int, int] | None = None
    #: The STAT as the framed gRPC message it is sent as (:func:`framed_stat`),
    #: when it was made before (a kept listing's); ``None``: framed when sent.
    framed: bytes | None = field(default=None, compare=False)

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


class Listing:
    """A directory as served: entries in walk order.  A listing made by a
    walk grows while the walk runs (:meth:`append` / :meth:`finish`, from
    the walking thread): readers take what is there (:meth:`wait_from`) and
    so stream STATs as the walk produces them, instead of waiting for the
    whole tree."""

    def __init__(self, name: str, entries: list[ListedEntry] | None = None, root: str = "", *,
                 complete: bool = True):
        self.name = name
        self.entries: list[ListedEntry] = list(entries or [])
        self.root = root
        self.complete = complete
        #: Why the walk stopped early (raised to readers at the end).
        self.error: BaseException | None = None
        self._cond = threading.Condition()

    def add(self, entry: ListedEntry) -> None:
        """Append one entry (the walking thread; readers see it within
        :data:`_POLL` seconds, or at once after :meth:`notify`)."""
        self.entries.append(entry)  # one list.append: atomic, no lock needed

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.complete = True
            self.error = error
            self._cond.notify_all()

    def wait_from(self, start: int, timeout: float | None = None) -> tuple[list[ListedEntry], bool]:
        """Entries from index ``start`` on (waiting until there is at least
        one, or the walk ended), and whether the walk has ended.  Raises the
        walk's error once every entry before it was read; TimeoutError
        after ``timeout`` seconds without progress."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not (self.complete or len(self.entries) > start):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"the listing of {self.root or self.name} made no progress for {timeout:.0f}s")
                self._cond.wait(_POLL)  # entries added without a notify are seen on the next turn
            complete = self.complete
            batch = self.entries[start:]
            if complete and not batch and self.error is not None:
                raise self.error
            return batch, complete and not batch

    def wait_complete(self, timeout: float | None = None) -> list[ListedEntry]:
        """Every entry, once the walk ended (its error raised)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.complete, timeout):
                raise TimeoutError(f"the listing of {self.root or self.name} did not end within {timeout:.0f}s")
            if self.error is not None:
                raise self.error
            return self.entries

    def __iter__(self) -> Iterator[ListedEntry]:
        i = 0
        while True:
            batch, done = self.wait_from(i)
            if done:
                return
            yield from batch
            i += len(batch)


def listed_entry(rel: str, absp: str, s: os.stat_result, kind: str, link: str | None) -> ListedEntry:
    """The served form of one walker entry (``kind`` an
    :class:`ctxpack.walker.EntryKind`, ``s`` its ``lstat``, ``link`` a
    symlink's target or a hard link's first name)."""
    from ...walker import EntryKind

    stt = stat_of(rel, absp, s, link=link or "" if kind in (EntryKind.HARDLINK, EntryKind.SYMLINK) else "")
    if kind == EntryKind.SOCKET:
        # What the docker CLI's fsutil sends for a socket (seen on the
        # wire from the 20.10 CLI): its permission bits without the
        # socket type, size 0; asked for, it answers an empty DATA (it
        # cannot open a socket).  The image has an empty regular file.
        stt.mode &= ~_MODE_SOCKET
        return ListedEntry(stt, None, b"", None)
    regular = kind in (EntryKind.FILE, EntryKind.HARDLINK)
    inode = (s.st_dev, s.st_ino) if regular and s.st_nlink > 1 else None
    return ListedEntry(stt, absp if regular else None, None, inode)


def framed_stat(e: ListedEntry) -> bytes:
    """The STAT packet of ``e`` as one framed gRPC message."""
    body = wire.encode_packet(wire.Packet(wire.PACKET_STAT), wire.encode_stat(e.stat))
    return len(body).to_bytes(5, "big") + body


def iter_context_listing(ctx: BuildContext, keys: array[int] | None = None) -> Iterator[ListedEntry]:
    """ctxpack's exact BuildKit-dialect context (``ctx`` a
    :class:`ctxpack.context.BuildContext` opened with ``dialect="buildkit"``)
    as ``Stat`` entries, in walk order, as the walk produces them.  Raises
    :class:`ContextError` as the walker does.  ``keys``: each entry's stat
    key (:func:`ctxpack.index.digest.stat_key`'s five numbers) is appended
    there, from the same ``lstat`` as its ``Stat``."""
    from ...walker import list_entries

    if ctx.dialect is not Dialect.BUILDKIT:
        raise ContextError("a session serves the BuildKit dialect's context; open it with dialect='buildkit'")
    root = ctx.root
    for e in list_entries(ctx, sockets=True):
        s = e.stat
        if s is None:
            continue  # synthetic entries are a classic-dialect matter
        if keys is not None:
            keys.extend((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode))
        yield listed_entry(e.path, os.path.join(root, e.path), s, e.kind, e.link)


def context_listing(ctx: BuildContext) -> Listing:
    """:func:`iter_context_listing`, whole."""
    return Listing("context", list(iter_context_listing(ctx)), ctx.root)


def dockerfile_listing(dockerfile_path: str | None, data: bytes | None, name: str) -> Listing:
    """The ``dockerfile`` directory: the Dockerfile as ``name`` (from
    ``dockerfile_path``, or ``data`` for one read from stdin) and a
    comment-only ``name.dockerignore``.  Names sort bytewise, as fsutil walks."""
    entries = []
    if data is None and dockerfile_path is not None:
        s = os.stat(dockerfile_path)  # a symlinked Dockerfile is served as its target
        if st.S_ISDIR(s.st_mode):
            # ``-f DIR``: served as the directory it is, as the docker CLI
            # serves it, so that the daemon fails with its own "is a directory"
            # (never requested: no content to read).
            entries.append(ListedEntry(wire.Stat(name, go_file_mode(s.st_mode), 0, 0, s.st_size, s.st_mtime_ns)))
        else:
            df = wire.Stat(name, go_file_mode((s.st_mode & 0o7777) | st.S_IFREG), 0, 0, s.st_size, s.st_mtime_ns)
            # read through the link, as it was statted
            entries.append(ListedEntry(df, os.path.realpath(dockerfile_path)))
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
        chosen = list(listing.entries)
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


def _relink(entries: Iterable[ListedEntry]) -> list[ListedEntry]:
    """Hard links whose first name is not in ``entries`` become files, and
    later names point at the first name that is."""
    return list(_relinked(entries, {}))


def _relinked(entries: Iterable[ListedEntry], first: dict[tuple[int, int], str]) -> Iterator[ListedEntry]:
    # ``first``: inode -> the first name sent, kept across calls for a stream.
    for e in entries:
        if e.inode is None:
            yield e
            continue
        seen = first.get(e.inode)
        if seen is None:
            first[e.inode] = e.path
            if e.stat.linkname and not e.stat.mode & _MODE_SYMLINK:
                e = ListedEntry(dataclasses.replace(e.stat, linkname=""), e.source, e.data, e.inode)
        elif e.stat.linkname != seen:
            e = ListedEntry(dataclasses.replace(e.stat, linkname=seen), e.source, None, e.inode)
        yield e


def _path_key(p: str) -> list[bytes]:
    # fsutil's walk order: bytewise per path component, parents first.
    return [c.encode("utf-8", "surrogateescape") for c in p.split("/")]


def _select_followed(listing: Listing, followpaths: Sequence[str], timeout: float | None) -> list[ListedEntry] | None:
    """:func:`select` for ``followpaths`` alone, without waiting for the
    whole walk: the walk is in fsutil's order, so once it is past every
    followed path and its subtree, nothing later can match.  ``None`` when
    that shortcut does not hold (a symlink on a followed path, whose target
    must be followed too; a path with pattern characters): then the caller
    waits for the whole listing."""
    literals = [_clean(p) for p in followpaths]
    if not literals or any(not p or _literal_prefix(p) != p for p in literals):
        return None
    keys = [(p, _path_key(p)) for p in literals]
    seen: list[ListedEntry] = []
    i = 0
    while True:
        batch, done = listing.wait_from(i, timeout)
        if done:
            break
        i += len(batch)
        for e in batch:
            path = e.path
            if e.stat.mode & _MODE_SYMLINK and any(p == path or p.startswith(path + "/") for p, _ in keys):
                return None
            seen.append(e)
            if all(not (path == p or path.startswith(p + "/")) and _path_key(path) > k for p, k in keys):
                return select(Listing(listing.name, seen, listing.root), None, followpaths)
    return select(Listing(listing.name, seen, listing.root), None, followpaths)


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
    #: Seconds from the call's start until the listing was ready (the walk,
    #: when it had not finished before the daemon asked), until the listing's
    #: end (the empty STAT) was handed to the connection, and until the
    #: first REQ arrived (``None``: no file was requested).
    listing_ready: float = 0.0
    listing_sent: float = 0.0
    first_request: float | None = None
    #: Where the listing came from: ``"walk"`` or ``"cache"`` (the previous
    #: build's listing, proved current by ``lstat``: see listcache).
    listing_from: str = "walk"


#: Keep at most this many requested paths per call in :class:`DirStats`.
MAX_REQUESTED_PATHS = 1000

_FLUSH = 256 * 1024


class _Later:
    """A listing source still to come (:meth:`FileSyncService.defer`)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.error: str | None = None


class FileSyncService:
    """Serves ``dockerfile`` and ``context`` listings to DiffCopy calls.

    ``listings`` maps a ``dir-name`` to a :class:`Listing`, or to a function
    that returns its entries (an iterable in walk order, e.g.
    :func:`iter_context_listing`): that one runs once, in a thread of its
    own from :meth:`prepare` or the first call on, and calls stream the
    entries as it yields them.  ``stats`` collects one :class:`DirStats` per
    call; ``errors`` what ctxpack refused to send (a file that changed).
    """

    def __init__(self, listings: dict[str, object], *, recv_timeout: float = 600.0,
                 roots: dict[str, str] | None = None):
        self._sources = dict(listings)
        self._roots = dict(roots or {})
        self._made: dict[str, Listing] = {}
        self._lock = threading.Lock()
        self.stats: list[DirStats] = []
        self.errors: list[str] = []
        #: Files sent as they were when read, not as listed (each named once).
        self.warnings: list[str] = []
        self._on_warning: Callable[[str], None] | None = None
        self.recv_timeout = recv_timeout
        #: When each walk ran: ``name -> (start, end)``, monotonic (end 0.0 while it runs).
        self.made_at: dict[str, tuple[float, float]] = {}
        self._uploaded = False
        self._when_uploaded: list[Callable[[], None]] = []

    def when_uploaded(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once the daemon has the context: when the first
        ``context`` call that asked for more than the ignore file has ended
        (at once if that happened already).  Work that can wait (the
        snapshot's fingerprint) starts then, not while the upload needs the
        two cores and the GIL."""
        with self._lock:
            if not self._uploaded:
                self._when_uploaded.append(fn)
                return
        fn()

    def _context_uploaded(self) -> None:
        with self._lock:
            self._uploaded = True
            fns, self._when_uploaded = self._when_uploaded, []
        for fn in fns:
            fn()

    def on_warning(self, fn: Callable[[str], None] | None) -> None:
        """Call ``fn`` with each warning: the ones given so far at once,
        later ones as they happen (from the calls' threads)."""
        with self._lock:
            self._on_warning = fn
            past = list(self.warnings)
        if fn is not None:
            for w in past:
                fn(w)

    def _warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(message)
            fn = self._on_warning
        if fn is not None:
            fn(message)

    def totals(self, name: str) -> tuple[int, int] | None:
        """(files, bytes of content) of the listing ``name`` once its walk
        has ended without error (hard links counted once); ``None`` before."""
        with self._lock:
            made = self._made.get(name)
        if made is None or not made.complete or made.error is not None:
            return None
        files = size = 0
        for e in made.entries:
            if _can_request(e.stat.mode) and not (e.stat.linkname and e.inode is not None):
                files += 1
                size += e.stat.size
        return files, size

    def made(self, name: str) -> Listing | None:
        """The listing ``name`` if it was asked for (complete or not)."""
        with self._lock:
            return self._made.get(name)

    def defer(self, name: str) -> None:
        """The source of ``name`` comes later (:meth:`provide` or
        :meth:`refuse`); calls for it wait until then."""
        with self._lock:
            self._sources[name] = _Later()

    def provide(self, name: str, src: object) -> None:
        """The source of ``name`` (as in ``listings``), for calls waiting for
        it and later ones; its walk starts now."""
        with self._lock:
            later = self._sources.get(name)
            self._sources[name] = src
        if isinstance(later, _Later):
            later.ready.set()
        self.prepare(name)

    def refuse(self, name: str, message: str) -> None:
        """No source of ``name`` will come: calls waiting for it, and later
        ones, fail with ``message``."""
        with self._lock:
            later = self._sources.get(name)
            if not isinstance(later, _Later):
                return
            later.error = message
        later.ready.set()

    def prepare(self, name: str) -> None:
        """Start the walk for ``name`` now (in its thread), e.g. while the session starts."""
        with self._lock:
            if isinstance(self._sources.get(name), _Later):
                return  # the walk starts when the source comes
        try:
            self.listing(name)
        except RpcError:
            pass  # reported when the daemon asks for it

    def listing(self, name: str) -> Listing:
        """The listing ``name``: complete, or growing while its walk runs
        (a source still to come is waited for, up to ``recv_timeout``)."""
        with self._lock:
            later = self._sources.get(name)
        if isinstance(later, _Later):
            if not later.ready.wait(self.recv_timeout):
                raise RpcError(Status.DEADLINE_EXCEEDED, f"ctxpack did not decide the {name!r} directory "
                                                         f"within {self.recv_timeout:.0f}s")
            if later.error is not None:
                raise RpcError(Status.UNKNOWN, later.error)
        with self._lock:
            made = self._made.get(name)
            if made is not None:
                return made
            src = self._sources.get(name)
            if src is None:
                raise RpcError(Status.NOT_FOUND, f"no access allowed to dir {name!r}")
            if isinstance(src, Listing):
                made = src
            else:
                made = Listing(name, root=self._roots.get(name, ""), complete=False)
                self.made_at[name] = (time.monotonic(), 0.0)
                threading.Thread(target=self._walk, args=(name, src, made), name=f"ctxpack-session-walk-{name}",
                                 daemon=True).start()
            self._made[name] = made
            return made

    def _walk(self, name: str, src: object, into: Listing) -> None:
        error: BaseException | None = None
        try:
            for n, e in enumerate(src(), 1):  # type: ignore[operator]
                into.add(e)
                if n % _BATCH == 0:
                    into.notify()
        except Exception as err:  # noqa: BLE001 - raised to the calls that read this listing
            error = err
        into.finish(error)
        self.made_at[name] = (self.made_at[name][0], time.monotonic())

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
            self._diff_copy(call, name, values, stats, t0)
        finally:
            stats.seconds = time.monotonic() - t0
            stats.listing_from = str(getattr(self._sources.get(name), "origin", "walk"))
            start, end = self.made_at.get(name, (0.0, 0.0))
            stats.listing_ready = max(0.0, (end or time.monotonic()) - t0) if start else 0.0
            if name == "context" and [_clean(p) for p in values("followpaths")] != [".dockerignore"]:
                self._context_uploaded()

    def _fail(self, call: Call, message: str) -> RpcError:
        """Tell the receiver (an ERR packet: the daemon fails the build with
        it) and end the call."""
        self.errors.append(message)
        call.send(wire.encode_packet(wire.Packet(wire.PACKET_ERR, data=message.encode("utf-8", "replace"))))
        return RpcError(Status.UNKNOWN, message)

    def _batches(self, listing: Listing, includes: list[str], follow: list[str],
                 exclude: list[str] | None) -> Iterator[list[ListedEntry]]:
        """The entries to send, in batches as they become known."""
        if includes or follow:
            chosen = _select_followed(listing, follow, self.recv_timeout) if follow and not includes else None
            if chosen is None:
                listing.wait_complete(self.recv_timeout)
                chosen = select(listing, includes, follow)
            batches: Iterator[list[ListedEntry]] = iter([chosen])
        else:
            batches = self._stream(listing)
        excl = _include_matcher(exclude) if exclude else None
        first: dict[tuple[int, int], str] = {}
        for batch in batches:
            if excl is not None:
                batch = [e for e in batch if not excl.matches_or_parent_matches(e.path)[0]]
            yield list(_relinked(batch, first)) if (excl is not None or not (includes or follow)) else batch

    def _stream(self, listing: Listing) -> Iterator[list[ListedEntry]]:
        # An empty batch now and then while the walk is slow: the caller
        # answers REQs meanwhile.
        i = 0
        stalled = time.monotonic()
        while True:
            try:
                batch, done = listing.wait_from(i, _POLL)
            except TimeoutError:
                if time.monotonic() - stalled > self.recv_timeout:
                    raise TimeoutError(f"the walk of {listing.root or listing.name} made no progress "
                                       f"for {self.recv_timeout:.0f}s") from None
                yield []
                continue
            if done:
                return
            stalled = time.monotonic()
            i += len(batch)
            yield batch

    def _diff_copy(self, call: Call, name: str, values: Callable[[str], list[str]], stats: DirStats,
                   t0: float) -> None:
        md = call.metadata
        listing = self.listing(name)
        # exclude-patterns: ctxpack's rules already decided (see the module docstring).
        exclude = values("exclude-patterns") if md.get("override-excludes", [""])[0] == "true" else None
        files: dict[int, ListedEntry] = {}
        out = _Out(call, stats)
        acct = threading.Lock()  # the REQ counters in stats: this thread and the I/O thread's fast path
        fast = _FastRequests(call, files, stats, acct, t0)
        call.set_intercept(fast)
        try:
            self._serve(call, listing, values, exclude, files, out, stats, acct, fast, t0)
        finally:
            call.set_intercept(None)  # no fast answer runs after this

    def _serve(self, call: Call, listing: Listing, values: Callable[[str], list[str]], exclude: list[str] | None,
               files: dict[int, ListedEntry], out: _Out, stats: DirStats, acct: threading.Lock, fast: _FastRequests,
               t0: float) -> None:
        n = 0
        counted = fast.counted
        includes, follow = values("include-patterns"), values("followpaths")
        try:
            for batch in self._batches(listing, includes, follow, exclude):
                for e in batch:
                    if n - fast.high > AHEAD and fast.run >= _STEADY:
                        # The receiver asks for files as it reaches their STATs:
                        # keep the listing at most AHEAD entries before it, so that
                        # the DATA it asks for is not queued behind the rest of the
                        # listing (it reads one stream in order).
                        if self._hold(call, listing, fast, n, files, out, stats, acct, t0):
                            stats.entries = n
                            return
                    framed_msg = e.framed or framed_stat(e)
                    out.buf += framed_msg
                    out.payload += len(framed_msg) - 5
                    stats.stat_bytes += len(framed_msg) - 5
                    if _can_request(e.stat.mode) and not (e.stat.linkname and e.inode is not None):
                        files[n] = e
                    n += 1
                    if len(out.buf) >= _FLUSH:
                        out.flush()
                # While the walk runs, answer what the receiver asked for so far
                # (it asks as soon as it has a STAT it lacks), as fsutil's sender does.
                while (msg := call.recv_nowait()) is not Call.EMPTY:
                    if msg is None or self._packet(call, msg, files, out, stats, acct, counted, t0):
                        stats.entries = n
                        return  # the receiver ended early (FIN, or closed its side)
                if not listing.complete and out.buf:
                    out.flush()
        except (RpcError, h2.exceptions.ProtocolError):
            raise
        except Exception as err:  # noqa: BLE001 - a walk error: the daemon shows it as the build error
            out.flush()
            raise self._fail(call, str(err)) from None
        stats.entries = n
        end = wire.encode_packet(wire.Packet(wire.PACKET_STAT))
        out.buf += len(end).to_bytes(5, "big") + end
        out.payload += len(end)
        stats.stat_bytes += len(end)
        out.flush()
        stats.listing_sent = time.monotonic() - t0
        while True:
            msg = call.recv_nowait() if out.buf else call.recv(self.recv_timeout)
            if msg is Call.EMPTY:
                out.flush()
                continue
            if msg is None:
                break  # the receiver ended its side without FIN
            if self._packet(call, msg, files, out, stats, acct, counted, t0):
                return
        out.flush()

    def _hold(self, call: Call, listing: Listing, fast: _FastRequests, n: int, files: dict[int, ListedEntry],
              out: _Out, stats: DirStats, acct: threading.Lock, t0: float) -> bool:
        """Wait until the receiver has asked for an id within AHEAD/2 of
        ``n``, or has asked for nothing for :data:`_QUIET` seconds (what
        comes next may need no data: directories, unchanged files), answering
        what is left to this thread meanwhile; True after the receiver's FIN."""
        out.flush()
        target = n - AHEAD // 2
        while fast.high < target and time.monotonic() - fast.last < _QUIET:
            fast.wake_at = target
            call.wait(lambda: fast.high >= target, _QUIET)
            fast.wake_at = None
            while (msg := call.recv_nowait()) is not Call.EMPTY:
                if msg is None or self._packet(call, msg, files, out, stats, acct, fast.counted, t0):
                    return True
            out.flush()
        return False

    def _packet(self, call: Call, msg: object, files: dict[int, ListedEntry], out: _Out, stats: DirStats,
                acct: threading.Lock, counted: set[int], t0: float) -> bool:
        """Handle one packet from the receiver; True after its FIN."""
        assert isinstance(msg, bytes)
        p = wire.decode_packet(msg)
        if p.type == wire.PACKET_REQ:
            e = files.pop(p.id, None)
            if e is None:
                raise RpcError(Status.INVALID_ARGUMENT, f"invalid file id {p.id}")
            with acct:
                if p.id in counted:
                    counted.discard(p.id)
                else:
                    _count_request(stats, e, t0)
            packet_bytes = data_bytes = 0
            try:
                for chunk in _chunks(e, self._warn):
                    body = wire.encode_data_packet(p.id, chunk)
                    out.buf += len(body).to_bytes(5, "big")
                    out.buf += body
                    out.payload += len(body)
                    packet_bytes += len(body)
                    data_bytes += len(chunk)
                    if len(out.buf) >= _FLUSH:
                        out.flush()
            except _ChangedFile as err:
                out.flush()
                raise self._fail(call, str(err)) from None
            finally:
                with acct:
                    stats.packet_bytes += packet_bytes
                    stats.data_bytes += data_bytes
            body = wire.encode_data_packet(p.id, b"")
            out.buf += len(body).to_bytes(5, "big") + body
            out.payload += len(body)
            with acct:
                stats.packet_bytes += len(body)
            return False
        if p.type == wire.PACKET_FIN:
            body = wire.encode_packet(wire.Packet(wire.PACKET_FIN))
            out.buf += len(body).to_bytes(5, "big") + body
            out.payload += len(body)
            with acct:
                stats.packet_bytes += len(body)
            out.flush()
            return True
        if p.type == wire.PACKET_ERR:
            raise RpcError(Status.UNKNOWN, "error from receiver: " + p.data.decode("utf-8", "replace"))
        return False


def _count_request(stats: DirStats, e: ListedEntry, t0: float) -> None:
    if not stats.requests:
        stats.first_request = time.monotonic() - t0
    stats.requests += 1
    if len(stats.requested_paths) < MAX_REQUESTED_PATHS:
        stats.requested_paths.append(e.path)


#: The listing runs at most this many entries ahead of the receiver's
#: latest REQ while REQs come steadily: _STEADY of them in a row, without a
#: pause of _QUIET seconds (a first build asks for everything; a rebuild's
#: few REQs never hold the listing).
AHEAD = 2048
_STEADY = 16
_QUIET = 0.02

#: Files listed at most this big are answered on the I/O thread.
FAST_MAX = 2 * CHUNK_SIZE

_REQ_PREFIX = b"\x08\x01"  # Packet.type = PACKET_REQ, the first field Go writes


class _FastRequests:
    """The REQ of a small file that is as listed, answered on the I/O
    thread as it arrives (:attr:`Call.intercept`): its DATA and empty DATA
    are framed in one piece and queued at once, in the order the receiver
    asks, with no hand-off to the handler's thread and back.

    Anything else (a FIN, an unknown id, a big file, a file that changed
    since the listing or could not be opened) is left to the handler's
    thread, which answers it as before: with the consistent read, the
    warning, or the ERR naming the path.  A fast answer is only the read of
    a regular file whose ``fstat`` equals the listing before and after one
    ``pread`` of exactly its size, so what it sends is what the handler
    would have sent."""

    def __init__(self, call: Call, files: dict[int, ListedEntry], stats: DirStats, acct: threading.Lock,
                 t0: float):
        self.call, self.files, self.stats, self.acct, self.t0 = call, files, stats, acct, t0
        #: REQs counted here and left to the handler (which must not count them again).
        self.counted: set[int] = set()
        #: The receiver's progress through the listing: the highest id it
        #: asked for, how many REQs came without a pause of _QUIET seconds,
        #: and when the last one came.
        self.high = -1
        self.run = 0
        self.last = 0.0
        #: Wake the handler once ``high`` reaches this (see ``FileSyncService._hold``).
        self.wake_at: int | None = None

    def __call__(self, msg: bytes) -> bool:
        if not msg.startswith(_REQ_PREFIX) or self.call.finished:
            return False
        ident = _req_id(msg)
        if ident is None:
            return False
        now = time.monotonic()
        if now - self.last > _QUIET:
            self.run = 0  # a pause: the receiver is not (or no longer) asking for everything
        self.run += 1
        self.last = now
        if ident > self.high:
            self.high = ident
            if self.wake_at is not None and ident >= self.wake_at:
                self.wake_at = None
                self.call.wake_handler()
        e = self.files.get(ident)
        if e is None or ident in self.counted:
            return False
        data = e.data if e.data is not None else _read_unchanged(e) if e.source is not None else None
        if data is None or len(data) > FAST_MAX:
            # The handler answers it; counted here, so that the requested
            # paths keep the order the receiver asked in.
            with self.acct:
                _count_request(self.stats, e, self.t0)
                self.counted.add(ident)
            return False
        if self.files.pop(ident, None) is None:
            return False
        end = wire.encode_data_packet(ident, b"")  # b"\x08\x02" + the id field: every DATA packet's head
        parts: list[bytes] = []
        packet_bytes = len(end)
        for i in range(0, len(data), CHUNK_SIZE):
            chunk = data[i:i + CHUNK_SIZE]
            field = b"\x22" + wire.varint(len(chunk))
            n = len(end) + len(field) + len(chunk)
            parts += (n.to_bytes(5, "big"), end, field, chunk)
            packet_bytes += n
        parts += (len(end).to_bytes(5, "big"), end)
        with self.acct:
            _count_request(self.stats, e, self.t0)
            self.stats.packet_bytes += packet_bytes
            self.stats.data_bytes += len(data)
        self.call.queue_raw(b"".join(parts), packet_bytes)
        return True


def _req_id(msg: bytes) -> int | None:
    """The id of a REQ packet as Go writes it (type, then ID; ID 0
    omitted), without building a Packet; ``None`` for anything else."""
    if msg == _REQ_PREFIX:
        return 0
    if len(msg) < 4 or msg[2] != 0x18 or not msg.startswith(_REQ_PREFIX):
        return None
    ident = shift = 0
    for i in range(3, len(msg)):
        b = msg[i]
        ident |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return ident if i == len(msg) - 1 and ident <= 0xFFFFFFFF else None
    return None


def _read_unchanged(e: ListedEntry) -> bytes | None:
    """A small regular file's content when it is exactly as listed
    (``fstat`` before and after the read equal to the listing, ``size``
    bytes read); ``None`` otherwise (the handler's thread then reads it
    its careful way)."""
    listed = e.stat
    if listed.size > FAST_MAX or e.source is None:
        return None
    try:
        fd = os.open(e.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        before = os.fstat(fd)
        if (not st.S_ISREG(before.st_mode) or before.st_size != listed.size
                or before.st_mtime_ns != listed.mod_time):
            return None
        data = os.pread(fd, listed.size + 1, 0) if listed.size else b""
        after = os.fstat(fd)
        if (len(data) != listed.size or after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns
                or after.st_ctime_ns != before.st_ctime_ns):
            return None
        return data
    except OSError:
        return None
    finally:
        os.close(fd)


#: A walk wakes the calls that read its listing every _BATCH entries; they
#: also look every _POLL seconds (so a slow walk's entries go out too).
_BATCH = 256
_POLL = 0.02


class _Out:
    """What a call has framed but not sent yet (``payload``: message bytes
    without the gRPC prefixes)."""

    def __init__(self, call: Call, stats: DirStats):
        self.call = call
        self.buf = bytearray()
        self.payload = 0

    def flush(self) -> None:
        if self.buf:
            self.call.send_raw(self.buf, self.payload)
        self.buf, self.payload = bytearray(), 0


class _ChangedFile(Exception):
    """A requested file cannot be sent as a file: it vanished, or is not a
    regular file any more, or never held still long enough to be read."""


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino)


def _kind(mode: int) -> str:
    return "a directory" if st.S_ISDIR(mode) else "a FIFO" if st.S_ISFIFO(mode) else "not a file"


def _chunks(e: ListedEntry, warn: Callable[[str], None] | None = None) -> Iterable[bytes]:
    """The content of ``e`` as it is when the daemon asks for it, read
    consistently (``fstat`` unchanged across the read, redone up to
    :data:`ctxpack.fs.RETRIES` times, as the tar path reads).

    dockerd's fsutil receiver writes the bytes it gets whatever size the
    STAT said (checked on dockerd 20.10: a file listed at 10 bytes and sent
    with 25, or 3, is in the image with 25, or 3), and the docker CLI's
    sender copies what the file holds when asked.  So a file that changed
    since its STAT (a dev server's log) is sent as it is now, and ``warn``
    names it: never silent.  A file that vanished, or is not a regular file
    any more, raises :class:`_ChangedFile` naming it (fsutil would send a
    vanished file empty: an image with a file the context does not have)."""
    if e.data is not None:
        for i in range(0, len(e.data), CHUNK_SIZE):
            yield e.data[i:i + CHUNK_SIZE]
        return
    if e.source is None:
        return
    listed = e.stat
    what = f"{e.path}: changed during the build's upload"
    try:
        # O_NONBLOCK: a FIFO put in the file's place must not block the open.
        fd = os.open(e.source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _ChangedFile(f"{what} (it was deleted); build again") from None
    except OSError as err:
        if err.errno == 40:  # ELOOP: O_NOFOLLOW met a symlink
            raise _ChangedFile(f"{what} (it was replaced by a symlink); build again") from None
        raise _ChangedFile(f"{e.path}: cannot be read: {err.strerror}") from None
    try:
        before = os.fstat(fd)
        if not st.S_ISREG(before.st_mode):
            raise _ChangedFile(f"{what} (it is {_kind(before.st_mode)} now); build again")
        os.set_blocking(fd, True)
        changed = before.st_size != listed.size or before.st_mtime_ns != listed.mod_time
        data = None
        if before.st_size <= SMALL_FILE:
            try:
                data, after = read_whole(fd, before.st_size, before.st_mtime_ns, before.st_ctime_ns, e.path, e.source)
                changed = changed or after.st_size != listed.size or after.st_mtime_ns != listed.mod_time
            except ChangedDuringReadError as err:
                before = os.fstat(fd)
                if before.st_size <= SMALL_FILE:
                    raise _ChangedFile(f"{what} ({str(err).removeprefix(e.path + ': ')}); build again") from None
                changed = True  # grew big while read: copied below
        if data is not None:
            for i in range(0, len(data), CHUNK_SIZE):
                yield data[i:i + CHUNK_SIZE]
            sent = len(data)
        else:
            # Changed since the listing (it may still be being written): a
            # consistent private copy first, sent from the copy.
            src, size = _consistent_copy(fd, before, what) if changed else (fd, before.st_size)
            try:
                sent = 0
                while sent < size:
                    chunk = os.pread(src, min(CHUNK_SIZE, size - sent), sent)
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
                if src == fd and (sent != size or not _same(os.fstat(fd), before)):
                    # Unchanged from the listing until it was asked for, and
                    # it changed while it went out: what was sent may be torn.
                    raise _ChangedFile(f"{what} (it changed while it was being sent); build again")
            finally:
                if src != fd:
                    os.close(src)
        if changed and warn is not None:
            warn(f"{e.path}: changed after it was listed to the engine (listed {listed.size} bytes, sent {sent} "
                 "as it was when read): the image has it as it was then")
    finally:
        os.close(fd)


def _consistent_copy(fd: int, before: os.stat_result, what: str) -> tuple[int, int]:
    """A private copy of the open file ``fd`` (an unlinked temporary file)
    and its size, taken when ``fstat`` agrees before and after the copy;
    retried against the newer stat up to :data:`ctxpack.fs.RETRIES` times."""
    import tempfile

    for _ in range(RETRIES):
        if not st.S_ISREG(before.st_mode):
            raise _ChangedFile(f"{what} (it is {_kind(before.st_mode)} now); build again")
        out = tempfile.TemporaryFile()
        copy = os.dup(out.fileno())
        out.close()
        try:
            copied = _copy_range(fd, copy, before.st_size)
            after = os.fstat(fd)
        except BaseException:
            os.close(copy)
            raise
        if copied == before.st_size and _same(after, before):
            return copy, copied
        os.close(copy)
        before = after
    raise _ChangedFile(f"{what} (it kept changing while it was read, {RETRIES} tries); build again")


def _copy_range(src: int, dst: int, size: int) -> int:
    # In the kernel where it can (copy_file_range), so a hot file is copied
    # in a moment between two of its writer's writes.
    done = 0
    while done < size:
        try:
            n = os.copy_file_range(src, dst, size - done, done, done)
        except OSError:
            n = -1
        if n < 0:
            chunk = os.pread(src, min(1 << 20, size - done), done)
            n = os.pwrite(dst, chunk, done) if chunk else 0
        if n == 0:
            break  # it shrank
        done += n
    return done
