"""Fingerprints, snapshots and deltas of a build context.

The fingerprint is one digest of exactly what the build context contains:
paths, entry types, mode bits, link targets and content digests — not mtimes,
not ownership, not directory listing order.  Recipe (stable; documented in
docs/fingerprint.md so other tools can reproduce it):

* take the entries the dialect sends (``ctxpack ls``), plus the Dockerfile
  when the builder needs it but the rules exclude it (BuildKit) or it lives
  outside the context (recorded under the name ``<dockerfile>``);
* a hard link counts as the file it names (a fresh clone has no hard links);
* sort them by the UTF-8 bytes of their path;
* for each, the record ``path NUL kind NUL mode-octal NUL value LF`` where
  ``kind`` is ``f`` (file), ``d`` (dir), ``l`` (symlink), ``p`` (fifo), ``c``
  / ``b`` (devices), ``mode-octal`` is ``st_mode & 0o7777`` in octal, and
  ``value`` is the XXH3-128 hex digest of the content for files, the link
  target for symlinks, ``major,minor`` for devices, and empty otherwise;
* the fingerprint is the SHA-256 hex digest of the records, prefixed with the
  recipe version: ``ctxpack-fp1\\n``.

How a run goes (:func:`_run`), cheapest first:

* **warm**: the index holds this context's last state (:mod:`ctxpack.index.state`)
  for the same rules; every path in it is statted and, when all stat keys
  are as stored, the stored fingerprint is the answer: no walk, no matching,
  no file read, nothing written;
* **files changed in place** (keys differ only for regular files that are
  still regular files): only those are read again, and the records rebuilt;
* **walk**: anything else (a directory changed, no state yet, other rules).
  The walk runs in a forked process (:func:`ctxpack.tar.rows.row_batches`,
  as for ``pack``) while this one reads and hashes the files it sends, each
  digest reused from the index when its stat key is unchanged.  Small files
  are read whole through their directory's descriptor; large ones stream
  on threads.  The new state is written in one transaction.

The state in memory is columns (lists of shared strings and arrays), never
an object per entry.
"""

from __future__ import annotations

import hashlib
import os
import stat as st
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import xxhash

from ctxpack.context import BuildContext
from ctxpack.fs import SMALL_FILE
from ctxpack.index.digest import CHUNK, DirReader, FileDigest, hash_file, hash_workers, stat_key
from ctxpack.index.state import KEY, MISSING, RECIPE, Columns, changed, racy_window
from ctxpack.index.store import Index, Stored, open_index
from ctxpack.tar.rows import can_fork, row_batches
from ctxpack.walker import Entry, EntryKind, entries_for_builder, excluded_dirs_read

__all__ = ["Fingerprint", "fingerprint", "snapshot", "diff", "Delta", "Change", "RECIPE"]

# Bump when what a stored state means changes (not the recipe: that is RECIPE).
STATE_FORMAT = "state-1"
_KIND = {
    EntryKind.FILE: "f", EntryKind.HARDLINK: "f", EntryKind.DIR: "d", EntryKind.SYMLINK: "l",
    EntryKind.FIFO: "p", EntryKind.CHAR: "c", EntryKind.BLOCK: "b",
}
OUTSIDE_DOCKERFILE = "<dockerfile>"

# A row from the walk: (path, kind letter, st_mode, size, mtime_ns, ctime_ns,
# inode, value).  value is None for a regular file still to be digested;
# inode is -1 for an entry with no file behind it (the Dockerfile from
# outside), whose key is then MISSING.
Row = tuple[str, str, int, int, int, int, int, "str | None"]


@dataclass
class Fingerprint:
    """A fingerprint and what it took: ``hashed`` files were read this run.

    ``how`` says which way it went: ``"warm"`` (stat keys only),
    ``"files"`` (changed files re-read), ``"walk"``.  ``records`` yields
    ``(path, kind, mode, size, value)`` in fingerprint order.
    """

    fingerprint: str
    entries: int = 0
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    elapsed: float = 0.0
    how: str = "walk"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _stored: Stored | None = field(default=None, repr=False)
    _columns: Columns | None = field(default=None, repr=False)

    @property
    def records(self) -> list[tuple[str, str, int, int, str]]:
        cols = self._columns
        if cols is None:
            return []
        return list(cols.records())

    def to_json(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint, "entries": self.entries, "files": self.files, "bytes": self.bytes,
            "hashed": self.hashed, "hashed_bytes": self.hashed_bytes,
        }


def _variant(ctx: BuildContext) -> str:
    minimal = "|minimal" if ctx.selection is not None else ""
    return f"{ctx.dialect.value}|{ctx.dockerfile_path or '-'}|{ctx.ignore_source or '-'}{minimal}"


def _config(ctx: BuildContext) -> str:
    """Everything besides the files that decides the entries: the rules,
    the Dockerfile's place (and content, when it travels as data), the
    --minimal selection.  A stored state is used only for the same config."""
    parts = [
        STATE_FORMAT, RECIPE, ctx.dialect.value, ctx.dockerfile or "", ctx.dockerfile_path or "",
        repr(ctx.dockerfile_outside), repr(ctx.dockerfile_stdin), ctx.ignore_source or "",
        repr([(r.pattern, r.source) for r in ctx.rules]), repr(list(ctx.appended)),
        hashlib.sha256(ctx.dockerfile_data).hexdigest() if ctx.dockerfile_data is not None else "-",
        repr(ctx.selection.patterns) if ctx.selection is not None else "-",
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _entry_row(e: Entry) -> Row | None:
    """An entry as the fingerprint covers it (``None``: not covered)."""
    if e.data is not None:
        if e.stat is None:
            return None  # synthesised by the classic CLI; the outside Dockerfile is added at the end
        e = Entry(e.path, EntryKind.FILE, e.stat)  # .dockerignore as the context has it
    s = e.stat
    assert s is not None
    kind = _KIND[e.kind]
    if kind == "f":
        value: str | None = None
    elif kind == "l":
        value = e.link or ""
    elif kind in "cb":
        value = f"{os.major(s.st_rdev)},{os.minor(s.st_rdev)}"
    else:
        value = ""
    return (e.path, kind, s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, value)


def _outside_row(ctx: BuildContext) -> Row | None:
    data = ctx.dockerfile_data
    if data is None:
        return None
    return (OUTSIDE_DOCKERFILE, "f", st.S_IFREG | 0o600, len(data), -1, -1, -1, xxhash.xxh3_128_hexdigest(data))


def _rows(ctx: BuildContext) -> Iterator[Row]:
    """What the fingerprint covers, in walk order (run in the walker process)."""
    for e in entries_for_builder(ctx):
        row = _entry_row(e)
        if row is not None:
            yield row
    extra = _outside_row(ctx)
    if extra is not None:
        yield extra


def _batches(rows: Iterable[Row], size: int = 256) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Walk:
    """One walk's entries as columns in walk order, digests filled in."""

    def __init__(self, ctx: BuildContext, old: Columns | None, workers: int | None):
        self.root = ctx.root
        self.paths: list[str] = []
        self.kinds: list[str] = []
        self.modes = array("l")
        self.sizes = array("q")
        self.values: list[str | None] = []
        self.keys = array("q")
        self.hashed = 0
        self.hashed_bytes = 0
        self.notes: list[str] = []
        self.old = old
        self.old_pos = {p: i for i, p in enumerate(old.paths[:old.entries])} if old is not None and old.entries else None
        self.workers = hash_workers() if workers is None else max(1, workers)
        self._pool = None
        self._large: list[tuple[int, object]] = []

    def add(self, batches: Iterable[list[Row]]) -> None:
        paths, kinds, modes, sizes, values, keys = self.paths, self.kinds, self.modes, self.sizes, self.values, self.keys
        reader = DirReader(self.root)
        old = self.old
        old_pos = self.old_pos
        okeys = old.keys if old is not None else None
        ovalues = old.values if old is not None else None
        okinds = old.kinds if old is not None else ""
        prefix = self.root.rstrip("/") + "/"
        try:
            for batch in batches:
                for path, kind, mode, size, mtime, ctime, ino, value in batch:
                    if value is None:
                        j = old_pos.get(path) if old_pos is not None else None
                        if (j is not None and okinds[j] == "f" and okeys[KEY * j] == size  # type: ignore[index]
                                and okeys[KEY * j + 1] == mtime and okeys[KEY * j + 2] == ctime  # type: ignore[index]
                                and okeys[KEY * j + 3] == ino and okeys[KEY * j + 4] == mode):  # type: ignore[index]
                            value = ovalues[j]  # type: ignore[index]
                        elif size >= CHUNK and self.workers > 1:
                            self._submit(len(paths), prefix + path, path)
                            value = ""
                        else:
                            if size <= SMALL_FILE:
                                value = reader.digest(path, size, mtime, ctime, ino, mode)
                            if value is None:
                                d = hash_file(prefix + path, path)
                                if d is None:
                                    self.notes.append(f"{path}: vanished while fingerprinting")
                                    continue
                                value = d.digest
                                size, mtime, ctime, ino, mode = d.key
                            self.hashed += 1
                            self.hashed_bytes += size
                    paths.append(path)
                    kinds.append(kind)
                    modes.append(mode & 0o7777)
                    sizes.append(size)
                    values.append(value)
                    if ino < 0:
                        keys.extend(MISSING)
                    else:
                        keys.extend((size, mtime, ctime, ino, mode))
        finally:
            reader.close()

    def _submit(self, slot: int, abspath: str, rel: str) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: its import costs ~10 ms of every start-up

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ctxpack-hash")
        self._large.append((slot, self._pool.submit(hash_file, abspath, rel)))  # type: ignore[attr-defined]

    def finish(self) -> None:
        """Wait for the large files; drop those that vanished."""
        gone: list[int] = []
        try:
            for slot, fut in self._large:
                d: FileDigest | None = fut.result()  # type: ignore[attr-defined]
                if d is None:
                    gone.append(slot)
                    self.notes.append(f"{self.paths[slot]}: vanished while fingerprinting")
                    continue
                self.values[slot] = d.digest
                self.sizes[slot] = d.size
                self.modes[slot] = d.key[4] & 0o7777
                self.keys[KEY * slot:KEY * slot + KEY] = array("q", d.key)
                self.hashed += 1
                self.hashed_bytes += d.size
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)  # type: ignore[attr-defined]
        for slot in gone:
            self.values[slot] = None  # dropped in columns()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # type: ignore[attr-defined]

    def columns(self, extra: list[str], extra_keys: array) -> Columns:
        """The entries in fingerprint order (last one wins for a path met
        twice), then ``extra``."""
        paths = self.paths
        if all(map(str.isascii, paths)):
            order = sorted(range(len(paths)), key=paths.__getitem__)  # ASCII: string order is byte order
        else:
            order = sorted(range(len(paths)), key=lambda i: paths[i].encode("utf-8", "surrogateescape"))
        kinds, modes, sizes, values, keys = self.kinds, self.modes, self.sizes, self.values, self.keys
        c = Columns()
        out_kinds: list[str] = []
        for n, i in enumerate(order):
            if values[i] is None:
                continue
            if n + 1 < len(order) and paths[order[n + 1]] == paths[i]:
                continue  # met again later: the later one counts
            c.paths.append(paths[i])
            out_kinds.append(kinds[i])
            c.modes.append(modes[i])
            c.sizes.append(sizes[i])
            c.values.append(values[i])  # type: ignore[arg-type]
            c.keys.extend(keys[KEY * i:KEY * i + KEY])
        c.kinds = "".join(out_kinds)
        c.paths.extend(extra)
        c.keys.extend(extra_keys)
        return c


def _stat_keys(root: str, rels: list[str]) -> array:
    out = array("q")
    for rel in rels:
        try:
            out.extend(stat_key(os.lstat(os.path.join(root, rel) if rel else root)))
        except OSError:
            out.extend(MISSING)
    return out


def _checkable(cols: Columns, started_ns: int) -> bool:
    """No directory of the state changed so recently that a change in the
    same clock tick could hide (see :mod:`ctxpack.index.state`)."""
    keys, kinds = cols.keys, cols.kinds
    n = cols.entries
    for i in range(len(cols.paths)):
        if i < n and kinds[i] != "d":
            continue
        mtime, ctime = keys[KEY * i + 1], keys[KEY * i + 2]
        if mtime < 0:
            continue  # did not exist
        if max(mtime, ctime) >= started_ns - racy_window(mtime, ctime):
            return False
    return True


def _stored(cols: Columns, config: str, fingerprint: str, checkable: bool, variant: str) -> Stored:
    files, total = cols.totals()
    paths, keys, records = cols.encode()
    return Stored(variant, config, fingerprint, cols.entries, files, total, checkable, 0.0, paths, keys, records)


def _walk(ctx: BuildContext, index: Index, variant: str, config: str, old: Columns | None,
          entries: Iterable[Entry] | None, workers: int | None, fp: Fingerprint) -> Stored:
    started_ns = time.time_ns()
    # The root and the excluded directories the walker reads are statted
    # before it lists them: a change after this shows as a changed key.
    extra_dirs = excluded_dirs_read(ctx)
    checkable = extra_dirs is not None and entries is None
    extra = [""] + (extra_dirs or [])
    extra_keys = _stat_keys(ctx.root, extra)
    w = _Walk(ctx, old, workers)
    try:
        if entries is not None:
            rows = (r for r in map(_entry_row, entries) if r is not None)
            outside = _outside_row(ctx)
            w.add(_batches(rows if outside is None else _chain(rows, outside)))
        else:
            with row_batches(ctx, fork=can_fork(), rows=_rows) as batches:
                w.add(batches)
        w.finish()
    finally:
        w.close()
    fp.hashed, fp.hashed_bytes = w.hashed, w.hashed_bytes
    fp.notes.extend(w.notes)
    cols = w.columns(extra, extra_keys)
    del w
    checkable = checkable and _checkable(cols, started_ns)
    fingerprint = cols.fingerprint()
    fp._columns = cols
    return _stored(cols, config, fingerprint, checkable, variant)


def _chain(rows: Iterator[Row], last: Row) -> Iterator[Row]:
    yield from rows
    yield last


def _in_place(ctx: BuildContext, cols: Columns, idx: list[int], fp: Fingerprint) -> bool:
    """Re-read the regular files at ``idx`` into ``cols``; False when a
    change is more than that (then the caller walks)."""
    n = cols.entries
    prefix = ctx.root.rstrip("/") + "/"
    for i in idx:
        if i >= n or cols.kinds[i] != "f" or cols.keys[KEY * i + 3] < 0:
            return False
        try:
            s = os.lstat(prefix + cols.paths[i])
        except OSError:
            return False
        if not st.S_ISREG(s.st_mode):
            return False
    for i in idx:
        d = hash_file(prefix + cols.paths[i], cols.paths[i])
        if d is None:
            return False
        cols.values[i] = d.digest
        cols.sizes[i] = d.size
        cols.modes[i] = d.key[4] & 0o7777
        cols.keys[KEY * i:KEY * i + KEY] = array("q", d.key)
        fp.hashed += 1
        fp.hashed_bytes += d.size
    return True


def _run(ctx: BuildContext, index: Index, *, entries: Iterable[Entry] | None = None,
         workers: int | None = None) -> Fingerprint:
    started = time.monotonic()
    fp = Fingerprint("")
    variant = _variant(ctx)
    config = _config(ctx)
    root = ctx.root
    new: Stored | None = None
    stored = index.load_state(root, variant, records=False) if entries is None else None
    if stored is not None and stored.config == config and stored.checkable:
        cols = Columns.decode(stored.paths, b"", b"")
        idx = changed(root, cols.paths, stored.keys)
        if not idx:
            fp.how = "warm"
            new = stored
            index.touch(root)
        else:
            full = index.load_state(root, variant)
            if full is not None and full.config == config:
                cols = Columns.decode(full.paths, full.keys, full.records)
                if len(idx) * 4 < cols.entries + 8 and _in_place(ctx, cols, idx, fp):
                    fp.how = "files"
                    fp._columns = cols
                    new = _stored(cols, config, cols.fingerprint(), True, variant)
                    index.save_state(root, variant, new)
    if new is None:
        old_stored = index.load_state(root, variant, any_variant=True)
        old = Columns.decode(old_stored.paths, old_stored.keys, old_stored.records) if old_stored is not None else None
        fp.hashed = fp.hashed_bytes = 0
        new = _walk(ctx, index, variant, config, old, entries, workers, fp)
        del old
        if (old_stored is None or old_stored.variant != variant or old_stored.config != config
                or old_stored.fingerprint != new.fingerprint or old_stored.checkable != new.checkable
                or old_stored.paths != new.paths or old_stored.keys != new.keys):
            index.save_state(root, variant, new)
        else:
            index.touch(root)
    fp._stored = new
    fp.fingerprint = new.fingerprint
    fp.entries, fp.files, fp.bytes = new.entries, new.files, new.bytes
    fp.elapsed = time.monotonic() - started
    if index.recovered:
        fp.notes.append(index.recovered)
    if index.warning:
        fp.warnings.append(index.warning)
    return fp


def fingerprint(ctx: BuildContext, index: Index | None = None, *, workers: int | None = None,
                entries: Iterable[Entry] | None = None) -> Fingerprint:
    """Fingerprint ``ctx``, reusing and refreshing the index.

    ``index``: an open :class:`~ctxpack.index.store.Index` (default: the
    user's, opened for this call).  ``workers``: threads for large files.

    ``entries`` is the seam for callers that keep the walk warm themselves
    (watch mode): the context's entries exactly as
    :func:`ctxpack.walker.entries_for_builder` yields them, in walk order,
    with their ``lstat``.  Then nothing is walked and no stored state is
    trusted for the listing; digests still come from the index wherever an
    entry's stat key is the stored one, and the rest are read.  The result
    and the state written are those of a walk that saw these entries.
    """
    with open_index(index) as idx:
        return _run(ctx, idx, entries=entries, workers=workers)


def snapshot(ctx: BuildContext, index: Index | None = None, *, entries: Iterable[Entry] | None = None) -> Fingerprint:
    """Fingerprint ``ctx`` and record its entries as the last snapshot
    (``entries``: as for :func:`fingerprint`)."""
    with open_index(index) as idx:
        fp = _run(ctx, idx, entries=entries)
        variant = _variant(ctx)
        prior = idx.load_snapshot(ctx.root, variant, blobs=False)
        if prior is not None and prior.fingerprint == fp.fingerprint:
            idx.save_snapshot(ctx.root, variant, Stored(variant, "", fp.fingerprint, 0, 0, 0, False, 0.0))
            return fp
        s = fp._stored
        assert s is not None
        if not s.records:
            s = idx.load_state(ctx.root, variant) or s
        if s.records and s.fingerprint == fp.fingerprint:
            idx.save_snapshot(ctx.root, variant, s)
        return fp


@dataclass(frozen=True)
class Change:
    path: str
    bytes: int
    what: str = ""  # for modified: "content", "mode", "link", "type"

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"path": self.path, "bytes": self.bytes}
        if self.what:
            d["change"] = self.what
        return d


@dataclass
class Delta:
    since: float | None
    added: list[Change]
    removed: list[Change]
    modified: list[Change]
    fingerprint: str
    previous: str | None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, object]:
        return {
            "since": None if self.since is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "added": [c.to_json() for c in self.added],
            "removed": [c.to_json() for c in self.removed],
            "modified": [c.to_json() for c in self.modified],
        }


def diff(ctx: BuildContext, index: Index | None = None, *, entries: Iterable[Entry] | None = None) -> Delta | None:
    """What changed since the last snapshot of this context (``None``: no
    snapshot; ``entries``: as for :func:`fingerprint`)."""
    with open_index(index) as idx:
        variant = _variant(ctx)
        snap = idx.load_snapshot(ctx.root, variant, blobs=False)
        if snap is None:
            return None
        fp = _run(ctx, idx, entries=entries)
        if snap.fingerprint == fp.fingerprint:
            return Delta(snap.when, [], [], [], fp.fingerprint, snap.fingerprint)
        snap = idx.load_snapshot(ctx.root, variant)
        now = fp._columns
        if now is None or not now.values:
            s = idx.load_state(ctx.root, variant)
            now = Columns.decode(s.paths, b"", s.records) if s is not None else Columns()
    assert snap is not None
    then = Columns.decode(snap.paths, b"", snap.records)
    before = {p: i for i, p in enumerate(then.paths[:then.entries])}
    added, modified = [], []
    seen: set[str] = set()
    for i, (p, kind, mode, size, value) in enumerate(now.records()):
        seen.add(p)
        j = before.get(p)
        if j is None:
            added.append(Change(p, size))
        elif then.kinds[j] != kind:
            modified.append(Change(p, size, "type"))
        elif then.values[j] != value:
            modified.append(Change(p, size, "link" if kind == "l" else "content"))
        elif then.modes[j] != mode:
            modified.append(Change(p, size, "mode"))
    removed = [Change(p, s) for p, _, _, s, _ in then.records() if p not in seen]
    return Delta(snap.when, added, removed, modified, fp.fingerprint, snap.fingerprint)
