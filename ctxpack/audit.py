"""Measuring a build context: what is sent, what the ignore rules saved.

``measure`` walks the context once, counting exactly what the upload carries
(entries; regular files and their bytes as the tar has them: a later name of
an inode already sent is a link entry, not a file), and, for everything left
out, which rule saved how many files and bytes.  Excluded directories are
sized without matching, because everything below a pruned directory is out.
"""

from __future__ import annotations

import heapq
import os
import stat as st
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ctxpack.context import BuildContext
from ctxpack.units import format_size, parse_size  # here for the callers that import them from audit
from ctxpack.fs import iter_tree
from ctxpack.walker import Entry, EntryKind, Progress

__all__ = ["SizeReport", "RuleSaving", "DirRow", "FileRow", "ExtRow", "measure", "parse_size", "format_size", "heavy_enough"]


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

# How many candidates for the largest files are held before they are cut
# back to the ``top`` largest.
LARGEST_BATCH = 4096


def _du(path: str) -> tuple[int, int]:
    """Regular files and bytes below an excluded directory (links never
    followed; unreadable parts passed over, as the builders skip them too)."""
    files = size = 0
    for _rel, s in iter_tree(path):
        if st.S_ISREG(s.st_mode):
            files += 1
            size += s.st_size
    return files, size


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
    """
    started = time.monotonic()
    rep = SizeReport(context=ctx.root, dialect=ctx.dialect.value, ignore_file=ctx.ignore_source)
    savings: dict[int, RuleSaving] = {}
    dir_bytes: dict[str, list[int]] = {}
    ext: dict[str, list[int]] = {}
    # The largest files: (-size, path) of the files seen, cut back to the
    # ``top`` smallest keys whenever it reaches ``cap`` (the result is the
    # same as sorting them all, without holding every sent path).
    files: list[tuple[int, str]] = []
    cap = max(LARGEST_BATCH, 2 * top)
    seen = 0
    e: Entry
    for e in entries():  # type: ignore[attr-defined]
        seen += 1
        if progress is not None and seen % 2048 == 0:
            progress(rep.files, rep.bytes)
        if not e.included:
            if e.kind == EntryKind.DIR:
                n, b = _du(os.path.join(ctx.root, e.path))
            else:
                try:
                    s = os.lstat(os.path.join(ctx.root, e.path))
                except OSError:
                    continue
                n, b = (1, s.st_size) if st.S_ISREG(s.st_mode) else (0, 0)
            rep.excluded_files += n
            rep.excluded_bytes += b
            if e.rule is not None:
                r = savings.get(e.rule.index)
                if r is None:
                    r = savings[e.rule.index] = RuleSaving(str(e.rule), e.rule.source, e.rule.line, e.rule.text)
                r.files += n
                r.bytes += b
            if on_entry is not None:
                on_entry(e, n, b)
            continue
        rep.entries += 1
        if e.kind != EntryKind.FILE:
            if on_entry is not None:
                on_entry(e, 0, 0)
            continue
        size = len(e.data) if e.data is not None else (e.stat.st_size if e.stat else 0)
        if on_entry is not None:
            on_entry(e, 1, size)
        rep.files += 1
        rep.bytes += size
        path = e.path
        files.append((-size, path))
        if len(files) >= cap:
            files = heapq.nsmallest(top, files)
        # The file's extension as written (lower-cased once per distinct
        # one at the end) and its directory, by index arithmetic: this loop
        # runs once per file sent.
        slash = path.rfind("/")
        dot = path.rfind(".")
        x = ext.get(path[dot:] if dot > slash + 1 else "")
        if x is None:
            x = ext[path[dot:] if dot > slash + 1 else ""] = [0, 0]
        x[0] += size
        x[1] += 1
        # Counted in the file's own directory only; the ancestors get their
        # sums once at the end (_sum_up), not once per file and level.
        if slash > 0:
            row = dir_bytes.get(path[:slash])
            if row is None:
                row = dir_bytes[path[:slash]] = [0, 0]
            row[0] += size
            row[1] += 1
    rep.rules = sorted(savings.values(), key=lambda r: (-r.bytes, r.line))
    rep.largest = [FileRow(p, -b) for b, p in heapq.nsmallest(top, files)]
    extensions: dict[str, list[int]] = {}
    for raw, (b, n) in ext.items():
        row = extensions.setdefault(raw.lower() if raw else "(none)", [0, 0])
        row[0] += b
        row[1] += n
    rep.extensions = [ExtRow(k, v[0], v[1]) for k, v in sorted(extensions.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]]
    rep.directories = _rolled_up(_sum_up(dir_bytes), rep.bytes, top)
    rep.elapsed = time.monotonic() - started
    return rep


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


