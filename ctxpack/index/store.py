"""The persistent index: each context's last state, and its snapshots.

One SQLite database outside every context (``$CTXPACK_CACHE_DIR``, else
``$XDG_CACHE_HOME/ctxpack``, else ``~/.cache/ctxpack``), keyed by the
context's absolute path.  SQLite gives what the index must never lose:
atomic transactions (a crash or Ctrl-C leaves the previous state), WAL mode
so concurrent ctxpack processes read while one writes, and a busy timeout
instead of "database is locked".

One file per schema version (``index-v3.sqlite3``): ctxpack versions that
share a cache (a pipx install and a project venv, a CI image and a laptop,
an upgrade then a downgrade) each keep their own index and snapshots and
never touch another version's file.  The first run of this version copies
the unversioned ``index.sqlite3`` of earlier releases when it has this
schema (same tables, so the copy is exact).  A file that is not our
database (corrupt, truncated, foreign) is moved aside with one warning
naming the copy, and rebuilt, never trusted; only the newest
:data:`KEEP_ASIDE` such copies are kept (``cache info`` counts them,
``cache clear --all`` removes them).  A cache
directory that cannot be created or written, or a full disk, turns the
index off for the run with one warning (:attr:`Index.warning`): the answer
is the same, only slower.  Contexts not used for ``PRUNE_AFTER`` seconds
are dropped when the index is next written, so the cache stays bounded.

Opening is one step per process: judging the file, making a new one and
moving an unusable one aside happen under a lock file beside it
(``index-v3.sqlite3.lock``, :func:`_opening`).  Without it, runs started
together on a new cache raced: one read the new file's application id
before another made the tables and its table list after, took the file for
a foreign one and moved it aside with the first run's writes; or two runs
switched it to WAL at once and one got "database is locked".  A holder
that keeps the lock (stopped with Ctrl-Z, stuck) is waited for briefly:
a note after :data:`OPEN_LOCK_NOTE`, the index off for the run after
:data:`OPEN_LOCK_TIMEOUT` (at once when the holder is stopped).

Layout: a context's state per *variant* (dialect, Dockerfile, ignore file)
is a summary row (``states``) and its entries in *parts* of
:data:`~ctxpack.index.state.PART` entries (``state_parts``), each part three
blobs in the format of :mod:`ctxpack.index.state` (paths, stat keys,
records).  Runs read the parts one at a time, so memory does not grow with
the context; a run writes in one transaction.  A snapshot is a copy of a
state's rows, made inside the database.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ctxpack.index import paths
from ctxpack.index.paths import cache_dir  # here too: callers import it from the store

__all__ = ["cache_dir", "Index", "CacheInfo", "CacheFiles", "OtherIndex", "Stored", "Part", "IndexUnavailable",
           "open_index", "cache_files", "remove_aside", "lost_snapshot"]

APPLICATION_ID = 0x63747870  # "ctxp"
SCHEMA_VERSION = 3
PRUNE_AFTER = 30 * 24 * 3600
# A context's last_used is rewritten at most this often (a warm run that
# changes nothing then writes nothing).
TOUCH_AFTER = 3600
DB_NAME = f"index-v{SCHEMA_VERSION}.sqlite3"
# The one file of releases before the per-version names (any schema).
LEGACY_NAME = "index.sqlite3"
# Moved-aside copies kept (newest first); older ones are deleted.
KEEP_ASIDE = 3
_INDEX_FILE = re.compile(r"index(?:-v(\d+))?\.sqlite3")
_ASIDE_FILE = re.compile(r"index(?:-v\d+)?\.sqlite3\.broken-.*")
_SIDE_FILES = ("", "-wal", "-shm")
# Opening the index takes milliseconds (a few seconds at most, copying a
# large index of an earlier release): a run that waits longer than
# OPEN_LOCK_NOTE for the opening lock says so (paths.on_wait, set by the
# CLI), naming the lock file and its holder; after OPEN_LOCK_TIMEOUT, or at
# once when the holder is stopped (Ctrl-Z), it goes on without the index
# with the usual warning (the answer is the same, only slower).
OPEN_LOCK_NOTE = 1.0
OPEN_LOCK_TIMEOUT = 5.0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL UNIQUE,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    config TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    entries INTEGER NOT NULL, files INTEGER NOT NULL, bytes INTEGER NOT NULL,
    checkable INTEGER NOT NULL,
    updated REAL NOT NULL,
    extra_paths BLOB NOT NULL, extra_keys BLOB NOT NULL,
    PRIMARY KEY (ctx, variant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state_parts (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    part INTEGER NOT NULL,
    paths BLOB NOT NULL, keys BLOB NOT NULL, records BLOB NOT NULL,
    PRIMARY KEY (ctx, variant, part)
);
CREATE TABLE IF NOT EXISTS snapshots (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    taken_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    entries INTEGER NOT NULL, files INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (ctx, variant)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshot_parts (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    part INTEGER NOT NULL,
    paths BLOB NOT NULL, records BLOB NOT NULL,
    PRIMARY KEY (ctx, variant, part)
);
"""


@dataclass
class Stored:
    """A stored state's (or snapshot's) summary row.  ``checkable``: its
    stat keys prove the listing (see :mod:`ctxpack.index.state`); ``extra_*``:
    the directories whose listing it depends on, with their keys."""

    variant: str
    config: str
    fingerprint: str
    entries: int
    files: int
    bytes: int
    checkable: bool
    when: float
    # builtins.bytes: the field "bytes" above shadows the type in this class body.
    extra_paths: builtins.bytes = b""
    extra_keys: builtins.bytes = b""


# A part: (paths, keys, records) blobs; b"" for the ones not asked for.
Part = tuple[bytes, bytes, bytes]


@dataclass(frozen=True)
class CacheInfo:
    """What ``cache info`` shows: this version's index (``path``, its
    ``bytes`` with the WAL, what it holds), and the other files of the
    cache directory (:class:`CacheFiles`)."""

    path: str
    bytes: int
    contexts: int
    files: int
    snapshots: int
    aside: int = 0
    aside_bytes: int = 0
    others: tuple[OtherIndex, ...] = ()


@dataclass(frozen=True)
class OtherIndex:
    """Another ctxpack version's index in the cache directory (left as it
    is).  ``schema``: its schema version (``None``: unknown, not a ctxpack
    database); ``newer``: written by a newer ctxpack than this one."""

    path: str
    schema: int | None
    bytes: int

    @property
    def newer(self) -> bool:
        return self.schema is not None and self.schema > SCHEMA_VERSION

    def describe(self) -> str:
        if self.schema is None:
            return f"{self.path} (not a ctxpack index)"
        age = "a newer" if self.newer else "an older" if self.schema < SCHEMA_VERSION else "an earlier"
        return f"{self.path} (schema {self.schema}, {age} ctxpack's)"


@dataclass(frozen=True)
class CacheFiles:
    """The cache directory's index files besides this version's: other
    versions' indexes and the moved-aside copies (newest first, each
    ``(path, bytes with its -wal/-shm, when it was moved aside: its ctime)``)."""

    others: tuple[OtherIndex, ...]
    aside: tuple[tuple[str, int, float], ...]


def _size(path: str) -> int:
    total = 0
    for suffix in _SIDE_FILES:
        with contextlib.suppress(OSError):
            total += os.path.getsize(path + suffix)
    return total


def _header(path: str) -> tuple[int, int] | None:
    """``(application_id, user_version)`` read from the file's header (plain
    read: nothing is opened as a database, nothing written); ``None`` if it
    is no SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    return int.from_bytes(head[68:72], "big"), int.from_bytes(head[60:64], "big")


def cache_files(directory: str | None = None) -> CacheFiles:
    """The other index files of the cache directory (see :class:`CacheFiles`)."""
    directory = directory or cache_dir()
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return CacheFiles((), ())
    others: list[OtherIndex] = []
    aside: list[tuple[str, int, float]] = []
    for name in names:
        path = os.path.join(directory, name)
        m = _INDEX_FILE.fullmatch(name)
        if m is not None and name != DB_NAME:
            head = _header(path)
            schema = int(m.group(1)) if m.group(1) else (head[1] if head and head[0] == APPLICATION_ID else None)
            others.append(OtherIndex(path, schema, _size(path)))
        elif _ASIDE_FILE.fullmatch(name) and not name.endswith(("-wal", "-shm")):
            with contextlib.suppress(OSError):
                # ctime: when it was moved aside (a rename sets it; the mtime is the last write's).
                aside.append((path, _size(path), os.stat(path).st_ctime))
    aside.sort(key=lambda a: (a[2], a[0]), reverse=True)
    return CacheFiles(tuple(others), tuple(aside))


def _remove(path: str) -> None:
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def remove_aside(directory: str | None = None, *, keep: int = 0) -> tuple[int, int]:
    """Delete the moved-aside copies but the newest ``keep``: ``(files, bytes)`` removed."""
    gone = freed = 0
    for path, size, _ in cache_files(directory).aside[keep:]:
        with contextlib.suppress(OSError):
            _remove(path)
            gone += 1
            freed += size
    return gone, freed


def _uri_path(path: str) -> str:
    """``path`` for a ``file:`` URI (the characters URIs give a meaning escaped)."""
    return path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _has_snapshot(path: str, root: str) -> bool | None:
    """Whether the index file at ``path`` (opened read-only) holds a
    snapshot of ``root``; ``None`` when it cannot be read."""
    # Without a WAL beside it the file is read as immutable: nothing is
    # created next to it (a read-only open of a WAL database leaves -wal
    # and -shm files behind).
    mode = "mode=ro" if os.path.exists(path + "-wal") else "immutable=1"
    try:
        db = sqlite3.connect(f"file:{_uri_path(path)}?{mode}", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        row = db.execute("SELECT count(*) FROM snapshots s JOIN contexts c ON c.id = s.ctx WHERE c.root = ?",
                         (root,)).fetchone()
        return bool(row[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def lost_snapshot(root: str, directory: str | None = None) -> str | None:
    """Why this version's index may have no snapshot of ``root`` although
    one was taken: an index moved aside that held one (or cannot be read to
    tell), another version's index that holds one (a newer version's file
    is not opened: only named).  ``None``: nothing points to a lost one."""
    files = cache_files(directory)
    now = time.time()
    for path, _, when in files.aside:
        has = _has_snapshot(path, root)
        # An unreadable copy may have held one: said only while it could
        # (its contexts would have been pruned by now).
        if has is False or (has is None and when < now - PRUNE_AFTER):
            continue
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        held = "held a snapshot of it" if has else "cannot be read, it may have held one"
        return f"the index was moved aside at {stamp} as unusable ({path}); it {held}, which is not used"
    for other in files.others:
        if other.newer:
            return (f"{other.describe()} is not read by this version: snapshots taken by that version "
                    "are kept there")
        if other.schema is not None and _has_snapshot(other.path, root):
            return f"{other.describe()} holds a snapshot of it, taken by that version; this version keeps its own"
    return None


class IndexUnavailable(Exception):
    """The index cannot be used this run (the reason is the message)."""


class Index:
    """The index database; use as a context manager.

    Never raises for a cache that cannot be used: it is then *off*
    (:attr:`db` is ``None``), reads find nothing, writes do nothing, and
    :attr:`warning` says why once.
    """

    def __init__(self, directory: str | None = None, *, now: float | None = None):
        self.dir = directory or cache_dir()
        self.path = os.path.join(self.dir, DB_NAME)
        self.now = time.time() if now is None else now
        # recovered: the file was moved aside (a warning naming the copy);
        # adopted: the earlier releases' index.sqlite3 was copied (a note).
        self.recovered: str | None = None
        self.adopted: str | None = None
        self.warning: str | None = None
        self.db: sqlite3.Connection | None = None
        self._ids: dict[str, tuple[int, float]] = {}
        # The (st_dev, st_ino) of the file opened: a run that finds it
        # damaged later moves it aside only if it is still the one there.
        self._file: tuple[int, int] | None = None
        try:
            os.makedirs(self.dir, exist_ok=True)
            with _opening(self.path):
                self.db = self._open()
                self._file = _identity(self.path)
        except (OSError, sqlite3.Error) as e:
            self._off(e)

    # -- opening, validation, recovery ------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA foreign_keys = ON")
        # WAL with NORMAL: a power cut may lose the last run's write, never
        # the database; a cache needs no more.
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _open(self) -> sqlite3.Connection:
        db = None
        if not os.path.exists(self.path):
            self._adopt()
        try:
            db = self._connect()
            self._check_or_init(db)
            return db
        except sqlite3.DatabaseError as e:
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            if isinstance(e, sqlite3.OperationalError) and not _means_corrupt(e):
                raise  # cannot open or write (permissions, full disk): not the file's fault
            return self._rebuild(str(e))

    def _check_or_init(self, db: sqlite3.Connection) -> None:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN IMMEDIATE")
            # Re-check under the write lock: an earlier release, which takes no
            # opening lock, may have won the race.
            if db.execute("PRAGMA application_id").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            # A new file: the time to bound the copies earlier runs (or
            # earlier releases) moved aside.
            with contextlib.suppress(OSError):
                remove_aside(self.dir, keep=KEEP_ASIDE)
            return
        if app_id != APPLICATION_ID:
            raise sqlite3.DatabaseError(f"not a ctxpack index (application_id {app_id:#x})")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            # Not another version's file (those have their own names): this
            # one's name but not its content.
            raise sqlite3.DatabaseError(f"schema {version} in the file of schema {SCHEMA_VERSION}")
        # No PRAGMA quick_check here: it reads every page of the database on
        # every run (about 1 s for a 1M-entry context, a quarter of a warm
        # run at 100k).  A damaged page fails when it is read instead
        # ("database disk image is malformed"), and then _off moves the file
        # aside: this run goes on without the index, the next rebuilds it.

    def _adopt(self) -> None:
        """No index of this version yet: copy the earlier releases'
        ``index.sqlite3`` when it has this schema (exactly these tables), so
        that an upgrade keeps the snapshots.  The old file stays for the
        release that still uses it.  The copy is made under a temporary name
        and linked into place, so that a concurrent run never sees half of
        it; anything going wrong just leaves a fresh index to be made."""
        legacy = os.path.join(self.dir, LEGACY_NAME)
        if _header(legacy) != (APPLICATION_ID, SCHEMA_VERSION):
            return
        tmp = f"{self.path}.adopt-{os.getpid()}"
        try:
            src = sqlite3.connect(f"file:{_uri_path(legacy)}?mode=ro", uri=True, timeout=30.0)
            try:
                dst = sqlite3.connect(tmp)
                try:
                    src.backup(dst)  # one consistent read of the old file
                    dst.execute("PRAGMA journal_mode = WAL")
                finally:
                    dst.close()
            finally:
                src.close()
            os.link(tmp, self.path)  # fails if another run was quicker: keep its file
            self.adopted = f"copied the index of the earlier ctxpack release ({legacy}) to {self.path}"
            remove_aside(self.dir, keep=KEEP_ASIDE)  # a new file, as in _check_or_init
        except (OSError, sqlite3.Error):
            pass
        finally:
            _remove(tmp)

    def _move_aside(self) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = f"{self.path}.broken-{stamp}-{os.getpid()}"
        n = 1
        while os.path.lexists(aside):  # a long-lived process (watch) twice within a second
            n += 1
            aside = f"{self.path}.broken-{stamp}-{os.getpid()}-{n}"
        for suffix in _SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        with contextlib.suppress(OSError):
            remove_aside(self.dir, keep=KEEP_ASIDE)
        return aside

    def _rebuild(self, why: str) -> sqlite3.Connection:
        aside = self._move_aside()
        self.recovered = (f"the index at {self.path} was unusable ({why}): moved to {aside} and rebuilt; "
                          "the digests and snapshots it held are not used")
        db = self._connect()
        self._check_or_init(db)
        return db

    def _off(self, e: BaseException) -> None:
        """Turn the index off for this run, with one warning."""
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.close()
        self.db = None
        if isinstance(e, sqlite3.DatabaseError) and _means_corrupt(e) and self.recovered is None:
            with contextlib.suppress(OSError), _opening(self.path):
                if self._file is not None and _identity(self.path) != self._file:
                    # Another run moved it aside first (and may have made a new one: not ours to move).
                    self.recovered = (f"the index at {self.path} was unusable ({e}): another ctxpack run has "
                                      "moved it aside; the digests and snapshots it held are not used")
                    return
                aside = self._move_aside()
                self.recovered = (f"the index at {self.path} was unusable ({e}): moved to {aside}, "
                                  "to be rebuilt by the next run; the digests and snapshots it held are not used")
            return  # that is the one warning: the answer is right, only this run is slower
        if self.warning is None:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            if isinstance(e, OSError) and e.filename is not None and os.fsdecode(e.filename) != self.path:
                # The index's directory (or one above it) is the trouble: say which.
                what = os.fsdecode(e.filename)
                why = f"{what} exists and is not a directory" if isinstance(e, FileExistsError) else f"{what}: {why}"
            self.warning = f"cannot use the index at {self.path} ({why}); working without it (every file is read)"

    @property
    def usable(self) -> bool:
        return self.db is not None

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; raises :class:`IndexUnavailable` when the
        index is off or the write fails (then it is off)."""
        if self.db is None:
            raise IndexUnavailable(self.warning or "index is off")
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._off(e)
            raise IndexUnavailable(str(e)) from None
        try:
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._off(e)
            raise IndexUnavailable(str(e)) from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        if self.db is None:
            return []
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            self._off(e)
            return []

    # -- contexts ------------------------------------------------------------------
    def context_id(self, root: str) -> int | None:
        """The context's id, without writing (``None``: not indexed yet)."""
        if root not in self._ids:
            rows = self._read("SELECT id, last_used FROM contexts WHERE root = ?", (root,))
            if not rows:
                return None
            self._ids[root] = (int(rows[0][0]), float(rows[0][1]))  # type: ignore[call-overload, arg-type]
        return self._ids[root][0]

    def _ensure_context(self, db: sqlite3.Connection, root: str) -> int:
        """Inside a write transaction: the context's id, last_used now; and
        contexts unused for PRUNE_AFTER are dropped."""
        db.execute(
            "INSERT INTO contexts(root, last_used) VALUES (?, ?) "
            "ON CONFLICT(root) DO UPDATE SET last_used = excluded.last_used",
            (root, self.now),
        )
        db.execute("DELETE FROM contexts WHERE last_used < ?", (self.now - PRUNE_AFTER,))
        cid = int(db.execute("SELECT id FROM contexts WHERE root = ?", (root,)).fetchone()[0])
        self._ids[root] = (cid, self.now)
        return cid

    def touch(self, root: str) -> None:
        """Mark the context used, if that was not done recently."""
        known = self._ids.get(root)
        if known is not None and known[1] > self.now - TOUCH_AFTER:
            return
        with contextlib.suppress(IndexUnavailable), self.transaction() as db:
            self._ensure_context(db, root)

    # -- reading -------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: what is read inside is one version of the
        index, whatever other processes write meanwhile."""
        db = self.db
        began = False
        if db is not None:
            try:
                db.execute("BEGIN")
                began = True
            except sqlite3.Error as e:
                self._off(e)
        try:
            yield
        finally:
            if began and self.db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.execute("COMMIT")

    def _parts(self, sql: str, args: tuple[object, ...]) -> Iterator[Part]:
        if self.db is None:
            return
        try:
            for row in self.db.execute(sql, args):
                yield row[0] or b"", row[1] or b"", row[2] or b""
        except sqlite3.Error as e:
            self._off(e)
            raise IndexUnavailable(str(e)) from None

    # -- states ----------------------------------------------------------------------
    def load_state(self, root: str, variant: str, *, any_variant: bool = False) -> Stored | None:
        """The summary of ``root``'s state for ``variant`` (or, with
        ``any_variant``, the most recent one of any variant when this one
        has none: its digests are as good)."""
        cid = self.context_id(root)
        if cid is None:
            return None
        order = "ORDER BY variant = ? DESC, updated DESC LIMIT 1" if any_variant else "AND variant = ?"
        rows = self._read(
            "SELECT variant, config, fingerprint, entries, files, bytes, checkable, updated, extra_paths, extra_keys "
            f"FROM states WHERE ctx = ? {order}",
            (cid, variant),
        )
        if not rows:
            return None
        r = rows[0]
        return Stored(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7], r[8], r[9])  # type: ignore[arg-type]

    def state_parts(self, root: str, variant: str, *, keys: bool = True, records: bool = True) -> Iterator[Part]:
        """The state's parts in order, read one at a time (raises
        :class:`IndexUnavailable` if reading fails midway)."""
        cid = self.context_id(root)
        if cid is None:
            return iter(())
        cols = f"paths, {'keys' if keys else 'NULL'}, {'records' if records else 'NULL'}"
        return self._parts(f"SELECT {cols} FROM state_parts WHERE ctx = ? AND variant = ? ORDER BY part", (cid, variant))

    def state_part(self, root: str, variant: str, n: int) -> Part | None:
        """Part ``n`` of the state (``None``: no such part; raises
        :class:`IndexUnavailable` if reading fails)."""
        cid = self.context_id(root)
        if cid is None:
            return None
        found = list(self._parts("SELECT paths, keys, records FROM state_parts WHERE ctx = ? AND variant = ? AND part = ?",
                                 (cid, variant, n)))
        return found[0] if found else None

    def save_state(self, root: str, variant: str, summary: Callable[[], Stored], parts: Iterable[Part]) -> bool:
        """Replace the state of ``root``/``variant``: ``parts`` (consumed
        inside the transaction, one at a time), then ``summary()`` (called
        after the parts, so that it can sum them up).  False when the index
        is off or the write failed (the previous state stays)."""
        try:
            with self.transaction() as db:
                cid = self._ensure_context(db, root)
                db.execute("DELETE FROM state_parts WHERE ctx = ? AND variant = ?", (cid, variant))
                for n, (paths, keys, records) in enumerate(parts):
                    db.execute("INSERT INTO state_parts VALUES (?, ?, ?, ?, ?, ?)", (cid, variant, n, paths, keys, records))
                s = summary()
                self._put_summary(db, cid, variant, s)
            return True
        except IndexUnavailable:
            return False

    def update_parts(self, root: str, variant: str, expect: str, s: Stored, parts: dict[int, Part]) -> bool:
        """Rewrite some parts of a state and its summary, if the stored
        state still has fingerprint ``expect`` (else nothing; False)."""
        try:
            with self.transaction() as db:
                cid = self._ensure_context(db, root)
                row = db.execute("SELECT fingerprint FROM states WHERE ctx = ? AND variant = ?", (cid, variant)).fetchone()
                if row is None or row[0] != expect:
                    return False
                for n, (paths, keys, records) in parts.items():
                    db.execute("UPDATE state_parts SET paths = ?, keys = ?, records = ? WHERE ctx = ? AND variant = ? AND part = ?",
                               (paths, keys, records, cid, variant, n))
                self._put_summary(db, cid, variant, s)
            return True
        except IndexUnavailable:
            return False

    def _put_summary(self, db: sqlite3.Connection, cid: int, variant: str, s: Stored) -> None:
        db.execute(
            "INSERT OR REPLACE INTO states VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, variant, s.config, s.fingerprint, s.entries, s.files, s.bytes, int(s.checkable), self.now,
             s.extra_paths, s.extra_keys),
        )

    # -- snapshots -----------------------------------------------------------------------
    def save_snapshot(self, root: str, variant: str, fingerprint: str) -> bool:
        """Make the stored state (which must have ``fingerprint``) the
        snapshot, copied inside the database; when the snapshot already has
        this fingerprint only its time moves.  False when there was no such
        state to copy (another process replaced it meanwhile)."""
        try:
            with self.transaction() as db:
                cid = self._ensure_context(db, root)
                args = (cid, variant)
                if db.execute("UPDATE snapshots SET taken_at = ? WHERE ctx = ? AND variant = ? AND fingerprint = ?",
                              (self.now, cid, variant, fingerprint)).rowcount:
                    return True
                row = db.execute("SELECT fingerprint FROM states WHERE ctx = ? AND variant = ?", args).fetchone()
                if row is None or row[0] != fingerprint:
                    return False
                db.execute("DELETE FROM snapshot_parts WHERE ctx = ? AND variant = ?", args)
                db.execute("INSERT INTO snapshot_parts SELECT ctx, variant, part, paths, records FROM state_parts "
                           "WHERE ctx = ? AND variant = ?", args)
                db.execute("INSERT OR REPLACE INTO snapshots SELECT ctx, variant, ?, fingerprint, entries, files, bytes "
                           "FROM states WHERE ctx = ? AND variant = ?", (self.now, *args))
            return True
        except IndexUnavailable:
            return False

    def load_snapshot(self, root: str, variant: str) -> Stored | None:
        cid = self.context_id(root)
        if cid is None:
            return None
        rows = self._read(
            "SELECT taken_at, fingerprint, entries, files, bytes FROM snapshots WHERE ctx = ? AND variant = ?", (cid, variant)
        )
        if not rows:
            return None
        r = rows[0]
        return Stored(variant, "", r[1], r[2], r[3], r[4], False, r[0])  # type: ignore[arg-type]

    def snapshot_variants(self, root: str) -> list[tuple[str, float]]:
        """Every variant of ``root`` with a snapshot and when it was taken, newest first."""
        cid = self.context_id(root)
        if cid is None:
            return []
        rows = self._read("SELECT variant, taken_at FROM snapshots WHERE ctx = ? ORDER BY taken_at DESC", (cid,))
        return [(str(r[0]), float(r[1])) for r in rows]  # type: ignore[arg-type]

    def snapshot_parts(self, root: str, variant: str) -> Iterator[Part]:
        cid = self.context_id(root)
        if cid is None:
            return iter(())
        return self._parts("SELECT paths, NULL, records FROM snapshot_parts WHERE ctx = ? AND variant = ? ORDER BY part",
                           (cid, variant))

    # -- maintenance ---------------------------------------------------------------------
    def info(self) -> CacheInfo:
        size = _size(self.path)
        files_around = cache_files(self.dir)

        def one(sql: str) -> int:
            rows = self._read(sql, ())
            return int(rows[0][0] or 0) if rows else 0  # type: ignore[call-overload]

        # files: the regular files of the largest state of each context
        files = one("SELECT sum(m) FROM (SELECT max(files) AS m FROM states GROUP BY ctx)")
        return CacheInfo(self.path, size, one("SELECT count(*) FROM contexts"), files, one("SELECT count(*) FROM snapshots"),
                         len(files_around.aside), sum(a[1] for a in files_around.aside), files_around.others)

    def clear(self) -> None:
        with contextlib.suppress(IndexUnavailable), self.transaction() as db:
            db.execute("DELETE FROM snapshot_parts")
            db.execute("DELETE FROM snapshots")
            db.execute("DELETE FROM state_parts")
            db.execute("DELETE FROM states")
            db.execute("DELETE FROM contexts")
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("VACUUM")

    def forget(self, root: str) -> bool:
        """Drop one context (its states and snapshot); ``False`` if the
        index held nothing for it."""
        if self.context_id(root) is None:
            return False
        with contextlib.suppress(IndexUnavailable), self.transaction() as db:
            db.execute("DELETE FROM contexts WHERE root = ?", (root,))  # states and snapshots cascade
        self._ids.pop(root, None)
        return True


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def _opening(path: str) -> Iterator[None]:
    """Hold the opening lock of the index at ``path`` (an exclusive
    ``flock`` on ``path + ".lock"``) for the block: the other runs' opening,
    initialising and moving aside wait meanwhile; their reads and writes do
    not (SQLite's own locks order those).  Where no lock file can be made
    (a read-only cache directory) the block runs without one: SQLite then
    decides whether the index can be used at all.  A wait past
    :data:`OPEN_LOCK_NOTE` is said (:data:`ctxpack.index.paths.on_wait`);
    raises :class:`OSError` when another process holds the lock for
    :data:`OPEN_LOCK_TIMEOUT` seconds, or sooner when it is stopped."""
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        _lock(fd, lock)
        yield
    finally:
        os.close(fd)  # releases the lock


# lock file -> when this process last gave up waiting for it: a command that
# opens the index again soon after (pack --snapshot, build) does not wait
# again for the same stuck holder; a long-lived one (watch) waits again later.
_gave_up: dict[str, float] = {}


def _lock(fd: int, lock: str) -> None:
    started = time.monotonic()
    pause = 0.001
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _gave_up.pop(lock, None)
            return
        except BlockingIOError:
            pass
        # Polled, not blocking: a stopped or hung holder must not hang this run.
        waited = time.monotonic() - started
        if started - _gave_up.get(lock, -1e9) < 6 * OPEN_LOCK_TIMEOUT:
            raise OSError(errno.EAGAIN, f"{_holder(fd)} still holds {lock}") from None
        if waited >= OPEN_LOCK_TIMEOUT:
            _gave_up[lock] = time.monotonic()
            raise OSError(errno.EAGAIN, f"{_holder(fd)} has held {lock} for {OPEN_LOCK_TIMEOUT:.0f} s") from None
        if waited >= OPEN_LOCK_NOTE and not said:
            said = True
            who = _holder(fd)
            if who.endswith(", stopped)"):
                _gave_up[lock] = time.monotonic()
                raise OSError(errno.EAGAIN, f"{who} holds {lock}") from None  # it will not let go
            if paths.on_wait is not None:
                paths.on_wait(f"waiting for {who} to finish opening the index ({lock}); "
                              f"going on without the index after {OPEN_LOCK_TIMEOUT:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _holder(fd: int) -> str:
    """Who holds the ``flock`` on ``fd``'s file, as far as Linux says
    (``/proc/locks``, ``/proc/PID/stat``): ``process PID (NAME)``, with
    ``, stopped`` for a stopped process; else ``another process``."""
    try:
        st = os.fstat(fd)
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            rows = f.read().splitlines()
    except OSError:
        return "another process"
    for row in rows:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" (waiters' rows start "1: ->")
        fields = row.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        dev = fields[5].split(":")
        try:
            pid = int(fields[4])
            ident = (int(dev[0], 16), int(dev[1], 16), int(dev[2]))
        except (ValueError, IndexError):
            continue
        if pid > 0 and ident == (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino):
            return _describe(pid)
    return "another process"


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return f"process {pid}"
    name = stat[stat.find(b"(") + 1:stat.rfind(b")")].decode("utf-8", "replace")
    state = stat[stat.rfind(b")") + 2:][:1]
    return f"process {pid} ({name}{', stopped' if state in (b'T', b't') else ''})"


def _means_corrupt(e: sqlite3.Error) -> bool:
    """An OperationalError that says the file is not a usable database."""
    text = str(e).lower()
    return any(w in text for w in ("malformed", "not a database", "file is encrypted", "corrupt"))


@contextlib.contextmanager
def open_index(index: Index | None) -> Iterator[Index]:
    """``index``, or an :class:`Index` opened (and closed) for the block."""
    if index is not None:
        yield index
        return
    own = Index()
    try:
        yield own
    finally:
        own.close()
