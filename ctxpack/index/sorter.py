"""Putting a walk's entries into fingerprint order without holding them.

The walker yields entries depth-first, each directory sorted by name; the
fingerprint wants them sorted by the bytes of the whole path.  The two
orders differ wherever a directory ``x`` has a sibling such as ``x.txt`` or
``x-1`` (bytes below ``/``): ``x.txt`` sorts before ``x/a`` but is walked
after it.  Sorting every entry at the end made a cold run's memory grow
with the context (about 200 bytes per entry), so :class:`Reorder` does it
in a bounded window:

* rows are held in walk order, up to :data:`HOLD` of them;
* then the lowest key any row still to come can have is worked out from
  the last row's path and the listings of its ancestors (a later sibling
  of an ancestor is the next name after it in its directory's listing; the
  walk has no other rows to send): every held row below it is released, in
  key order;
* a released row must sort after the last one released; one that does not
  (a row the walk sends out of its order, such as a Dockerfile added at the
  end, or a directory changed between the walk's listing and this one)
  goes to a :class:`Sorter`, as do held rows when too many must wait (a
  large directory ``x`` whose subtree must wait for ``x.d/``'s).  The
  caller merges those in at the end (usually there are none or a few).

So the listings only make the window small: whatever they say, the
released rows are in strictly increasing key order, and every row is
either released or in the sorter.

:class:`Sorter` is a private temporary SQLite database (a file SQLite
unlinks as soon as it is open: nothing is left behind, even after SIGKILL)
keyed by the path's bytes, read back in key order; its page cache
(:data:`CACHE_KIB`) is all of it that is in memory.  It is not the index:
it has no lock another process waits for, and it is there when the index
is off.

Row layout (:data:`Row`): ``(key, seq, kind, mode, size, mtime_ns, ctime_ns,
inode, st_mode, value)``: ``key`` the path as UTF-8 (surrogate escapes for
undecodable bytes), ``seq`` its place in the walk (of two rows for one path
the later counts), ``mode`` and ``size`` the record's, the next four with
``size`` the stat key (``inode`` < 0: no file behind it), ``value`` the 16
raw digest bytes of a regular file (``None`` while a thread still hashes
it, or if it vanished), else the record's value as UTF-8 bytes.  A row
still waiting for its digest is a list, filled in place.
"""

from __future__ import annotations

import bisect
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from ctxpack.errors import OutputError

__all__ = ["Sorter", "Reorder", "Row", "CACHE_KIB", "HOLD"]

Row = Sequence[Any]
# SQLite's page cache for the sorter: what it may hold in memory, whatever
# the size of the context (the rest is in its file, i.e. the OS page cache).
CACHE_KIB = 4096
FETCH = 2048
# Rows held before the window is worked out and released; more than
# SPILL * HOLD still waiting go to the sorter.
HOLD = 4096
SPILL = 4

_KEY = itemgetter(0)
_UPSERT = ("INSERT INTO r VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(k) DO UPDATE SET "
           "seq = excluded.seq, kind = excluded.kind, mode = excluded.mode, size = excluded.size, "
           "mtime = excluded.mtime, ctime = excluded.ctime, ino = excluded.ino, stmode = excluded.stmode, "
           "v = excluded.v WHERE excluded.seq > r.seq")


class Sorter:
    """Rows in any order in, rows sorted by ``key`` out (:meth:`rows`), one
    per key (the highest ``seq``).  Opened on first use; :meth:`close`
    deletes everything."""

    def __init__(self) -> None:
        self.db: sqlite3.Connection | None = None
        self.count = 0

    @staticmethod
    def _open(name: str) -> sqlite3.Connection:
        db = sqlite3.connect(name, isolation_level=None)
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("CREATE TABLE r (k BLOB PRIMARY KEY, seq INT, kind TEXT, mode INT, size INT, mtime INT, "
                   "ctime INT, ino INT, stmode INT, v BLOB) WITHOUT ROWID")
        db.execute("BEGIN")
        return db

    def _fail(self, e: sqlite3.Error) -> OutputError:
        return OutputError(f"cannot sort the entries in a temporary file ({e}); "
                           "point TMPDIR (or SQLITE_TMPDIR) at a directory with room")

    def add(self, rows: Sequence[Row]) -> None:
        """Insert rows (of a key already there, the higher ``seq`` stays)."""
        if not rows:
            return
        try:
            if self.db is None:
                try:
                    self.db = self._open("")  # "": a private temporary file, deleted on close
                except sqlite3.Error:
                    self.db = self._open(":memory:")  # no temporary directory to be had
            self.db.executemany(_UPSERT, [tuple(r) for r in rows])
        except sqlite3.Error as e:
            raise self._fail(e) from None
        self.count += len(rows)

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Every row, in key order (byte order of the paths)."""
        if self.db is None:
            return
        try:
            cur = self.db.execute("SELECT * FROM r ORDER BY k")
            while True:
                batch = cur.fetchmany(FETCH)
                if not batch:
                    return
                yield from batch
        except sqlite3.Error as e:
            raise self._fail(e) from None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


class Reorder:
    """Rows in walk order in (:meth:`add`, then :meth:`release`), rows in
    key order out to ``emit``, strictly increasing; the rest in
    :attr:`sorter` (see the module docstring)."""

    def __init__(self, root: str, emit: Callable[[list[Row]], None], hold: int = HOLD):
        self.root = os.fsencode(root.rstrip("/") or "/")
        self.emit = emit
        self.hold = hold
        self.held: list[Row] = []
        self.last: bytes | None = None  # the last key released
        self.sorter = Sorter()
        self._listings: dict[bytes, list[bytes]] = {}

    def full(self) -> bool:
        return len(self.held) >= self.hold

    def add(self, rows: list[Row]) -> None:
        self.held += rows

    def release(self, final: bool = False) -> None:
        """Release every held row that no row still to come can precede
        (``final``: the walk is over, all of them)."""
        held = self.held
        if not held:
            return
        bound = None if final else self._bound(held[-1])
        held.sort(key=_KEY)  # stable: of one path's rows, the later stays later
        n = len(held) if bound is None else bisect.bisect_left(held, bound, key=_KEY)
        out: list[Row] = []
        late: list[Row] = []
        last = self.last
        for i in range(n):
            r = held[i]
            k = r[0]
            if i + 1 < n and held[i + 1][0] == k:
                continue  # the same path again: the later row counts
            if r[9] is None:
                continue  # vanished before it was read
            if last is not None and k <= last:
                late.append(r)
                continue
            out.append(r)
            last = k
        self.last = last
        rest = held[n:]
        if len(rest) > SPILL * self.hold:
            late += rest
            rest = []
        self.held = rest
        if out:
            self.emit(out)
        if late:
            self.sorter.add(late)

    def _bound(self, row: Row) -> bytes | None:
        """The lowest key a row after ``row`` can have (``None``: no limit)."""
        key: bytes = row[0]
        best = key + b"/" if row[2] == "d" else None  # its own subtree
        names = key.split(b"/")
        prefix = b""
        keep: set[bytes] = set()
        for name in names:
            keep.add(prefix)
            listing = self._listing(prefix)
            after: bytes | None
            if listing is None:
                after = prefix + name + b"\0"  # cannot list it: any later name
            else:
                j = bisect.bisect_right(listing, name)
                after = prefix + listing[j] if j < len(listing) else None
            if after is not None and (best is None or after < best):
                best = after
            prefix += name + b"/"
        for stale in [d for d in self._listings if d not in keep]:
            del self._listings[stale]  # only the current chain of directories is kept
        return best

    def _listing(self, rel_dir: bytes) -> list[bytes] | None:
        """Sorted names in ``rel_dir`` (``b""``: the root)."""
        names = self._listings.get(rel_dir)
        if names is None:
            try:
                names = sorted(os.listdir(self.root + b"/" + rel_dir if rel_dir else self.root))
            except OSError:
                return None
            self._listings[rel_dir] = names
        return names

    def close(self) -> None:
        self.sorter.close()
