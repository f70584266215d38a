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

Content digests come from the index (:mod:`ctxpack.index.store`) whenever a file's
stat facts are unchanged, so a warm fingerprint reads no file content.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import xxhash

from ctxpack.index.store import Index, Snapshot, SnapshotEntry
from ctxpack.context import BuildContext
from ctxpack.index.digest import hash_many
from ctxpack.walker import Entry, EntryKind, entries_for_builder

__all__ = ["Fingerprint", "fingerprint", "snapshot", "diff", "Delta", "Change", "RECIPE"]

RECIPE = "ctxpack-fp1"
_KIND = {
    EntryKind.FILE: "f", EntryKind.HARDLINK: "f", EntryKind.DIR: "d", EntryKind.SYMLINK: "l",
    EntryKind.FIFO: "p", EntryKind.CHAR: "c", EntryKind.BLOCK: "b",
}
OUTSIDE_DOCKERFILE = "<dockerfile>"


@dataclass
class Fingerprint:
    """A fingerprint and what it took: ``hashed`` files were read this run."""

    fingerprint: str
    entries: int = 0
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    elapsed: float = 0.0
    records: list[tuple[str, str, int, int, str]] = field(default_factory=list, repr=False)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint, "entries": self.entries, "files": self.files, "bytes": self.bytes,
            "hashed": self.hashed, "hashed_bytes": self.hashed_bytes,
        }


def _context_entries(ctx: BuildContext) -> Iterator[Entry]:
    """Everything the fingerprint covers, in walk order."""
    for e in entries_for_builder(ctx):
        if e.data is not None:
            if e.stat is None:
                continue  # synthesised by the classic CLI; the outside Dockerfile is added below
            e = Entry(e.path, EntryKind.FILE, e.stat)  # .dockerignore as the context has it
        yield e
    if ctx.dockerfile_data is not None:
        yield Entry(OUTSIDE_DOCKERFILE, EntryKind.FILE, None, forced=True, data=ctx.dockerfile_data)


def _variant(ctx: BuildContext) -> str:
    return f"{ctx.dialect.value}|{ctx.dockerfile_path or '-'}|{ctx.ignore_source or '-'}"


# A record: (path, kind, mode, size, value) — see the module docstring.
Record = tuple[str, str, int, int, str]


def _records(ctx: BuildContext, index: Index, *, workers: int | None = None) -> Fingerprint:
    started = time.monotonic()
    cid = index.context_id(ctx.root)
    known = index.load(cid)
    fp = Fingerprint("")
    records: dict[str, Record] = {}
    pending: list[str] = []
    for e in _context_entries(ctx):
        kind = _KIND[e.kind]
        if e.data is not None:
            records[e.path] = (e.path, "f", 0o600, len(e.data), _xxh(e.data))
            continue
        s = e.stat
        assert s is not None
        mode = s.st_mode & 0o7777
        if kind == "f":
            hit = known.get(e.path)
            if hit is not None and hit[0] == (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode):
                records[e.path] = (e.path, "f", mode, s.st_size, hit[1])
            else:
                pending.append(e.path)
                records[e.path] = (e.path, "f", mode, s.st_size, "")
        elif kind == "l":
            records[e.path] = (e.path, "l", mode, 0, e.link or "")
        elif kind in "cb":
            records[e.path] = (e.path, kind, mode, 0, f"{os.major(s.st_rdev)},{os.minor(s.st_rdev)}")
        else:
            records[e.path] = (e.path, kind, mode, 0, "")
    # Hash what the index could not vouch for, in parallel.
    changed: list[tuple[str, tuple[int, int, int, int, int], str]] = []
    for r in hash_many(ctx.root, pending, workers=workers):
        if isinstance(r, tuple):
            records.pop(r[0], None)  # vanished since the walk: not in the context
            fp.notes.append(f"{r[0]}: vanished while fingerprinting")
            continue
        records[r.path] = (r.path, "f", r.key[4] & 0o7777, r.size, r.digest)
        fp.hashed += 1
        fp.hashed_bytes += r.size
        changed.append((r.path, r.key, r.digest))
    removed = [p for p in known if p not in records]
    if changed or removed:
        index.update(cid, changed, removed)
    values = list(records.values())
    if all(r[0].isascii() for r in values):
        ordered = sorted(values)  # ASCII: string order is byte order
    else:
        ordered = sorted(values, key=_path_key)
    h = hashlib.sha256(RECIPE.encode() + b"\n")
    text = "".join(f"{p}\0{k}\0{m:o}\0{v}\n" for p, k, m, _, v in ordered)
    h.update(text.encode("utf-8", "surrogateescape"))
    fp.entries = len(ordered)
    sizes = [size for _, k, _, size, _ in ordered if k == "f"]
    fp.files = len(sizes)
    fp.bytes = sum(sizes)
    fp.fingerprint = h.hexdigest()
    fp.records = ordered
    fp.elapsed = time.monotonic() - started
    if index.recovered:
        fp.notes.append(index.recovered)
    return fp


def _path_key(r: Record) -> bytes:
    return r[0].encode("utf-8", "surrogateescape")


def _xxh(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def fingerprint(ctx: BuildContext, index: Index | None = None, *, workers: int | None = None) -> Fingerprint:
    """Fingerprint ``ctx``, reusing and refreshing the index."""
    own = index is None
    index = index or Index()
    try:
        return _records(ctx, index, workers=workers)
    finally:
        if own:
            index.close()


def snapshot(ctx: BuildContext, index: Index | None = None) -> Fingerprint:
    """Fingerprint ``ctx`` and record its entries as the last snapshot."""
    own = index is None
    index = index or Index()
    try:
        fp = _records(ctx, index)
        index.save_snapshot(index.context_id(ctx.root), _variant(ctx), fp.fingerprint, (SnapshotEntry(*r) for r in fp.records))
        return fp
    finally:
        if own:
            index.close()


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


def diff(ctx: BuildContext, index: Index | None = None) -> Delta | None:
    """What changed since the last snapshot of this context (``None``: no snapshot)."""
    own = index is None
    index = index or Index()
    try:
        snap: Snapshot | None = index.load_snapshot(index.context_id(ctx.root), _variant(ctx))
        if snap is None:
            return None
        fp = _records(ctx, index)
    finally:
        if own:
            index.close()
    now = {r[0]: SnapshotEntry(*r) for r in fp.records}
    added = [Change(p, r.size) for p, r in now.items() if p not in snap.entries]
    removed = [Change(p, r.size) for p, r in snap.entries.items() if p not in now]
    modified = []
    for p, r in now.items():
        old = snap.entries.get(p)
        if old is None:
            continue
        if old.kind != r.kind:
            modified.append(Change(p, r.size, "type"))
        elif old.digest != r.digest:
            modified.append(Change(p, r.size, "link" if r.kind == "l" else "content"))
        elif old.mode != r.mode:
            modified.append(Change(p, r.size, "mode"))
    return Delta(snap.taken_at, added, removed, modified, fp.fingerprint, snap.fingerprint)

