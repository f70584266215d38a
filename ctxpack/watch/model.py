"""The watcher's picture of a context, kept current one changed name at a time.

The walker decides a path from its parent directory's plan (the rules that
can matter there and the per-rule results inherited from above), so a
change at ``dir/name`` is re-decided with the plan stored for ``dir``
alone: nothing else is re-matched.  The model records, for every directory
the walker reads (the *watchable* ones — sent directories, excluded
directories an exception can reach, and with ``--minimal`` directories a
source may lie under), its plan and its watch; and for every name listed in
them what the walker makes of it: an entry, an excluded entry, or nothing.

Upload order is not stored: a depth-first pre-order walk with byte-wise
sorted siblings is exactly the order of the paths' bytes with ``/`` read as
the lowest byte, so :meth:`ContextModel.walk_all` sorts.  BuildKit's
excluded-but-descended directories are sent when something below them is
(a count per such directory), and hard links are assigned in that order,
as the walker does.
"""

from __future__ import annotations

import os
import stat as st
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ctxpack.context import BuildContext, Dialect
from ctxpack.errors import WatchLimitError
from ctxpack.ignore.matcher import DirPlan
from ctxpack.walker import _KINDS, Entry, EntryKind

__all__ = ["ContextModel", "WatchedDir", "order_key"]

SENT, EXCLUDED_DESCENDED, SELECTION_DESCENDED = 0, 1, 2


def order_key(path: str) -> bytes:
    """Sort key giving the walker's upload order (see the module docstring)."""
    return path.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


@dataclass(slots=True)
class WatchedDir:
    """A directory the walker reads: its plan for its children and its watch.

    ``depth`` is the depth of its children (the walker's frame depth);
    ``status`` says why it is read (sent, excluded but reachable by an
    exception, or read for ``--minimal``); ``ino`` tells a directory
    replaced by another apart.
    """

    rel: str
    plan: DirPlan
    depth: int
    status: int
    ino: int
    mtime: int = 0  # st_mtime_ns as last seen (clients compare it with the disk)
    handle: int | None = None


Watch = Callable[[str], int]
Unwatch = Callable[[int], None]


class ContextModel:
    """Entries, excluded entries and watchable directories of one context.

    ``watch(abspath)`` places a watch and returns its handle (it may raise
    :class:`WatchLimitError`: the model then goes on unwatched and records
    it in ``limit``); ``unwatch(handle)`` removes one.  Every change goes
    through :meth:`refresh` (one name in one directory) or :meth:`scan`.
    """

    def __init__(self, ctx: BuildContext, watch: Watch, unwatch: Unwatch):
        self.ctx = ctx
        self.root = ctx.root
        self._watch_fn = watch
        self._unwatch_fn = unwatch
        m = ctx.matcher
        self._decide = m.decide
        self._plan = m.plan
        self._descent = m.descent(ctx.dialect)
        self._classic = ctx.dialect is Dialect.CLASSIC
        self._selection = ctx.selection
        self._forced = {p[1:] for p in ctx.appended}
        self._check_read = os.geteuid() != 0
        self.dirs: dict[str, WatchedDir] = {}
        self.handles: dict[int, str] = {}
        self.kids: dict[str, set[str]] = {}
        self.entries: dict[str, Entry] = {}
        self.excluded: dict[str, Entry] = {}
        self.held: dict[str, Entry] = {}  # descended-but-excluded dirs the dialect may still send
        self.held_count: dict[str, int] = {}
        self.errors: dict[str, str] = {}  # paths the walker would refuse (unreadable)
        self.limit: WatchLimitError | None = None
        self.version = 0  # bumped on every change; materialised lists are cached per version
        self.touched: set[str] = set()  # paths whose sent entry may have changed since take_touched()
        self._links: set[tuple[int, int]] = set()  # inodes whose link count changed (see fix_links)
        self._cache: dict[bool, tuple[int, list[Entry]]] = {}

    # -- watches ------------------------------------------------------------------
    def _watch(self, d: WatchedDir) -> None:
        if self.limit is not None:
            return
        try:
            h = self._watch_fn(os.path.join(self.root, d.rel) if d.rel else self.root)
        except WatchLimitError as e:
            self.limit = e
            return
        old = self.handles.get(h)
        if old is not None and old != d.rel and old in self.dirs:
            # inotify keeps one watch per inode: the directory we knew at
            # ``old`` was moved here before we saw the move.  Forget it
            # without removing the watch, which now serves ``d``.
            self.dirs[old].handle = None
            self._drop(old)
        self.handles[h] = d.rel
        d.handle = h

    def _unwatch(self, d: WatchedDir) -> None:
        if d.handle is not None:
            self.handles.pop(d.handle, None)
            self._unwatch_fn(d.handle)
            d.handle = None

    def lost(self, handle: int) -> str | None:
        """The kernel dropped a watch: forget it; return its directory."""
        rel = self.handles.pop(handle, None)
        if rel is not None and rel in self.dirs and self.dirs[rel].handle == handle:
            self.dirs[rel].handle = None
        return rel

    # -- scanning -------------------------------------------------------------------
    def scan(self) -> None:
        """Read the whole context (the model must be empty)."""
        s = os.lstat(self.root)
        top = WatchedDir("", self._plan("", 0, 1), 1, SENT, s.st_ino)
        self.dirs[""] = top
        self.kids[""] = set()
        self._scan_dirs([top])

    def _scan_dirs(self, todo: list[WatchedDir]) -> None:
        # Watch first, then list: whatever is created after the listing
        # arrives as an event, whatever before it is in the listing.
        while todo:
            d = todo.pop()
            if self.dirs.get(d.rel) is not d:
                continue  # dropped meanwhile
            self._watch(d)
            absd = os.path.join(self.root, d.rel) if d.rel else self.root
            try:
                d.mtime = os.lstat(absd).st_mtime_ns
                names = os.listdir(absd)
            except FileNotFoundError:
                continue  # gone: its parent's event removes it
            except NotADirectoryError:
                continue
            except OSError as e:
                self.errors[d.rel] = f"cannot read directory '{absd}': {e.strerror}"
                continue
            for name in names:
                sub = self._child(d, name)
                if sub is not None:
                    todo.append(sub)

    def refresh(self, parent: str, name: str) -> list[WatchedDir]:
        """Re-decide ``parent/name``; return new directories still to scan
        (:meth:`scan_new`), so that every removal of a batch happens before
        any new watch is placed."""
        d = self.dirs.get(parent)
        if d is None:
            return []
        sub = self._child(d, name)
        return [sub] if sub is not None else []

    def touch(self, rel: str) -> None:
        """Note a watched directory's current mtime (its listing changed)."""
        d = self.dirs.get(rel)
        if d is not None:
            try:
                d.mtime = os.lstat(os.path.join(self.root, rel) if rel else self.root).st_mtime_ns
            except OSError:
                pass

    def scan_new(self, todo: list[WatchedDir]) -> None:
        """Watch and read directories :meth:`refresh` found."""
        self._scan_dirs(todo)

    def rescan_dir(self, rel: str) -> None:
        """Re-read one directory whose watch was lost (its subtree too)."""
        d = self.dirs.get(rel)
        if d is None:
            return
        if rel == "":
            raise RuntimeError("the root's watch is gone")
        parent, _, name = rel.rpartition("/")
        self._drop(rel)
        self.scan_new(self.refresh(parent, name))

    def _child(self, d: WatchedDir, name: str) -> WatchedDir | None:
        """Decide one listed name as the walker does; update the model.
        Returns a new directory to scan, if any."""
        rel = d.rel + "/" + name if d.rel else name
        absp = os.path.join(self.root, rel)
        self.version += 1
        self.errors.pop(rel, None)
        try:
            sr = os.lstat(absp)
        except FileNotFoundError:
            self._drop(rel)
            return None
        except OSError as e:
            self._drop(rel)
            self.errors[rel] = f"can't stat '{absp}': {e.strerror}"
            return None
        is_dir = st.S_ISDIR(sr.st_mode)
        dec = self._decide(rel, d.plan)
        status = -1  # not a directory the walker reads
        entry: Entry | None = None
        excluded: Entry | None = None
        if dec.excluded:
            if is_dir and self._descent.reads(rel):
                status = EXCLUDED_DESCENDED
            else:
                excluded = Entry(rel, EntryKind.DIR if is_dir else EntryKind.FILE, None, rule=dec.rule, included=False)
        elif self._selection is not None and rel not in self._forced and not self._selection.wants(rel):
            if is_dir and self._selection.may_contain(rel):
                status = SELECTION_DESCENDED
        else:
            kind = _KINDS.get(sr.st_mode & 0o170000)
            if kind is not None:  # sockets are dropped, as go-archive does
                link = None
                if kind == EntryKind.SYMLINK:
                    try:
                        link = os.readlink(absp)
                    except OSError:
                        self._drop(rel)
                        return None
                if self._check_read and kind == EntryKind.FILE and not os.access(absp, os.R_OK):
                    self.errors[rel] = f"no permission to read from '{absp}'"
                entry = Entry(rel, kind, sr, link, dec.rule, True, bool(self._forced) and rel in self._forced)
                if kind != EntryKind.DIR and kind != EntryKind.SYMLINK and sr.st_nlink > 1:
                    self._links.add((sr.st_dev, sr.st_ino))
                if kind == EntryKind.DIR:
                    status = SENT
        old = self.dirs.get(rel)
        if old is not None and status == old.status and old.ino == sr.st_ino and old.handle is not None:
            # The same directory, read for the same reason: its children are
            # watched already; only its own entry changes (mode, times).
            if entry is not None:
                self._set_entry(rel, entry)
            elif rel in self.held:
                self.held[rel].stat = sr
                self.touched.add(rel)
            return None
        self._drop(rel)
        self.kids[d.rel].add(name)
        if entry is not None:
            self._set_entry(rel, entry)
        if excluded is not None:
            self.excluded[rel] = excluded
        if status < 0:
            return None
        nd = WatchedDir(rel, self._plan(rel, dec.bits, d.depth + 1), d.depth + 1, status, sr.st_ino)
        self.dirs[rel] = nd
        self.kids[rel] = set()
        if status == SELECTION_DESCENDED or (status == EXCLUDED_DESCENDED and not self._classic):
            self.held[rel] = Entry(rel, EntryKind.DIR, sr, rule=dec.rule, included=False)
            self.held_count[rel] = 0
        return nd

    # -- bookkeeping ------------------------------------------------------------------
    def _set_entry(self, rel: str, e: Entry) -> None:
        if rel not in self.entries and self.held:
            self._count(rel, 1)
        self.entries[rel] = e
        self.touched.add(rel)

    def _count(self, rel: str, n: int) -> None:
        i = rel.rfind("/")
        counts = self.held_count
        while i > 0:
            a = rel[:i]
            c = counts.get(a)
            if c is not None:
                counts[a] = c + n
                if (c == 0) != (c + n == 0):
                    self.touched.add(a)  # sent now, or no longer
            i = rel.rfind("/", 0, i)

    def fix_links(self) -> None:
        """Re-stat the other names of inodes that gained or lost a name.

        A new hard link changes the link count of the names already there,
        which inotify reports to watches on the inode, not on its directory;
        the walker's hard-link entries depend on those counts."""
        if not self._links:
            return
        links, self._links = self._links, set()
        for rel, e in self.entries.items():
            s = e.stat
            if s is not None and (s.st_dev, s.st_ino) in links:
                try:
                    e.stat = os.lstat(os.path.join(self.root, rel))
                except OSError:
                    continue  # gone: its directory's event follows
                self.touched.add(rel)
                self.version += 1

    def take_touched(self) -> set[str]:
        """The paths touched since the last call (and forget them)."""
        t, self.touched = self.touched, set()
        return t

    def current(self, rel: str) -> Entry | None:
        """The sent entry at ``rel`` now (a held directory once something below it is sent)."""
        e = self.entries.get(rel)
        if e is not None:
            return e
        h = self.held.get(rel)
        if h is not None and self.held_count.get(rel, 0) > 0:
            return h
        return None

    def _drop(self, rel: str) -> None:
        """Forget ``rel`` and everything below it (removing their watches)."""
        e = self.entries.pop(rel, None)
        if e is not None:
            self.touched.add(rel)
            if e.stat is not None and e.stat.st_nlink > 1 and e.kind != EntryKind.DIR:
                self._links.add((e.stat.st_dev, e.stat.st_ino))
            if self.held:
                self._count(rel, -1)
        self.excluded.pop(rel, None)
        parent, _, name = rel.rpartition("/")
        kids = self.kids.get(parent)
        if kids is not None:
            kids.discard(name)
        d = self.dirs.pop(rel, None)
        if d is None:
            return
        self.version += 1
        self._unwatch(d)
        if self.held.pop(rel, None) is not None:
            self.touched.add(rel)
        self.held_count.pop(rel, None)
        for child in list(self.kids.pop(rel, ())):
            self._drop(rel + "/" + child)

    # -- answers -------------------------------------------------------------------------
    @property
    def watchable(self) -> int:
        """How many directories the walker reads (each gets one watch)."""
        return len(self.dirs)

    def walk_all(self, *, excluded: bool = False) -> list[Entry]:
        """What :func:`ctxpack.walker.walk_all` would yield now (fresh copies)."""
        cached = self._cache.get(excluded)
        if cached is not None and cached[0] == self.version:
            base = cached[1]
        else:
            items = list(self.entries.values())
            for rel, held in self.held.items():
                if self.held_count.get(rel, 0) > 0:
                    items.append(held)
            if excluded:
                items.extend(self.excluded.values())
            items.sort(key=lambda e: order_key(e.path))
            base = items
            self._cache[excluded] = (self.version, base)
        return list(self._copies(base))

    def _copies(self, base: list[Entry]) -> Iterator[Entry]:
        # Hard links: a later name (in upload order) of an inode already
        # sent is a link to the first, as the walker assigns them.
        seen: dict[tuple[int, int], str] = {}
        DIR, SYMLINK, HARDLINK = EntryKind.DIR, EntryKind.SYMLINK, EntryKind.HARDLINK
        held = self.held
        for e in base:
            kind, link, s = e.kind, e.link, e.stat
            included = e.included or e.path in held  # a held directory is listed only once sent
            if included and s is not None and kind != DIR and kind != SYMLINK and s.st_nlink > 1:
                key = (s.st_dev, s.st_ino)
                first = seen.get(key)
                if first is None:
                    seen[key] = e.path
                else:
                    kind, link = HARDLINK, first
            yield Entry(e.path, kind, s, link, e.rule, included, e.forced)
