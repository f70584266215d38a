"""The persistent index: stat facts and digests per context, and snapshots.

One SQLite database outside every context (``$CTXPACK_CACHE_DIR``, else
``$XDG_CACHE_HOME/ctxpack``, else ``~/.cache/ctxpack``), keyed by the
context's absolute path.  SQLite gives what the index must never lose:
atomic transactions (a crash or Ctrl-C leaves the previous state), WAL mode
so concurrent ctxpack processes read while one writes, and a busy timeout
instead of "database is locked".  A file that is not our database (corrupt,
truncated, foreign) is moved aside and rebuilt, never trusted.  Contexts not
used for ``PRUNE_AFTER`` seconds are dropped on open, so the cache stays
bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ctxpack.errors import OutputError
from ctxpack.index.digest import StatKey

__all__ = ["cache_dir", "Index", "CacheInfo", "Snapshot", "SnapshotEntry"]

APPLICATION_ID = 0x63747870  # "ctxp"
SCHEMA_VERSION = 1
PRUNE_AFTER = 30 * 24 * 3600
DB_NAME = "index.sqlite3"


def cache_dir() -> str:
    """Where the index lives (created on demand)."""
    explicit = os.environ.get("CTXPACK_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctxpack")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    id INTEGER PRIMARY KEY,
    root TEXT NOT NULL UNIQUE,
    last_used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    path BLOB NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, mode INTEGER NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (ctx, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    ctx INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    taken_at REAL NOT NULL,
    fingerprint TEXT NOT NULL,
    entries BLOB NOT NULL,
    PRIMARY KEY (ctx, variant)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class SnapshotEntry:
    """One entry as a snapshot records it."""

    path: str
    kind: str
    mode: int
    size: int
    digest: str  # content digest, link target, or "" for directories


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    fingerprint: str
    entries: dict[str, SnapshotEntry]


@dataclass(frozen=True)
class CacheInfo:
    path: str
    bytes: int
    contexts: int
    files: int
    snapshots: int


def _enc(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class Index:
    """The index database; use as a context manager."""

    def __init__(self, directory: str | None = None, *, now: float | None = None):
        self.dir = directory or cache_dir()
        self.path = os.path.join(self.dir, DB_NAME)
        self.now = time.time() if now is None else now
        self.recovered: str | None = None
        try:
            os.makedirs(self.dir, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create cache directory {self.dir}: {e.strerror}") from None
        self.db = self._open()

    # -- opening, validation, recovery ------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 30000")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            self._check_or_init(db)
            return db
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(Exception):
                db.close()
            return self._rebuild(str(e))

    def _check_or_init(self, db: sqlite3.Connection) -> None:
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id == 0 and not tables:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("BEGIN IMMEDIATE")
            # Re-check under the write lock: another process may have won the race.
            if db.execute("PRAGMA application_id").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
            return
        if app_id != APPLICATION_ID:
            raise sqlite3.DatabaseError(f"not a ctxpack index (application_id {app_id:#x})")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError("index from another ctxpack version")
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("index failed its integrity check")

    def _rebuild(self, why: str) -> sqlite3.Connection:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = f"{self.path}.broken-{stamp}-{os.getpid()}"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        self.recovered = f"the index at {self.path} was unusable ({why}); moved to {aside} and rebuilt"
        db = self._connect()
        self._check_or_init(db)
        return db

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- contexts ------------------------------------------------------------------
    def context_id(self, root: str) -> int:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO contexts(root, last_used) VALUES (?, ?) "
                "ON CONFLICT(root) DO UPDATE SET last_used = excluded.last_used",
                (root, self.now),
            )
            db.execute("DELETE FROM contexts WHERE last_used < ?", (self.now - PRUNE_AFTER,))
            return int(db.execute("SELECT id FROM contexts WHERE root = ?", (root,)).fetchone()[0])

    # -- file digests ----------------------------------------------------------------
    def load(self, ctx: int) -> dict[str, tuple[StatKey, str]]:
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, ctime_ns, inode, mode, digest FROM files WHERE ctx = ?", (ctx,)
        )
        return {
            p.decode("utf-8", "surrogateescape"): ((s, m, c, i, mo), d) for p, s, m, c, i, mo, d in rows
        }

    def update(self, ctx: int, changed: Iterable[tuple[str, StatKey, str]], removed: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((ctx, _enc(p), *key, d) for p, key, d in changed),
            )
            db.executemany("DELETE FROM files WHERE ctx = ? AND path = ?", ((ctx, _enc(p)) for p in removed))

    # -- snapshots -----------------------------------------------------------------------
    def save_snapshot(self, ctx: int, variant: str, fingerprint: str, entries: Iterable[SnapshotEntry]) -> None:
        blob = json.dumps(
            [[e.path, e.kind, e.mode, e.size, e.digest] for e in entries], ensure_ascii=True, separators=(",", ":")
        ).encode()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)", (ctx, variant, self.now, fingerprint, blob)
            )

    def load_snapshot(self, ctx: int, variant: str) -> Snapshot | None:
        row = self.db.execute(
            "SELECT taken_at, fingerprint, entries FROM snapshots WHERE ctx = ? AND variant = ?", (ctx, variant)
        ).fetchone()
        if row is None:
            return None
        items = json.loads(row[2])
        return Snapshot(row[0], row[1], {p: SnapshotEntry(p, k, m, s, d) for p, k, m, s, d in items})

    # -- maintenance ---------------------------------------------------------------------
    def info(self) -> CacheInfo:
        size = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(self.path + suffix)
        q = self.db.execute
        return CacheInfo(
            self.path,
            size,
            q("SELECT count(*) FROM contexts").fetchone()[0],
            q("SELECT count(*) FROM files").fetchone()[0],
            q("SELECT count(*) FROM snapshots").fetchone()[0],
        )

    def clear(self) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots")
            db.execute("DELETE FROM files")
            db.execute("DELETE FROM contexts")
        self.db.execute("VACUUM")
