"""The session's context listing, kept from one build to the next.

A rebuild's upload is one STAT per context entry (16,812 for the benchmark's
100k-file tree) and the daemon asks only for what changed; what made it slow
was making the listing: walking, matching and statting every entry, reading
its xattrs and encoding its packet (~0.45 s of CPU for that tree) while the
daemon waited.  This module keeps the listing of the last build (each
entry's STAT, already framed as the gRPC message it is sent as, and its
``lstat`` key) in the cache directory, and the next build of the same
context, with the same rules, serves it after proving with ``lstat`` alone
that a walk would list exactly the same entries.

Why ``lstat`` proves it (the same argument as :mod:`ctxpack.index.state`'s):
creating, removing or renaming an entry changes its directory's mtime and
ctime, and changing a file's content, mode, owner, xattrs or links changes
its ctime.  So when the context root, every excluded directory the walker
reads for exceptions (:func:`ctxpack.walker.excluded_dirs_read`) and every
listed directory have the key they had, each directory the walk reads has
the same names, every decision (a function of the path and the rules) is the
same, and the walk lists the same paths in the same order.  An entry that is
not a directory and whose key changed keeps its place; its STAT is made
again from a fresh ``lstat`` (the changed file of a rebuild), unless its
type changed, it is (or was) hard-linked, or this process cannot read it
(non-root): then the walk runs, as it does for any directory whose key
changed.  A directory whose times fall within
:func:`ctxpack.index.state.racy_window` of the walk's start could change
again within one clock tick without its times showing it: such a listing is
not stored.

Stored only when the walk ended cleanly and the context can be proved this
way: not for ``--minimal`` selections or wildcard exceptions (no finite list
of excluded directories read).  The key of the stored file covers the root,
the rules, the Dockerfile's place and this process's credentials (the walker
checks readability as non-root).  ``CTXPACK_SESSION_CACHE=0`` turns it off.
The file is :mod:`marshal` data (as the index's parts are) behind a header
with a BLAKE2 digest of it; anything that does not check out is a miss.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat as st
import threading
import time
from array import array
from collections.abc import Iterator

from ...context import BuildContext, Dialect
from ...errors import ContextError
from ...index.paths import cache_dir
from ...index.state import KEY, current_keys, racy_window
from ...walker import EntryKind, excluded_dirs_read, kind_of
from . import wire
from .filesync import ListedEntry, framed_stat, iter_context_listing, listed_entry

__all__ = ["ContextListing", "enabled", "forget", "listings_dir", "FORMAT", "KEEP", "MAX_KEPT"]

FORMAT = b"ctxpack-session-listing-1\n"
#: Listing files kept in the cache directory (the least recently used go).
KEEP = 32
_DIR = "session-listings"
_SUFFIX = ".listing"
_DIGEST = 32
#: Listings of more entries are not kept: the kept records and frames would
#: about double what the session holds per entry (~0.5 KB) for the upload.
MAX_KEPT = 300_000
#: Kept entries checked (``lstat``) per chunk before the chunk is handed out.
CHUNK = 256


def enabled() -> bool:
    """Whether listings are kept (``CTXPACK_SESSION_CACHE=0``: never)."""
    return os.environ.get("CTXPACK_SESSION_CACHE", "1") not in ("0", "no", "false")


def listings_dir(directory: str | None = None) -> str:
    """Where listings are kept: ``directory``, or ``session-listings`` in the
    index's cache directory."""
    return directory or os.path.join(cache_dir(), _DIR)


def _root_tag(root: str) -> str:
    # The first part of a kept listing's name: `ctxpack cache clear DIR`
    # finds the listings of DIR by it (the rest of the name hashes the rules).
    return hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def forget(root: str | None, directory: str | None = None) -> int:
    """Remove the kept listings of the context ``root`` (a resolved path, as
    :attr:`BuildContext.root <ctxpack.context.BuildContext.root>` is), or
    every kept listing when ``root`` is ``None`` (``cache clear --all``);
    the number removed.  The next session build of that context walks it."""
    where = listings_dir(directory)
    prefix = None if root is None else _root_tag(root) + "-"
    try:
        names = os.listdir(where)
    except OSError:
        return 0
    gone = 0
    for n in names:
        if n.endswith(_SUFFIX) and (prefix is None or n.startswith(prefix)):
            try:
                os.unlink(os.path.join(where, n))
                gone += 1
            except OSError:
                pass
    return gone


def _config(ctx: BuildContext) -> str:
    """What besides the files decides the listing."""
    parts = [
        FORMAT.decode(), ctx.root, ctx.dialect.value, ctx.dockerfile or "", ctx.dockerfile_path or "",
        ctx.ignore_source or "", repr([(r.pattern, r.source) for r in ctx.rules]), repr(list(ctx.appended)),
        repr(sorted(ctx.omitted)), repr((os.geteuid(), os.getegid(), sorted(os.getgroups()))),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


# An entry as stored: (path, mode, size, mod_time, linkname, devmajor,
# devminor, xattrs or None, has a source, data, inode or None).
_Record = tuple[str, int, int, int, str, int, int, "dict[str, bytes] | None", bool, "bytes | None",
                "tuple[int, int] | None"]


class ContextListing:
    """The ``context`` listing source of a session: call it for the entries
    in walk order, from the kept listing (checked chunk by chunk as they are
    handed out, so that the first STATs go out before the last are checked)
    or from the walk, recording what :meth:`save` stores.  ``directory``:
    where listings are kept (default: the index's cache directory).
    :attr:`outcome` says what happened (``"hit"``, ``"hit (N changed)"``,
    ``"miss: <why>"``, ``"off: <why>"``), :attr:`origin` where the entries
    came from (``"cache"``, ``"walk"``, ``"cache, then walk"``)."""

    def __init__(self, ctx: BuildContext, directory: str | None = None):
        self.ctx = ctx
        self.outcome = "off: not asked yet"
        self.origin = "walk"
        self._keys = array("q")
        self._extra: list[str] = []
        self._extra_keys = array("q")
        self._started_ns = 0
        self._dirty = False  # what is stored differs from what was served
        self._saver: threading.Thread | None = None
        self._config = ""
        self._kept_data: tuple[list[str], list[_Record], list[bytes], dict[int, ListedEntry]] | None = None
        extra = excluded_dirs_read(ctx) if ctx.dialect is Dialect.BUILDKIT else None
        if extra is None or not enabled():
            self.path: str | None = None
            self.outcome = "off: " + ("CTXPACK_SESSION_CACHE=0" if extra is not None else
                                      "the rules give no finite list of directories to check")
            return
        self._extra = [""] + extra
        self._config = _config(ctx)
        name = _root_tag(ctx.root) + "-" + hashlib.sha256(self._config.encode()).hexdigest()[:32] + _SUFFIX
        self.path = os.path.join(listings_dir(directory), name)

    def __call__(self) -> Iterator[ListedEntry]:
        data = self._read() if self.path is not None else None
        if data is not None:
            return self._kept(data)
        return self._walk(0)

    # -- the walk ------------------------------------------------------------

    def _walk(self, skip: int, sent: list[str] | None = None) -> Iterator[ListedEntry]:
        """The walk's entries from the ``skip``-th on (the first ``skip``,
        whose paths are ``sent``, were served from the kept listing)."""
        self._started_ns = time.time_ns()
        self._dirty = True
        if not skip:
            self.origin = "walk"
            # Keys of the directories checked besides the entries, taken before
            # the walk lists them: a change after this shows as a changed key.
            self._extra_keys = current_keys(self.ctx.root, self._extra) if self.path is not None else array("q")
        kept = self._keys[:KEY * skip]
        walked = array("q")
        for i, e in enumerate(iter_context_listing(self.ctx, walked)):
            if i < skip:
                assert sent is not None
                if e.path != sent[i]:
                    self._keys = array("q")  # not kept
                    raise ContextError(f"{e.path}: the context changed while it was listed to the engine; build again",
                                       os.path.join(self.ctx.root, e.path))
                continue
            yield e
        # What was served from the kept listing was proved with its keys.
        self._keys = kept + walked[KEY * skip:]

    # -- the kept listing --------------------------------------------------------

    def _read(self) -> tuple[list[str], bytes, list[str], bytes, list[_Record], list[bytes]] | None:
        assert self.path is not None
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            self.outcome = "miss: no listing kept"
            return None
        except OSError as e:
            self.outcome = f"miss: cannot read {self.path}: {e.strerror}"
            return None
        head = len(FORMAT)
        body = raw[head + _DIGEST:]
        if not raw.startswith(FORMAT) or hashlib.blake2b(body, digest_size=_DIGEST).digest() != raw[head:head + _DIGEST]:
            self.outcome = "miss: the kept listing is damaged or of another format"
            return None
        try:
            data = marshal.loads(body)
        except (ValueError, EOFError, TypeError):
            data = None
        if not isinstance(data, tuple) or len(data) != 7:
            self.outcome = "miss: the kept listing is damaged"
            return None
        config, extra, extra_keys, paths, keys, recs, framed = data
        if config != self._config or extra != self._extra:
            self.outcome = "miss: the kept listing is for other rules"
            return None
        if len(paths) > MAX_KEPT:
            self.outcome = f"miss: the kept listing has more than {MAX_KEPT} entries"
            return None
        if not len(paths) == len(recs) == len(framed) or len(keys) != 8 * KEY * len(paths):
            self.outcome = "miss: the kept listing is damaged"
            return None
        if current_keys(self.ctx.root, extra).tobytes() != extra_keys:
            self.outcome = "miss: the context root or a directory read for exceptions changed"
            return None
        return extra, extra_keys, paths, keys, recs, framed

    def _kept(self, data: tuple[list[str], bytes, list[str], bytes, list[_Record], list[bytes]]
              ) -> Iterator[ListedEntry]:
        """The kept entries, each chunk's keys checked before it is handed out;
        from the first entry that only the walk can decide on, the walk's."""
        _, extra_keys, paths, keys, recs, framed = data
        self.origin = "cache"
        self._extra_keys = array("q")
        self._extra_keys.frombytes(extra_keys)
        old = array("q")
        old.frombytes(keys)
        self._keys = array("q")
        root = self.ctx.root
        prefix = root.rstrip("/") + "/"
        stat, entry = wire.Stat, ListedEntry
        changed = 0
        redone: dict[int, ListedEntry] = {}
        n = len(paths)
        for start in range(0, n, CHUNK):
            end = min(n, start + CHUNK)
            now = current_keys(root, paths[start:end])
            redo: dict[int, ListedEntry] = {}
            cut = end  # from here on only the walk can decide
            if now != old[KEY * start:KEY * end]:
                for i in range(start, end):
                    j = KEY * (i - start)
                    if now[j:j + KEY] == old[KEY * i:KEY * i + KEY]:
                        continue
                    again = self._again(recs[i], prefix)
                    if again is None:
                        cut = i  # a directory changed, or an entry only the walk makes
                        break
                    e, s = again
                    redo[i] = redone[i] = e
                    now[j:j + KEY] = array("q", (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode))
                changed += len(redo)
            self._keys.extend(now[:KEY * (cut - start)])
            for i in range(start, cut):
                if i in redo:
                    yield redo[i]
                    continue
                path, mode, size, mtime, link, major, minor, xattrs, source, body, inode = recs[i]
                yield entry(stat(path, mode, 0, 0, size, mtime, link, major, minor, xattrs or {}),
                            prefix + path if source else None, body, inode, framed[i])
            # Let the connection's I/O thread have the GIL now if it waits
            # for it (a window update to answer): the daemon's intake of the
            # STATs stalls whenever its 64 KiB window is not refilled within
            # a few ms, and the interpreter would switch only every 5 ms.
            time.sleep(0)
            if cut < end:
                # The walk serves the rest, from entry ``cut`` on.
                self.origin = "cache, then walk" if cut else "walk"
                yield from self._walk(cut, paths)
                return
        self._dirty = bool(changed)
        # What save() writes back: the kept records, the changed ones replaced.
        self._kept_data = (paths, recs, framed, redone)
        self.outcome = "hit" + (f" ({changed} changed)" if changed else "")

    def _again(self, rec: _Record, prefix: str) -> tuple[ListedEntry, os.stat_result] | None:
        """A kept entry whose key changed, made again from a fresh ``lstat``
        (its directory did not change), or ``None`` (:attr:`outcome` says
        why) when the walk must decide."""
        rel, mode, source, data, inode = rec[0], rec[1], rec[8], rec[9], rec[10]
        absp = prefix + rel
        why = "changed type"
        try:
            s = os.lstat(absp)
        except OSError:
            s = None
            why = "vanished"
        if s is not None:
            kind = EntryKind.SOCKET if st.S_ISSOCK(s.st_mode) else kind_of(s.st_mode)
            before = _kind_of_listed(mode, source, data)
            if before == EntryKind.DIR:
                why = "(a directory) changed"
            elif kind is None or kind == EntryKind.DIR or kind != before:
                pass
            elif inode is not None or (kind == EntryKind.FILE and s.st_nlink > 1):
                why = "is hard-linked"
            elif kind == EntryKind.FILE and os.geteuid() != 0 and not os.access(absp, os.R_OK):
                why = "is not readable"
            else:
                try:
                    link = os.readlink(absp) if kind == EntryKind.SYMLINK else None
                except OSError:
                    why = "vanished"
                else:
                    return listed_entry(rel, absp, s, kind, link), s
        self.outcome = f"miss: {rel} {why}"
        return None

    # -- saving ----------------------------------------------------------------

    def save(self, entries: list[ListedEntry]) -> bool:
        """Store the listing just served (``entries``: all of it, in order);
        whether it was stored.  Not when it is what is stored already, when
        the keys do not cover every entry, or when a directory is too recent
        to vouch for its names."""
        if self.path is None or not self._dirty:
            return False
        if len(entries) > MAX_KEPT:
            self.outcome += f"; not kept: more than {MAX_KEPT} entries"
            self._remove()
            return False
        keys = self._keys
        if len(keys) != KEY * len(entries) or len(self._extra_keys) != KEY * len(self._extra):
            return False
        if self._racy(entries):
            self.outcome += "; not kept: a directory changed just before the walk"
            self._remove()
            return False
        kept = self._kept_data
        if kept is not None and len(kept[0]) == len(entries):
            # All from the kept listing but a few entries made again: patch it.
            paths, recs, framed, redone = kept
            for i, e in redone.items():
                recs[i], framed[i] = _record(e), framed_stat(e)
        else:
            paths = [e.path for e in entries]
            framed = [e.framed or framed_stat(e) for e in entries]
            recs = [_record(e) for e in entries]
        body = marshal.dumps((self._config, self._extra, self._extra_keys.tobytes(), paths, keys.tobytes(), recs,
                              framed))
        return self._write(FORMAT + hashlib.blake2b(body, digest_size=_DIGEST).digest() + body)

    def save_beside(self, entries: list[ListedEntry]) -> None:
        """:meth:`save` in a thread of its own (:meth:`join` waits for it)."""
        if self.path is None or not self._dirty:
            return
        t = threading.Thread(target=self._save_quietly, args=(entries,), name="ctxpack-session-keep-listing",
                             daemon=True)
        t.start()
        self._saver = t

    def _save_quietly(self, entries: list[ListedEntry]) -> None:
        try:
            os.nice(5)  # this thread only (Linux): it runs after the upload, beside the build
        except OSError:
            pass
        try:
            self.save(entries)
        except Exception as e:  # noqa: BLE001 - a cache: the build does not depend on it
            self.outcome += f"; not kept: {type(e).__name__}: {e}"

    def join(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for :meth:`save_beside`."""
        t = self._saver
        if t is not None:
            t.join(timeout)

    def _racy(self, entries: list[ListedEntry]) -> bool:
        keys, started = self._keys, self._started_ns
        if not started:
            return False  # all from the kept listing: its directories are as they were when it was vouched for
        checks = [self._extra_keys[KEY * i + 1:KEY * i + 3] for i in range(len(self._extra))]
        checks += [keys[KEY * i + 1:KEY * i + 3] for i, e in enumerate(entries) if e.is_dir]
        for mtime, ctime in checks:
            if mtime >= 0 and max(mtime, ctime) >= started - racy_window(mtime, ctime):
                return True
        return False

    def _write(self, blob: bytes) -> bool:
        assert self.path is not None
        directory = os.path.dirname(self.path)
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            self.outcome += f"; not kept: {e.strerror}"
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
        self._prune(directory)
        return True

    def _remove(self) -> None:
        assert self.path is not None
        try:
            os.unlink(self.path)
        except OSError:
            pass

    @staticmethod
    def _prune(directory: str) -> None:
        try:
            names = [n for n in os.listdir(directory) if n.endswith(_SUFFIX)]
            if len(names) <= KEEP:
                return
            aged = sorted(names, key=lambda n: os.stat(os.path.join(directory, n)).st_mtime_ns)
        except OSError:
            return
        for n in aged[:len(aged) - KEEP]:
            try:
                os.unlink(os.path.join(directory, n))
            except OSError:
                pass


def _record(e: ListedEntry) -> _Record:
    s = e.stat
    return (s.path, s.mode, s.size, s.mod_time, s.linkname, s.devmajor, s.devminor, s.xattrs or None,
            e.source is not None, e.data, e.inode)


_MODE_DIR, _MODE_SYMLINK, _MODE_NAMED_PIPE = 1 << 31, 1 << 27, 1 << 25
_MODE_DEVICE, _MODE_CHAR_DEVICE = 1 << 26, 1 << 21


def _kind_of_listed(mode: int, source: bool, data: bytes | None) -> str:
    """The walker's kind of a kept entry (a hard link's later name: ``file``
    here; a socket is listed with its type bit cleared, as data)."""
    if mode & _MODE_DIR:
        return EntryKind.DIR
    if mode & _MODE_SYMLINK:
        return EntryKind.SYMLINK
    if mode & _MODE_NAMED_PIPE:
        return EntryKind.FIFO
    if mode & _MODE_DEVICE:
        return EntryKind.CHAR if mode & _MODE_CHAR_DEVICE else EntryKind.BLOCK
    if not source and data is not None:
        return EntryKind.SOCKET
    return EntryKind.FILE
