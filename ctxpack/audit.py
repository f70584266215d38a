"""Measuring a build context: what is sent, what the ignore rules saved.

``measure`` walks the context once, counting exactly what the upload carries
(entries; regular files and their bytes as the tar has them: a later name of
an inode already sent is a link entry, not a file), and, for everything left
out, which rule saved how many files and bytes.  Excluded directories are
sized without matching, because everything below a pruned directory is out.

``measure_context`` (what :func:`ctxpack.size` uses) gets the same report
with the walk in a forked process (:func:`ctxpack.tar.rows.row_batches`):
the child walks, matches and stats; this process sums up the files and sizes
what the rules keep out meanwhile.  On the 122k-entry bench tree
(bench/results/lint.md, 16:34 UTC, load 0.4-0.9) the wall time went from
1.26x to 1.10x ``ls --excluded`` with no ignore file, and with pruning rules
(whose directories are sized here while the child walks) from 3.0x to 2.2x
(typical) and 2.0x to 1.7x (node_modules); the CPU time is not less (the
child's rows are extra work), only spread over two cores.
"""

from __future__ import annotations

import functools
import gc
import heapq
import os
import stat as st
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import repeat

from ctxpack.context import BuildContext
from ctxpack.errors import ContextError
from ctxpack.fs import regular_usage
from ctxpack.ignore.matcher import Rule
from ctxpack.units import format_size, parse_size  # here for the callers that import them from audit
from ctxpack.walker import Entry, EntryKind, OnError, Progress, list_entries

__all__ = ["SizeReport", "RuleSaving", "DirRow", "FileRow", "ExtRow", "measure", "measure_context", "parse_size", "format_size", "heavy_enough"]


@dataclass
class RuleSaving:
    """What one rule kept out of the context."""

    rule: str
    source: str
    line: int
    text: str
    files: int = 0
    bytes: int = 0


@dataclass
class DirRow:
    """A directory of the rolled-up tree: everything sent below it."""

    path: str
    depth: int
    bytes: int
    files: int
    share: float


@dataclass
class FileRow:
    path: str
    bytes: int


@dataclass
class ExtRow:
    extension: str
    bytes: int
    files: int


@dataclass
class SizeReport:
    """The answer to "what am I sending, and why is it so big".

    ``files``/``bytes`` are the regular-file entries of the upload; the JSON
    schema (:meth:`to_json`) is documented in docs/size.md and stable.
    """

    context: str
    dialect: str
    ignore_file: str | None
    entries: int = 0
    files: int = 0
    bytes: int = 0
    excluded_files: int = 0
    excluded_bytes: int = 0
    rules: list[RuleSaving] = field(default_factory=list)
    largest: list[FileRow] = field(default_factory=list)
    directories: list[DirRow] = field(default_factory=list)
    extensions: list[ExtRow] = field(default_factory=list)
    elapsed: float = 0.0
    full_files: int | None = None  # with --minimal: the full context, for comparison
    full_bytes: int | None = None
    # Paths the builder would fail on ({"path", "error"}), when the caller
    # measured past them (``size`` does); normally empty.
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        extra: dict[str, object] = {}
        if self.full_files is not None:
            extra["full"] = {"files": self.full_files, "bytes": self.full_bytes}
        return extra | {
            "context": self.context,
            "dialect": self.dialect,
            "ignore_file": self.ignore_file,
            "entries": self.entries,
            "files": self.files,
            "bytes": self.bytes,
            "excluded": {"files": self.excluded_files, "bytes": self.excluded_bytes},
            "rules": [asdict(r) for r in self.rules],
            "largest": [asdict(f) for f in self.largest],
            "directories": [asdict(d) for d in self.directories],
            "extensions": [asdict(e) for e in self.extensions],
            "unreadable": list(self.unreadable),
        }


EntryObserver = Callable[[Entry, int, int], None]

# How many sent files are held (path and size) before they are added to the
# sums and the candidates for the largest files are cut back to ``top``.
LARGEST_BATCH = 4096


def measure(
    ctx: BuildContext,
    entries: Callable[[], object],
    *,
    top: int = 10,
    progress: Progress | None = None,
    on_entry: EntryObserver | None = None,
) -> SizeReport:
    """Measure ``ctx``; ``entries()`` yields its entries with the excluded ones
    (``api.list_entries(ctx, excluded=True)``).

    ``on_entry(entry, files, bytes)``, if given, sees every entry with what it
    counted for: a sent regular file (1, its size), any other sent entry
    (0, 0), an excluded one (the regular files and bytes it kept out).  The
    HTML report draws its tree from these, so its numbers are these numbers.
    :func:`measure_context` gives the same report from a forked walk.
    """
    started = time.monotonic()
    rep = SizeReport(context=ctx.root, dialect=ctx.dialect.value, ignore_file=ctx.ignore_source)
    kept_out = _KeptOut(ctx, rep)
    tally = _Tally(top)
    # The loop below runs once per entry of the context: it only picks out
    # each sent file's path and size; the sums (directories, extensions,
    # largest files) are made a batch at a time (_Tally.add).
    paths: list[str] = []
    sizes: list[int] = []
    add_path, add_size = paths.append, sizes.append
    batch = LARGEST_BATCH
    FILE = EntryKind.FILE
    sent = 0
    tick = 2047 if progress is not None else -1  # progress every 2048 sent entries
    e: Entry
    # The cyclic collector is paused for the walk, as for lint's: each entry
    # is a new tracked object freed at once, and a collection would rescan
    # the walker's frames again and again (about 0.2 s of 1.4 s on the
    # 122k-entry bench tree).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for e in entries():  # type: ignore[attr-defined]
            if e.included:
                sent += 1
                if e.kind == FILE:
                    data = e.data
                    if data is None:
                        s = e.stat
                        size = s.st_size if s is not None else 0
                    else:
                        size = len(data)
                    add_path(e.path)
                    add_size(size)
                    if on_entry is not None:
                        on_entry(e, 1, size)
                    if len(paths) >= batch:
                        tally.add(paths, sizes)
                        paths.clear()
                        sizes.clear()
                elif on_entry is not None:
                    on_entry(e, 0, 0)
                if not sent & tick:
                    assert progress is not None
                    progress(tally.files + len(paths), tally.bytes + sum(sizes))
                continue
            n, b = kept_out.add(e.path, e.kind == EntryKind.DIR, e.rule)
            if on_entry is not None:
                on_entry(e, n, b)
        tally.add(paths, sizes)
    finally:
        if collecting:
            gc.enable()
    return _finish(rep, tally, kept_out, sent, top, started)


# A chunk of the forked walk (_size_rows): the sent entries counted, the sent
# files' paths and sizes, the excluded entries as (path, is a directory, rule
# index or -1) and the errors handed to ``on_error`` (pickled), in walk order.
_Chunk = tuple[int, list[str], list[int], list[tuple[str, bool, int]], list[bytes]]

# Files (or excluded entries) per chunk the walker process sends: small
# enough for the two processes to overlap, large enough that a chunk costs
# one write.
CHUNK = 1024


def measure_context(
    ctx: BuildContext,
    *,
    top: int = 10,
    progress: Progress | None = None,
    on_error: OnError | None = None,
    fork: bool | None = None,
) -> SizeReport:
    """:func:`measure` over ``list_entries(ctx, excluded=True, on_error=on_error)``,
    with the walk in a forked process where it can be (``fork``: ``None``
    decides by :func:`~ctxpack.tar.rows.can_fork`).

    The same report as :func:`measure`, in less wall time on two cores: the
    child walks, matches and stats, and sends per chunk of entries only the
    sent files' paths and sizes, the excluded entries and the errors met;
    this process sums them up and sizes what the rules keep out meanwhile.
    Errors handed to ``on_error`` reach it in walk order; an error the walk
    raises is raised here, after what came before it was counted.
    """
    from ctxpack.tar.rows import can_fork, row_batches  # here: ls imports this module too, and needs none of it

    started = time.monotonic()
    rep = SizeReport(context=ctx.root, dialect=ctx.dialect.value, ignore_file=ctx.ignore_source)
    kept_out = _KeptOut(ctx, rep)
    tally = _Tally(top)
    rules = {r.index: r for r in ctx.matcher.rules}
    below: dict[str, list[int]] = {}
    sent = 0
    shown = 0
    collecting = gc.isenabled()
    gc.disable()  # as in measure (the forked walker inherits it)
    try:
        rows = functools.partial(_size_rows, on_error=on_error is not None)
        with row_batches(ctx, fork=can_fork() if fork is None else fork, rows=rows, batch=1) as batches:
            chunk: _Chunk
            for (chunk,) in batches:  # type: ignore[assignment]  # rows=_size_rows: one chunk per batch
                n_sent, paths, sizes, excluded, errors = chunk
                if errors:
                    import pickle  # here: only an error needs it

                    assert on_error is not None
                    for raw in errors:
                        on_error(pickle.loads(raw))
                for path, is_dir, rule in excluded:
                    kept_out.add(path, is_dir, rules[rule] if rule >= 0 else None)
                # The directories' sums are added up to every ancestor as the
                # chunks come (_sum_up's work, done here while the walker
                # works, not after it).
                direct = tally.dirs = {}
                tally.add(paths, sizes)
                _add_below(below, direct)
                sent += n_sent
                if progress is not None and sent >> 11 != shown:  # every 2048 sent entries, as measure
                    shown = sent >> 11
                    progress(tally.files, tally.bytes)
    finally:
        if collecting:
            gc.enable()
    tally.dirs = below
    return _finish(rep, tally, kept_out, sent, top, started, summed=True)


def _add_below(below: dict[str, list[int]], direct: dict[str, list[int]]) -> None:
    """Add the [bytes, files] of the files directly in each directory
    (``direct``) to that directory and each of its ancestors in ``below``
    (the root has no row), as :func:`_sum_up` does all at once."""
    get = below.get
    for d, (b, n) in direct.items():
        while d:
            row = get(d)
            if row is None:
                below[d] = [b, n]
            else:
                row[0] += b
                row[1] += n
            d = d.rpartition("/")[0]


def _size_rows(ctx: BuildContext, on_error: bool) -> Iterator[_Chunk]:
    """The walk as chunks (run in the walker process); see :data:`_Chunk`.

    Per entry only what the sums need is kept, each entry let go at once (a
    chunk of entries held would be fresh memory for every new one, slower
    than the entry just freed); a chunk ends every :data:`CHUNK` files or
    excluded entries, and at most every :data:`LARGEST_BATCH` files (a batch
    of :class:`_Tally`)."""
    errors: list[bytes] = []

    def report(err: ContextError) -> None:
        import pickle

        errors.append(pickle.dumps(err))

    paths: list[str] = []
    sizes: list[int] = []
    excluded: list[tuple[str, bool, int]] = []
    add_path, add_size, add_excluded = paths.append, sizes.append, excluded.append
    FILE, DIR = EntryKind.FILE, EntryKind.DIR
    limit = max(1, min(CHUNK, LARGEST_BATCH))
    done = 0  # entries in the chunks sent so far

    def chunk(end: int) -> _Chunk:
        nonlocal done, errors
        out = (end - done - len(excluded), paths[:], sizes[:], excluded[:], errors)
        done = end
        paths.clear()
        sizes.clear()
        excluded.clear()
        errors = []
        return out

    i = -1
    e: Entry
    try:
        for i, e in enumerate(list_entries(ctx, excluded=True, on_error=report if on_error else None)):
            if e.included:
                if e.kind == FILE:
                    data = e.data
                    if data is None:
                        s = e.stat
                        add_size(s.st_size if s is not None else 0)
                    else:
                        add_size(len(data))
                    add_path(e.path)
                    if len(paths) >= limit:
                        yield chunk(i + 1)
            else:
                rule = e.rule
                add_excluded((e.path, e.kind == DIR, rule.index if rule is not None else -1))
                if len(excluded) >= limit:
                    yield chunk(i + 1)
    except Exception:
        if i + 1 > done or errors:
            yield chunk(i + 1)  # what came before the error is counted, as in measure
        raise
    if i + 1 > done or errors:
        yield chunk(i + 1)


class _KeptOut:
    """What the rules keep out: the regular files and bytes of each excluded
    entry (below an excluded directory: everything, without matching), in
    the report's totals and per deciding rule."""

    def __init__(self, ctx: BuildContext, rep: SizeReport):
        self.root = ctx.root
        self.rep = rep
        self.savings: dict[int, RuleSaving] = {}

    def add(self, path: str, is_dir: bool, rule: Rule | None) -> tuple[int, int]:
        """Count the excluded ``path``; the files and bytes it keeps out."""
        if is_dir:
            # Everything below, without matching (links never followed;
            # unreadable parts passed over, as the builders skip them too).
            n, b = regular_usage(os.path.join(self.root, path))
        else:
            try:
                s = os.lstat(os.path.join(self.root, path))
            except OSError:
                return 0, 0  # gone meanwhile: nothing kept out
            n, b = (1, s.st_size) if st.S_ISREG(s.st_mode) else (0, 0)
        rep = self.rep
        rep.excluded_files += n
        rep.excluded_bytes += b
        if rule is not None:
            r = self.savings.get(rule.index)
            if r is None:
                r = self.savings[rule.index] = RuleSaving(str(rule), rule.source, rule.line, rule.text)
            r.files += n
            r.bytes += b
        return n, b


def _finish(rep: SizeReport, tally: _Tally, kept_out: _KeptOut, sent: int, top: int, started: float,
            summed: bool = False) -> SizeReport:
    """The report from the sums of a walk (``summed``: ``tally.dirs`` holds
    what is below each directory already, not what is directly in it)."""
    rep.entries = sent
    rep.files = tally.files
    rep.bytes = tally.bytes
    rep.rules = sorted(kept_out.savings.values(), key=lambda r: (-r.bytes, r.line))
    rep.largest = [FileRow(p, -b) for b, p in tally.largest]
    extensions: dict[str, list[int]] = {}
    for raw, (b, n) in tally.ext.items():
        row = extensions.setdefault(raw.lower() if raw else "(none)", [0, 0])
        row[0] += b
        row[1] += n
    rep.extensions = [ExtRow(k, v[0], v[1]) for k, v in sorted(extensions.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]]
    rep.directories = _rolled_up(tally.dirs if summed else _sum_up(tally.dirs), rep.bytes, top)
    rep.elapsed = time.monotonic() - started
    return rep


class _Tally:
    """The sums over the sent files, added a batch at a time: files and
    bytes; per directory, [bytes, files] of the files directly in it; per
    extension as written, [bytes, files]; the ``top`` largest files as
    (-size, path), smallest key first (ties by path)."""

    def __init__(self, top: int):
        self.top = top
        self.files = 0
        self.bytes = 0
        self.dirs: dict[str, list[int]] = {}
        self.ext: dict[str, list[int]] = {}
        self.largest: list[tuple[int, str]] = []

    def add(self, paths: list[str], sizes: list[int]) -> None:
        """Add the files ``paths`` (in walk order) of ``sizes`` bytes."""
        if not paths:
            return
        self.files += len(paths)
        self.bytes += sum(sizes)
        # The largest: only files at least as big as the smallest of the
        # ``top`` so far can enter (ties too: they are decided by path).
        # Mostly none can, which max() tells in C.
        top = self.top
        best = self.largest
        cut = -best[-1][0] if len(best) >= top else 0
        if max(sizes) >= cut:
            picked = [(-size, paths[i]) for i, size in enumerate(sizes) if size >= cut]
            self.largest = heapq.nsmallest(top, best + picked)
        # Directories and extensions.  A directory's files come in runs (the
        # walk lists a directory's entries together, between its
        # sub-directories' subtrees): a run is summed in locals and added to
        # the directory's row once.  Files at the root have no row.
        dirs, ext = self.dirs, self.ext
        get_ext = ext.get
        last = ""
        run_bytes = run_files = 0
        for (d, _, base), size in zip(map(str.rpartition, paths, repeat("/")), sizes):
            if d != last:
                if last:
                    _add_run(dirs, last, run_bytes, run_files)
                last = d
                run_bytes = run_files = 0
            run_bytes += size
            run_files += 1
            # The extension as written (lower-cased once per distinct one
            # at the end); a name's leading dot (a hidden file) is none.
            dot = base.rfind(".")
            x = get_ext(base[dot:] if dot > 0 else "")
            if x is None:
                x = ext[base[dot:] if dot > 0 else ""] = [0, 0]
            x[0] += size
            x[1] += 1
        if last:
            _add_run(dirs, last, run_bytes, run_files)


def _add_run(dirs: dict[str, list[int]], d: str, run_bytes: int, run_files: int) -> None:
    """Add a run of ``run_files`` files (``run_bytes`` bytes) directly in
    ``d`` to its row of ``dirs`` ([bytes, files])."""
    row = dirs.get(d)
    if row is None:
        dirs[d] = [run_bytes, run_files]
    else:
        row[0] += run_bytes
        row[1] += run_files


def _sum_up(direct: dict[str, list[int]]) -> dict[str, list[int]]:
    """Per directory, [bytes, files] of everything below it, from the
    counts of the files directly in each: deepest directories first, each
    added to its parent."""
    by_depth: dict[int, list[str]] = {}
    for d in direct:
        by_depth.setdefault(d.count("/"), []).append(d)
    for depth in range(max(by_depth, default=0), 0, -1):
        for d in by_depth.get(depth, ()):
            parent = d.rpartition("/")[0]
            row = direct.get(parent)
            if row is None:
                row = direct[parent] = [0, 0]
                by_depth.setdefault(depth - 1, []).append(parent)
            below = direct[d]
            row[0] += below[0]
            row[1] += below[1]
    return direct


def _rolled_up(dir_bytes: dict[str, list[int]], total: int, top: int) -> list[DirRow]:
    """The ``top`` heaviest directories as a tree, heaviest first at every level.

    Rows are chosen by weight, not in tree order: the heaviest directory not
    yet shown whose parent is shown (top-level directories always qualify;
    sub-directories need 2% of the total) is taken next, so a cut never
    hides a heavy top-level directory while showing a light sub-directory.
    A chain of directories that only hold the next one (``bin/Debug/net8.0``)
    is one row, named by its last directory.  Rows are listed as a tree:
    under each, its chosen children, heaviest first.
    """
    children: dict[str, list[str]] = {}
    for d in dir_bytes:
        parent = d.rsplit("/", 1)[0] if "/" in d else ""
        children.setdefault(parent, []).append(d)

    def chain_end(d: str) -> str:
        while True:
            kids = children.get(d, [])
            if len(kids) != 1 or dir_bytes[kids[0]] != dir_bytes[d]:
                return d
            d = kids[0]

    threshold = max(1, total // 50)
    chosen: dict[str, str] = {}  # first directory of a row -> its last
    frontier = [(-dir_bytes[d][0], d) for d in children.get("", [])]
    heapq.heapify(frontier)
    while frontier and len(chosen) < top:
        _, d = heapq.heappop(frontier)
        end = chosen[d] = chain_end(d)
        for c in children.get(end, []):
            if dir_bytes[c][0] >= threshold:
                heapq.heappush(frontier, (-dir_bytes[c][0], c))
    rows: list[DirRow] = []

    def visit(parent: str, depth: int) -> None:
        for d in sorted((c for c in children.get(parent, []) if c in chosen), key=lambda c: (-dir_bytes[c][0], c)):
            end = chosen[d]
            b, n = dir_bytes[end]
            rows.append(DirRow(end, depth, b, n, round(b / total, 4) if total else 0.0))
            visit(end, depth + 1)

    visit("", 0)
    return rows


# A directory of local state (.git, node_modules, .venv …) is worth a
# warning when it is heavy for this context, not by a fixed size alone: a
# 194 kB .git beside 40 MB of sources is noise.
HEAVY_MIN_BYTES = 1_000_000
HEAVY_MIN_SHARE = 0.02


def heavy_enough(dir_bytes: int, context_bytes: int) -> bool:
    """Whether a sent directory of ``dir_bytes`` is heavy in a context that
    sends ``context_bytes``: at least :data:`HEAVY_MIN_BYTES` and at least
    :data:`HEAVY_MIN_SHARE` of the context (the same rule for ``.git``)."""
    return dir_bytes >= HEAVY_MIN_BYTES and dir_bytes >= HEAVY_MIN_SHARE * context_bytes


