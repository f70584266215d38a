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
  digest reused from the index when its stat key is unchanged (the stored
  state is read a part at a time as the walk reaches it).  Small files are
  read whole through their directory's descriptor; large ones stream on
  threads.  Each batch of entries goes at once to a temporary on-disk sort
  (:mod:`ctxpack.index.sorter`) and is read back in fingerprint order,
  part by part, to be hashed and written, in one transaction.

Nothing is held per entry of the context: memory is one part of
:data:`~ctxpack.index.state.PART` entries at a time (columns: lists of
shared strings and arrays), the sort's page cache, and the first path of
each stored part.
"""

from __future__ import annotations

import bisect
import hashlib
import marshal
import os
import stat as st
import time
from array import array
from collections import deque
from typing import IO, TYPE_CHECKING, Any
from collections.abc import Iterable, Iterator

import xxhash

from ctxpack.context import BuildContext
from ctxpack.errors import OutputError
from ctxpack.fs import SMALL_FILE
from ctxpack.index.results import Change, Delta, Fingerprint
from ctxpack.index.digest import CHUNK, DirReader, FileDigest, hash_file, hash_workers, stat_key
from ctxpack.index.sorter import Reorder
from ctxpack.index.sorter import Row as SortRow
from ctxpack.index.state import COARSE_WINDOW_NS, KEY, MISSING, PART, RECIPE, Columns, RecordHash, changed, racy_window
from ctxpack.index.store import Index, IndexUnavailable, Part, Stored, open_index
from ctxpack.tar.rows import can_fork, row_batches
from ctxpack.walker import Entry, EntryKind, entries_for_builder, excluded_dirs_read

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["Fingerprint", "fingerprint", "snapshot", "record_snapshot", "diff", "Delta", "Change", "RECIPE"]

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


def _variant(ctx: BuildContext) -> str:
    minimal = "|minimal" if ctx.selection is not None else ""
    return f"{ctx.dialect.value}|{ctx.dockerfile_path or '-'}|{ctx.ignore_source or '-'}{minimal}"


def _variant_parts(variant: str) -> tuple[str, str, bool]:
    """:func:`_variant` read back: (dialect, Dockerfile path or ``-``,
    minimal).  (A ``|`` in the ignore file's path would shift the split;
    the result is then only a hint that names no existing Dockerfile.)"""
    minimal = variant.endswith("|minimal")
    dialect, _, rest = variant.removesuffix("|minimal").partition("|")
    return dialect, rest.rpartition("|")[0], minimal


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
    """One walk: each entry, its digest reused or read, goes to a
    :class:`~ctxpack.index.sorter.Reorder` as its batch comes, which
    releases it in fingerprint order to a temporary file of encoded parts
    (nothing per entry is kept here).  Large files hash on threads, a few at
    a time; their rows wait in the window until their digests are in."""

    def __init__(self, ctx: BuildContext, old: _Old, workers: int | None):
        self.root = ctx.root
        self.hashed = 0
        self.hashed_bytes = 0
        self.notes: list[str] = []
        self.old = old
        self.workers = hash_workers() if workers is None else max(1, workers)
        self._pool: ThreadPoolExecutor | None = None
        self._large: deque[tuple[list[Any], Future[FileDigest | None]]] = deque()
        self.parts = _PartFile()
        self.order = Reorder(ctx.root, self.parts.add)
        self._seq = 0

    def add(self, batches: Iterable[list[Row]]) -> None:
        reader = DirReader(self.root)
        get = self.old.get
        prefix = self.root.rstrip("/") + "/"
        order = self.order
        in_flight = 4 * self.workers
        seq = self._seq
        try:
            for batch in batches:
                out: list[SortRow] = []
                for path, kind, mode, size, mtime, ctime, ino, value in batch:
                    key = path.encode("utf-8", "surrogateescape")
                    seq += 1
                    if value is None:
                        # A regular file: 16 raw digest bytes, reused when the
                        # stat key is the stored one, else read.
                        hit = get(key)
                        digest: bytes | None
                        if hit is not None and hit[0] == (size, mtime, ctime, ino, mode):
                            digest = hit[1]
                        elif size >= CHUNK and self.workers > 1:
                            row = [key, seq, "f", mode & 0o7777, size, mtime, ctime, ino, mode, None]
                            self._submit(row, prefix + path, path)
                            out.append(row)  # filled in when its thread is done
                            continue
                        else:
                            digest = reader.digest(path, size, mtime, ctime, ino, mode) if size <= SMALL_FILE else None
                            if digest is None:
                                d = hash_file(prefix + path, path)
                                if d is None:
                                    self.notes.append(f"{path}: vanished while fingerprinting")
                                    continue
                                digest = bytes.fromhex(d.digest)
                                size, mtime, ctime, ino, mode = d.key
                            self.hashed += 1
                            self.hashed_bytes += size
                        out.append((key, seq, "f", mode & 0o7777, size, mtime, ctime, ino, mode, digest))
                    elif kind == "f":  # the Dockerfile from outside: digested by the walker
                        out.append((key, seq, kind, mode & 0o7777, size, mtime, ctime, ino, mode, bytes.fromhex(value)))
                    else:
                        out.append((key, seq, kind, mode & 0o7777, size, mtime, ctime, ino, mode,
                                    value.encode("utf-8", "surrogateescape")))
                order.add(out)
                while len(self._large) > in_flight:
                    self._reap()
                if order.full():
                    self.finish()  # no row leaves the window without its digest
                    order.release()
        finally:
            self._seq = seq
            reader.close()

    def _submit(self, row: list[Any], abspath: str, rel: str) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # here: its import costs ~10 ms of every start-up

            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ctxpack-hash")
        self._large.append((row, self._pool.submit(hash_file, abspath, rel)))

    def _reap(self) -> None:
        """The oldest large file's digest into its row (``None``: vanished)."""
        row, fut = self._large.popleft()
        d = fut.result()
        if d is None:
            self.notes.append(f"{row[0].decode('utf-8', 'surrogateescape')}: vanished while fingerprinting")
            return
        row[9] = bytes.fromhex(d.digest)
        row[4], row[5], row[6], row[7], row[8] = d.key
        row[3] = d.key[4] & 0o7777
        self.hashed += 1
        self.hashed_bytes += d.size

    def finish(self) -> None:
        """Wait for the large files in flight."""
        while self._large:
            self._reap()

    def done(self) -> None:
        """The walk is over: release the rest."""
        self.finish()
        self.order.release(final=True)
        self.parts.flush()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.order.close()
        self.parts.close()

    def sorted_parts(self, hasher: RecordHash, totals: list[int]) -> Iterator[tuple[Columns, Part]]:
        """The entries in fingerprint order, about :data:`PART` at a time
        (the released parts, with the rows the sorter holds merged in), each
        added to ``hasher`` and to ``totals`` (entries, files, bytes)."""
        late = self.order.sorter
        pending = late.rows() if late.count else iter(())
        nxt = next(pending, None)
        for c, seqs, blobs in self.parts.read():
            if nxt is not None and nxt[0] <= _bytes_key(c.paths[-1]):
                merged, nxt = _merge(c, seqs, nxt, pending)
                yield _done(merged, hasher, totals), merged.encode()
            else:
                yield _done(c, hasher, totals), blobs
        while nxt is not None:  # after the last released row
            rest: list[Any] = []
            while nxt is not None and len(rest) < PART:
                rest.append(nxt)
                nxt = next(pending, None)
            c = _columns(rest)
            yield _done(c, hasher, totals), c.encode()


def _done(c: Columns, hasher: RecordHash, totals: list[int]) -> Columns:
    hasher.add(c)
    files, size = c.totals()
    totals[0] += c.entries
    totals[1] += files
    totals[2] += size
    return c


def _columns(rows: Iterable[SortRow]) -> Columns:
    """Rows of the sorter's layout as columns (the values as the records have them)."""
    c = Columns()
    kinds: list[str] = []
    paths, modes, sizes, values, keys = c.paths, c.modes, c.sizes, c.values, c.keys
    for key, _, kind, mode, size, mtime, ctime, ino, st_mode, value in rows:
        paths.append(key.decode("utf-8", "surrogateescape"))
        kinds.append(kind)
        modes.append(mode)
        sizes.append(size)
        values.append(value.hex() if kind == "f" else value.decode("utf-8", "surrogateescape"))
        keys.extend(MISSING if ino < 0 else (size, mtime, ctime, ino, st_mode))
    c.kinds = "".join(kinds)
    return c


def _merge(c: Columns, seqs: array[int], nxt: tuple[Any, ...] | None,
           pending: Iterator[tuple[Any, ...]]) -> tuple[Columns, tuple[Any, ...] | None]:
    """A released part with the sorter's rows up to its last path merged in
    (of two rows for one path, the later of the walk counts); and the
    sorter's next row."""
    out = Columns()
    kinds: list[str] = []
    last = _bytes_key(c.paths[-1])

    def take(i: int) -> None:
        out.paths.append(c.paths[i])
        kinds.append(c.kinds[i])
        out.modes.append(c.modes[i])
        out.sizes.append(c.sizes[i])
        out.values.append(c.values[i])
        out.keys.extend(c.keys[KEY * i:KEY * i + KEY])

    def put(row: tuple[Any, ...]) -> None:
        one = _columns([row])
        out.paths.append(one.paths[0])
        kinds.append(one.kinds)
        out.modes.extend(one.modes)
        out.sizes.extend(one.sizes)
        out.values.append(one.values[0])
        out.keys.extend(one.keys)

    i, n = 0, c.entries
    key_i = _bytes_key(c.paths[0])
    while i < n or (nxt is not None and nxt[0] <= last):
        if nxt is None or nxt[0] > last or (i < n and key_i < nxt[0]):
            take(i)
        elif i < n and key_i == nxt[0]:
            if nxt[1] > seqs[i]:
                put(nxt)
            else:
                take(i)
            nxt = next(pending, None)
        else:
            put(nxt)
            nxt = next(pending, None)
            continue
        i += 1
        if i < n:
            key_i = _bytes_key(c.paths[i])
    out.kinds = "".join(kinds)
    return out, nxt


class _PartFile:
    """Released rows as encoded parts of :data:`PART` entries in an
    unlinked temporary file, read back once the walk is over (so that the
    index's write lock is taken only for writing them, not for the walk)."""

    def __init__(self) -> None:
        self._file: IO[bytes] | None = None
        self._rows: list[SortRow] = []

    def add(self, rows: list[SortRow]) -> None:
        self._rows += rows
        while len(self._rows) >= PART:
            self._write(self._rows[:PART])
            del self._rows[:PART]

    def flush(self) -> None:
        if self._rows:
            self._write(self._rows)
            self._rows = []

    def _write(self, rows: list[SortRow]) -> None:
        if self._file is None:
            import tempfile

            self._file = tempfile.TemporaryFile(prefix="ctxpack-fp-")
        seqs = array("q", [r[1] for r in rows])
        blob = marshal.dumps((*_columns(rows).encode(), seqs.tobytes()))
        try:
            self._file.write(len(blob).to_bytes(8, "little") + blob)
        except OSError as e:
            raise OutputError(f"cannot write the fingerprint's parts to a temporary file ({e.strerror}); "
                              "point TMPDIR at a directory with room") from None

    def read(self) -> Iterator[tuple[Columns, array[int], Part]]:
        """Each part: its columns, the walk's place of each entry, its blobs."""
        f = self._file
        if f is None:
            return
        f.flush()
        f.seek(0)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return
            paths, keys, records, seq_bytes = marshal.loads(f.read(int.from_bytes(head, "little")))
            seqs = array("q")
            seqs.frombytes(seq_bytes)
            yield Columns.decode(paths, keys, records), seqs, (paths, keys, records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _stat_keys(root: str, rels: list[str]) -> array[int]:
    out = array("q")
    for rel in rels:
        try:
            out.extend(stat_key(os.lstat(os.path.join(root, rel) if rel else root)))
        except OSError:
            out.extend(MISSING)
    return out


def _racy(c: Columns, started_ns: int, *, extra: bool = False) -> bool:
    """Whether a directory in ``c`` changed so recently that a change in
    the same clock tick could hide (see :mod:`ctxpack.index.state`); with
    ``extra`` every path counts as a directory."""
    keys, kinds = c.keys, c.kinds
    for i in range(len(c.paths)):
        if not extra and kinds[i] != "d":
            continue
        mtime, ctime = keys[KEY * i + 1], keys[KEY * i + 2]
        if mtime < 0:
            continue  # did not exist
        if max(mtime, ctime) >= started_ns - racy_window(mtime, ctime):
            return True
    return False


class _Old:
    """The stored state's regular files, for a walk to reuse their digests.

    Read a part at a time as the walk reaches it, never the whole state:
    what is kept for all of it is the first path of each part (one in
    :data:`PART`); a few decoded parts are kept (:attr:`KEEP`), since the
    walk comes in nearly fingerprint order.  Parts are read outside any
    transaction: another process may replace the state meanwhile, which
    can only cost a miss (a stored digest is good for its stat key in any
    version of the state).
    """

    KEEP = 4

    def __init__(self, index: Index | None = None, root: str = "", variant: str = "", firsts: list[bytes] | None = None):
        self.index = index
        self.root = root
        self.variant = variant
        self.firsts = firsts or []
        # part number -> (path keys, stat keys, raw digests) of its regular files
        self._parts: dict[int, tuple[list[bytes], array[int], bytes]] = {}
        self._at = (-1, 0)  # (part, slot) after the last hit

    def get(self, key: bytes) -> tuple[tuple[int, ...], bytes] | None:
        """The stored stat key and raw digest of the file at path ``key``."""
        if not self.firsts:
            return None
        n, j = self._at
        part = self._parts.get(n)
        if part is None or j >= len(part[0]) or part[0][j] != key:
            n = bisect.bisect_right(self.firsts, key) - 1
            if n < 0:
                return None
            part = self._part(n)
            if part is None:
                return None
            j = bisect.bisect_left(part[0], key)
            if j >= len(part[0]) or part[0][j] != key:
                return None
        self._at = (n, j + 1)
        keys = part[1]
        return tuple(keys[KEY * j:KEY * j + KEY]), part[2][16 * j:16 * j + 16]

    def _part(self, n: int) -> tuple[list[bytes], array[int], bytes] | None:
        part = self._parts.get(n)
        if part is not None:
            return part
        assert self.index is not None
        try:
            raw = self.index.state_part(self.root, self.variant, n)
        except IndexUnavailable:
            raw = None
        if raw is None:
            return None
        c = Columns.decode(*raw)
        paths: list[bytes] = []
        keys = array("q")
        digests = bytearray()
        for i, p in enumerate(c.paths):
            if c.kinds[i] == "f" and c.keys[KEY * i + 3] >= 0:
                paths.append(_bytes_key(p))
                keys.extend(c.keys[KEY * i:KEY * i + KEY])
                digests += bytes.fromhex(c.values[i])
        if len(self._parts) >= self.KEEP:
            del self._parts[next(iter(self._parts))]  # the oldest read
        part = self._parts[n] = (paths, keys, bytes(digests))
        return part


def _bytes_key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _load_old(index: Index, root: str, variant: str) -> _Old:
    """Digests a walk may reuse: the regular files of the stored state (of
    this variant, else the latest of another), read as the walk needs them."""
    with index.reading():
        s = index.load_state(root, variant, any_variant=True)
        if s is None:
            return _Old()
        firsts: list[bytes] = []
        try:
            for paths, _, _ in index.state_parts(root, s.variant, keys=False, records=False):
                first = marshal.loads(paths)[:1]
                firsts.append(_bytes_key(first[0]) if first else b"")
        except IndexUnavailable:
            return _Old()
    return _Old(index, root, s.variant, firsts)


def _walk(ctx: BuildContext, index: Index, variant: str, config: str,
          entries: Iterable[Entry] | None, workers: int | None, fp: Fingerprint) -> Stored:
    started_ns = time.time_ns()
    # The root and the excluded directories the walker reads are statted
    # before it lists them: a change after this shows as a changed key.
    extra_dirs = excluded_dirs_read(ctx)
    checkable = extra_dirs is not None and entries is None
    extra = Columns([""] + (extra_dirs or []))
    extra.keys = _stat_keys(ctx.root, extra.paths)
    w = _Walk(ctx, _load_old(index, ctx.root, variant), workers)
    try:
        if entries is not None:
            rows = (r for r in map(_entry_row, entries) if r is not None)
            outside = _outside_row(ctx)
            w.add(_batches(rows if outside is None else _chain(rows, outside)))
        else:
            with row_batches(ctx, fork=can_fork(), rows=_rows) as batches:
                w.add(batches)  # type: ignore[arg-type]  # rows=_rows: the index's 8-field rows
        w.done()
        return _save(ctx, index, variant, config, w, fp, started_ns, checkable, extra)
    finally:
        w.close()


def _save(ctx: BuildContext, index: Index, variant: str, config: str, w: _Walk, fp: Fingerprint, started_ns: int,
          checkable: bool, extra: Columns) -> Stored:
    w.old = _Old()
    fp.hashed, fp.hashed_bytes = w.hashed, w.hashed_bytes
    fp.notes.extend(w.notes)
    hasher = RecordHash()
    totals = [0, 0, 0]
    racy = [_racy(extra, started_ns, extra=True)]

    def parts() -> Iterator[Part]:
        for c, blobs in w.sorted_parts(hasher, totals):
            racy[0] = racy[0] or _racy(c, started_ns)
            yield blobs

    def summary() -> Stored:
        return Stored(variant, config, hasher.hexdigest(), totals[0], totals[1], totals[2],
                      checkable and not racy[0], 0.0, marshal.dumps(extra.paths), extra.keys.tobytes())

    gen = parts()
    if not index.save_state(ctx.root, variant, summary, gen):
        for _ in gen:  # the index is off: the fingerprint still needs every part
            pass
    return summary()


def _chain(rows: Iterator[Row], last: Row) -> Iterator[Row]:
    yield from rows
    yield last


def _check(ctx: BuildContext, index: Index, stored: Stored) -> list[tuple[int, list[int]]] | None:
    """Stat every path of the stored state: the parts with changed keys and
    their indices (``[]``: nothing changed), ``None`` when a listing did."""
    root = ctx.root
    extra_paths: list[str] = marshal.loads(stored.extra_paths)
    if changed(root, extra_paths, stored.extra_keys):
        return None
    hits = []
    for n, (paths, keys, _) in enumerate(index.state_parts(root, stored.variant, records=False)):
        idx = changed(root, marshal.loads(paths), keys)
        if idx:
            hits.append((n, idx))
    return hits


def _in_place(ctx: BuildContext, index: Index, stored: Stored, hits: list[tuple[int, list[int]]],
              fp: Fingerprint) -> Stored | None:
    """Re-read the changed regular files and rebuild the fingerprint, part
    by part; ``None`` when a change is more than that (then the caller
    walks)."""
    prefix = ctx.root.rstrip("/") + "/"
    todo = dict(hits)
    hasher = RecordHash()
    new_parts: dict[int, Part] = {}
    files, total = stored.files, stored.bytes
    with index.reading():
        now = index.load_state(ctx.root, stored.variant)
        if now is None or now.fingerprint != stored.fingerprint:
            return None
        for n, part in enumerate(index.state_parts(ctx.root, stored.variant)):
            c = Columns.decode(*part)
            for i in todo.get(n, ()):
                if c.kinds[i] != "f" or c.keys[KEY * i + 3] < 0:
                    return None
                try:
                    if not st.S_ISREG(os.lstat(prefix + c.paths[i]).st_mode):
                        return None
                except OSError:
                    return None
                d = hash_file(prefix + c.paths[i], c.paths[i])
                if d is None:
                    return None
                total += d.size - c.sizes[i]
                c.values[i] = d.digest
                c.sizes[i] = d.size
                c.modes[i] = d.key[4] & 0o7777
                c.keys[KEY * i:KEY * i + KEY] = array("q", d.key)
                fp.hashed += 1
                fp.hashed_bytes += d.size
            if n in todo:
                new_parts[n] = c.encode()
            hasher.add(c)
    new = Stored(stored.variant, stored.config, hasher.hexdigest(), stored.entries, files, total, True, 0.0,
                 stored.extra_paths, stored.extra_keys)
    index.update_parts(ctx.root, stored.variant, stored.fingerprint, new, new_parts)
    return new


def _run(ctx: BuildContext, index: Index, *, entries: Iterable[Entry] | None = None,
         workers: int | None = None) -> Fingerprint:
    started = time.monotonic()
    fp = Fingerprint("")
    variant = _variant(ctx)
    config = _config(ctx)
    root = ctx.root
    new: Stored | None = None
    if entries is None:
        hits = None
        with index.reading():
            stored = index.load_state(root, variant)
            if stored is not None and stored.config == config and stored.checkable:
                try:
                    hits = _check(ctx, index, stored)
                except IndexUnavailable:
                    hits = None
        if stored is not None and hits is not None:
            if not hits:
                fp.how = "warm"
                new = stored
                index.touch(root)
            elif sum(len(i) for _, i in hits) <= max(64, stored.entries // 8):
                new = _in_place(ctx, index, stored, hits, fp)
                if new is not None:
                    fp.how = "files"
    if new is None:
        fp.hashed = fp.hashed_bytes = 0
        new = _walk(ctx, index, variant, config, entries, workers, fp)
    fp.fingerprint = new.fingerprint
    fp.entries, fp.files, fp.bytes = new.entries, new.files, new.bytes
    fp.elapsed = time.monotonic() - started
    if index.adopted:
        fp.notes.append(index.adopted)
    fp.warnings.extend(_index_warnings(index))
    return fp


def _index_warnings(index: Index) -> list[str]:
    """The index's one warning of the run, if any: a file moved aside
    (naming the copy), or why it could not be used."""
    return [w for w in (index.recovered, index.warning) if w]


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
    (``entries``: as for :func:`fingerprint`).  The snapshot is the state
    this run left in the index, copied there."""
    with open_index(index) as idx:
        variant = _variant(ctx)
        for _ in range(3):  # another process may replace the state between the run and the copy
            fp = _run(ctx, idx, entries=entries)
            if not idx.usable or idx.save_snapshot(ctx.root, variant, fp.fingerprint):
                break
        return fp


def record_snapshot(ctx: BuildContext, fp: Fingerprint, index: Index | None = None, *,
                    unchanged_since_ns: int | None = None) -> str | None:
    """Record ``fp`` (what :func:`fingerprint` returned for ``ctx``) as
    the last snapshot, when it still describes the context; ``None`` when
    recorded, else why not.

    ``unchanged_since_ns`` (``time.time_ns()`` taken before the content
    was sent, for ``ctxpack build``): the stored state must prove that no
    entry and no directory the listing read changed since then — every
    mtime and ctime older than it by more than the file clock's tick (10
    ms; 2 s for whole-second times).  A file changed within that tick
    before the upload cannot be told from one changed during it: the
    snapshot is then not recorded.  So a fingerprint taken
    while (or after) the context was uploaded is recorded only when it is
    exactly the state that was sent."""
    with open_index(index) as idx:
        if not idx.usable:
            return "the index is not usable"
        variant = _variant(ctx)
        with idx.reading():
            stored = idx.load_state(ctx.root, variant)
            if stored is None or stored.fingerprint != fp.fingerprint:
                return "the context changed while it was being fingerprinted"
            if unchanged_since_ns is not None:
                try:
                    late = _changed_since(ctx, idx, stored, unchanged_since_ns)
                except IndexUnavailable:
                    return "the index could not be read"
                if late is not None:
                    return f"{late or '.'} changed after the upload started"
        if not idx.save_snapshot(ctx.root, variant, fp.fingerprint):
            return "the context's state was replaced meanwhile (another ctxpack process)"
        return None


# How far a file time can lag the moment of the change it records: the
# kernel stamps files from its coarse clock, which lags the real one by at
# most a tick (Linux: HZ >= 100, so <= 10 ms).  Whole-second times (and
# FAT's 2 s) need the whole interval.
_TICK_NS = 10_000_000


def _late_window(mtime_ns: int, ctime_ns: int) -> int:
    return _TICK_NS if racy_window(mtime_ns, ctime_ns) < COARSE_WINDOW_NS else COARSE_WINDOW_NS


def _changed_since(ctx: BuildContext, index: Index, stored: Stored, since_ns: int) -> str | None:
    """The first path of ``stored`` (entries, then the extra directories)
    whose mtime or ctime is not clearly older than ``since_ns``."""
    def late(paths: list[str], keys: array[int]) -> str | None:
        if max(max(keys[1::KEY], default=-1), max(keys[2::KEY], default=-1)) < since_ns - COARSE_WINDOW_NS:
            return None  # the usual case: the whole part is older; no per-entry loop
        for i in range(len(paths)):
            mtime, ctime = keys[KEY * i + 1], keys[KEY * i + 2]
            if mtime >= 0 and max(mtime, ctime) >= since_ns - _late_window(mtime, ctime):
                return paths[i]
        return None

    extra = array("q")
    extra.frombytes(stored.extra_keys)
    found = late(marshal.loads(stored.extra_paths), extra)
    if found is not None:
        return found
    for paths, keys, _ in index.state_parts(ctx.root, stored.variant, records=False):
        arr = array("q")
        arr.frombytes(keys)
        found = late(marshal.loads(paths), arr)
        if found is not None:
            return found
    return None


def snapshot_time(ctx: BuildContext, index: Index | None = None) -> float | None:
    """When the last snapshot of ``ctx`` (its dialect, Dockerfile, ignore
    file) was taken (``time.time()``), ``None`` when there is none."""
    with open_index(index) as idx:
        snap = idx.load_snapshot(ctx.root, _variant(ctx))
        return snap.when if snap is not None else None


def snapshot_dockerfiles(ctx: BuildContext, index: Index | None = None) -> list[tuple[str, float]]:
    """The other Dockerfiles (absolute paths, newest first, with when) for
    which the directory of ``ctx`` has a snapshot with the same dialect and
    the same ``--minimal`` choice: a snapshot is per Dockerfile (``ctxpack
    build -f X`` records X's), so `diff` without ``-f`` does not see it."""
    mine = _variant(ctx)
    want = _variant_parts(mine)
    out: list[tuple[str, float]] = []
    with open_index(index) as idx:
        for variant, when in idx.snapshot_variants(ctx.root):
            dialect, path, minimal = _variant_parts(variant)
            if variant == mine or (dialect, minimal) != (want[0], want[2]):
                continue
            if path not in ("", "-", ctx.dockerfile_path) and os.path.isfile(path):
                out.append((path, when))
    return out


def diff(ctx: BuildContext, index: Index | None = None, *, entries: Iterable[Entry] | None = None) -> Delta | None:
    """What changed since the last snapshot of this context (``None``: no
    snapshot; ``entries``: as for :func:`fingerprint`).  Both sides are
    read from the index part by part and merged in fingerprint order."""
    with open_index(index) as idx:
        variant = _variant(ctx)
        snap = idx.load_snapshot(ctx.root, variant)
        if snap is None:
            return None
        fp = _run(ctx, idx, entries=entries)
        if snap.fingerprint == fp.fingerprint:
            return Delta(snap.when, [], [], [], fp.fingerprint, snap.fingerprint, fp.warnings)
        added: list[Change] = []
        removed: list[Change] = []
        modified: list[Change] = []
        with idx.reading():
            snap = idx.load_snapshot(ctx.root, variant)
            state = idx.load_state(ctx.root, variant)
            if snap is None or state is None or state.fingerprint != fp.fingerprint:
                raise IndexUnavailable("the index changed while being read; run diff again")
            then = _records_of(idx.snapshot_parts(ctx.root, variant))
            now = _records_of(idx.state_parts(ctx.root, variant, keys=False))
            a, b = next(then, None), next(now, None)
            while a is not None or b is not None:
                if b is None or (a is not None and a[0] < b[0]):
                    removed.append(Change.of(a[1], a[2], a[4]))  # type: ignore[index]
                    a = next(then, None)
                elif a is None or b[0] < a[0]:
                    added.append(Change.of(b[1], b[2], b[4]))
                    b = next(now, None)
                else:
                    _, path, kind, mode, size, value = b
                    if a[2] != kind:
                        modified.append(Change.of(path, kind, size, "type"))
                    elif a[5] != value:
                        modified.append(Change.of(path, kind, size, "link" if kind == "l" else "content"))
                    elif a[3] != mode:
                        modified.append(Change.of(path, kind, size, "mode"))
                    a, b = next(then, None), next(now, None)
    return Delta(snap.when, added, removed, modified, fp.fingerprint, snap.fingerprint, fp.warnings)


def _records_of(parts: Iterator[Part]) -> Iterator[tuple[bytes, str, str, int, int, str]]:
    """``(sort key, path, kind, mode, size, value)`` of stored parts, in order."""
    for part in parts:
        c = Columns.decode(part[0], b"", part[2])
        for path, kind, mode, size, value in c.records():
            yield path.encode("utf-8", "surrogateescape"), path, kind, mode, size, value
