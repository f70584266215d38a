"""Measuring a build context: what is sent, what the ignore rules saved.

``measure`` walks the context once, counting exactly what the upload carries
(entries; regular files and their bytes as the tar has them: a later name of
an inode already sent is a link entry, not a file), and, for everything left
out, which rule saved how many files and bytes.  Excluded directories are
sized without matching, because everything below a pruned directory is out.

``measure_context`` (what :func:`ctxpack.size` uses) gets the same report
with the walk in a forked process (:func:`ctxpack.tar.rows.row_batches`):
the child walks, matches and stats; this process sums up the files and sizes
what the rules keep out meanwhile, and the child, once its walk is done,
takes part of that sizing (``_Share``: below the pruned directories there can
be more entries than the walk meets).  On the 122k-entry bench tree
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
import mmap  # with the module, not where used: size may run where no new module can be loaded (a process that dropped its privileges)
import os
import stat as st
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TypeVar
from itertools import repeat

from ctxpack.context import BuildContext
from ctxpack.errors import ContextError
from ctxpack.fs import regular_in, regular_usage
from ctxpack.ignore.matcher import Rule
from ctxpack.units import format_size, parse_size  # here for the callers that import them from audit
from ctxpack.walker import Entry, EntryKind, OnError, Progress, list_entries, pruned_ahead

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
# index or -1), the errors handed to ``on_error`` (pickled), in walk order,
# and whether the walk ended with it.  After the last one, the walker's help
# with the pruned directories (_Share): per rule index (-1: none), the
# [files, bytes] it counted, and the files of several names it met, not
# counted, as (st_dev, st_ino, size, excluded entry's number, rule index):
# see _KeptOut.defer.
_Chunk = tuple[int, list[str], list[int], list[tuple[str, bool, int]], list[bytes], bool]
_Link = tuple[int, int, int, int, int]
_Helped = tuple[dict[int, list[int]], list[_Link]]

# Files (or excluded entries) per chunk the walker process sends: small
# enough for the two processes to overlap, large enough that a chunk costs
# one write.
CHUNK = 1024

# Of what is left to size when the forked walker asks for work, it gets
# every SHARE-th directory (see _Pruned.count).
SHARE = 3


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
    this process sums them up and sizes what the rules keep out meanwhile,
    and once the walk is done the child helps with that (:class:`_Share`).
    Errors handed to ``on_error`` reach it in walk order; an error the walk
    raises is raised here, after what came before it was counted.
    """
    from ctxpack.tar.rows import can_fork, row_batches, usable_cpus  # here: ls imports this module too, and needs none of it

    started = time.monotonic()
    rep = SizeReport(context=ctx.root, dialect=ctx.dialect.value, ignore_file=ctx.ignore_source)
    kept_out = _KeptOut(ctx, rep, deferred=True)
    tally = _Tally(top)
    rules = kept_out.rules
    below: dict[str, list[int]] = {}
    sent = 0
    shown = 0
    received = 0  # chunks read
    forking = can_fork() if fork is None else fork
    share = _Share() if forking else None
    # Sizing ahead of the walker costs this process's idle time where the
    # walker has a core of its own; with no rule there is nothing to prune.
    ahead = pruned_ahead(ctx) if share is not None and rules and usable_cpus() > 1 else None
    pruned = _Pruned(kept_out, rules, share, ahead)
    collecting = gc.isenabled()
    gc.disable()  # as in measure (the forked walker inherits it)
    try:
        rows = functools.partial(_size_rows, on_error=on_error is not None, share=share)
        with row_batches(ctx, fork=forking, rows=rows, batch=1,
                         close_in_child=share.parent_ends if share is not None else ()) as batches:
            if share is not None:
                share.forked(batches.walker is not None)
            item: _Chunk | _Helped
            for (item,) in batches:  # type: ignore[assignment]  # rows=_size_rows: one chunk per batch
                if len(item) == 2:  # the walker's help (after the walk)
                    pruned.add_helped(*item)
                    continue
                n_sent, paths, sizes, excluded, errors, last = item
                if errors:
                    import pickle  # here: only an error needs it

                    assert on_error is not None
                    for raw in errors:
                        on_error(pickle.loads(raw))
                for path, is_dir, rule in excluded:
                    if is_dir:
                        pruned.add(path, rule)
                    else:
                        kept_out.add(path, False, rules[rule] if rule >= 0 else None)
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
                received = (received + 1) & 0xFFFFFFFF  # as the walker counts them (_Share.made_chunk)
                if last:
                    pruned.count()  # all that is left, with the walker's help
                    if share is not None:
                        if pruned.met:
                            share.end()
                        else:
                            share.close()  # nothing to help with: the walker did not wait
                elif share is not None:
                    pruned.count(received)  # until the walker has made the next chunk
    finally:
        if collecting:
            gc.enable()
        if share is not None:
            share.close()
    pruned.count()  # without a forked walker (or its help): everything here
    kept_out.settle()
    tally.dirs = below
    return _finish(rep, tally, kept_out, sent, top, started, summed=True)


class _Share:
    """How the forked walker and this process share the sizing of the
    pruned directories, through a few shared words (``shared``) and a pipe.

    While the walk runs, the walker counts the chunks it has made
    (``shared[CHUNKS]``): this process sizes pruned directories while it has
    read them all, and reads the next as soon as there is one.  Once its
    walk is done, the walker sets ``shared[WANTS]`` when it is idle and
    waits on the ``work`` pipe, where this process sends it part of what is
    left to size (:meth:`_Pruned.count`), or an empty message: no more.
    Each word has one writer (``WANTS`` set by the walker, cleared by this
    process before it sends; ``CHUNKS`` by the walker), and an outdated
    read costs at most one directory's wait, so plain shared words are
    enough.  What the walker counted comes back as a last chunk of the
    walk (:data:`_Helped`).  A walk that met no pruned directory ends
    without that (nothing to help with: the walker does not wait).

    Why: below the pruned directories are most of the tree's entries with
    the typical ignore file of the bench tree (84k of 122k): their listing
    and stats, mostly system time, are more work than the whole walk, and
    the walker's core is free once it is done.
    """

    WANTS, CHUNKS = 0, 1

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, 8)  # anonymous: shared with the forked child
        self.shared = memoryview(self.memory).cast("I")  # aligned 32-bit words
        self.owner = os.getpid()
        self.work_r, self.work_w = os.pipe()
        self.parent_ends = (self.work_w,)  # the child closes these

    def forked(self, forked: bool) -> None:
        """In this process, once the walker is forked (``forked``: it was;
        else the walk runs here and there is no one to help)."""
        os.close(self.work_r)
        self.work_r = -1
        if not forked:
            self.close()

    def send(self, work: list[tuple[int, int, str]]) -> None:
        """Hand ``work`` ((excluded entry's number, rule index, directory)
        triples; empty: the end) to
        the walker, which asked for it (or will: it reads the pipe).  A
        message is its length (4 bytes, little-endian; 0: the end) and
        the triples, marshalled."""
        import marshal

        self.shared[self.WANTS] = 0
        payload = marshal.dumps(work) if work else b""
        data = memoryview(len(payload).to_bytes(4, "little") + payload)
        while data:
            data = data[os.write(self.work_w, data):]

    def end(self) -> None:
        """Tell the walker that there is no more to size: it sends what it
        counted and ends."""
        if self.work_w >= 0:
            try:
                self.send([])
            except BrokenPipeError:
                pass  # the walker died: reading its rows says how
            self.close()

    def close(self) -> None:
        """Close this process's ends (a walker not told :meth:`end` is
        killed by the caller)."""
        for fd in (self.work_r, self.work_w):
            if fd >= 0:
                os.close(fd)
        self.work_r = self.work_w = -1

    def made_chunk(self) -> None:
        """In the walker: one more chunk of the walk is about to be sent."""
        self.shared[self.CHUNKS] = (self.shared[self.CHUNKS] + 1) & 0xFFFFFFFF

    def help(self) -> _Helped:
        """In the walker, after its walk: size what this process hands
        over until it says there is no more; per rule index, [files, bytes],
        and the files of several names met (see :data:`_Helped`)."""
        import marshal

        sums: dict[int, list[int]] = {}
        links: list[_Link] = []
        found: list[tuple[int, int, int]] = []
        while True:
            self.shared[self.WANTS] = 1
            n = int.from_bytes(_read_exactly(self.work_r, 4), "little")
            if not n:  # the end (or the parent is gone: the pipe's end)
                return sums, links
            work: list[tuple[int, int, str]] = marshal.loads(_read_exactly(self.work_r, n))
            for seq, rule, top in work:
                files, size = regular_usage(top, found)
                _add_pair(sums, rule, files, size)
                links.extend([(dev, ino, b, seq, rule) for dev, ino, b in found])
                found.clear()


def _read_exactly(fd: int, n: int) -> bytes:
    """``n`` bytes from ``fd``, or fewer at its end."""
    parts = []
    while n:
        part = os.read(fd, n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


class _Pruned:
    """The pruned directories met so far, sized here a directory at a time
    (:func:`~ctxpack.fs.regular_in`): the ones not begun (``pending``, with
    their rule index), and the directories still to list below the one
    begun (``stack``).  With a :class:`_Share`, whenever the walker asks,
    it gets part of them (see :meth:`count`)."""

    def __init__(self, kept_out: _KeptOut, rules: dict[int, Rule], share: _Share | None,
                 ahead: Iterator[str | None] | None = None):
        self.kept_out = kept_out
        self.rules = rules
        self.share = share
        self.pending: list[tuple[int, int, str]] = []  # (excluded entry's number, rule index, path)
        self.met = False  # a pruned directory was added
        self.stack: list[str] = []
        self.seq = self.rule = -1  # of the directory begun
        self.files = self.bytes = 0  # counted for it, not yet added
        self.found: list[tuple[int, int, int]] = []  # its files of several names, not counted (_KeptOut.defer)
        # Sizing ahead of the walker (walker.pruned_ahead): the directories
        # guessed and sized whole, not yet reported by the walker (path ->
        # files, bytes, files of several names); the one being sized
        # (``guess``, its directories still to list, its sums so far); and
        # the pruned directories the walker reported (not to be guessed).
        self.ahead = ahead
        self.guessed: dict[str, tuple[int, int, list[tuple[int, int, int]]]] = {}
        self.guess: str | None = None
        self.g_stack: list[str] = []
        self.g_files = self.g_bytes = 0
        self.g_found: list[tuple[int, int, int]] = []
        self.reported: set[str] = set()

    def add(self, path: str, rule: int) -> None:
        """A pruned directory of the walk (with its rule's index, or -1)."""
        self.met = True
        kept_out = self.kept_out
        kept_out.note(self.rules[rule] if rule >= 0 else None)  # the rules' order, as measure's
        seq = kept_out.number()
        top = os.path.join(kept_out.root, path)
        if self.ahead is None:
            self.pending.append((seq, rule, top))
            return
        self.reported.add(top)
        done = self.guessed.pop(top, None)
        if done is not None:  # sized ahead: counted now, as the walker's entry number ``seq``
            self._count(seq, rule, *done)
        elif top == self.guess:  # being sized ahead: what is counted counts, the rest is sized as usual
            self._count(seq, rule, self.g_files, self.g_bytes, self.g_found)
            self.pending[:0] = [(seq, rule, d) for d in self.g_stack]
            self.guess = None
            self.g_stack, self.g_found = [], []
            self.g_files = self.g_bytes = 0
        else:
            self.pending.append((seq, rule, top))

    def _count(self, seq: int, rule: int, files: int, size: int, found: list[tuple[int, int, int]]) -> None:
        if files or size:
            self.kept_out.count(self.rules[rule] if rule >= 0 else None, files, size)
        if found:
            self.kept_out.defer(found, seq, rule)

    def _size_ahead(self, chunks: memoryview, received: int) -> None:
        """Size the directories the walker has not reached yet (guessed by
        :func:`~ctxpack.walker.pruned_ahead`) until it has made its next
        chunk: this process would only wait for it."""
        ahead = self.ahead
        assert ahead is not None
        stack = self.g_stack
        root = self.kept_out.root
        while chunks[_Share.CHUNKS] == received:
            if stack:
                n, b = regular_in(stack.pop(), stack.append, self.g_found)
                self.g_files += n
                self.g_bytes += b
                continue
            if self.guess is not None:
                self.guessed[self.guess] = (self.g_files, self.g_bytes, self.g_found)
                self.guess = None
                self.g_found = []
                self.g_files = self.g_bytes = 0
            rel = next(ahead, "")
            if rel == "":  # all found
                self.ahead = iter(())
                return
            if rel is not None:
                top = os.path.join(root, rel)
                if top not in self.reported:
                    self.guess = top
                    stack.append(top)

    def count(self, received: int | None = None) -> None:
        """Size what is pending; with ``received`` (the walk's chunks read),
        only until the walker has made the next one.  Give the walker part
        of what is left whenever it asks."""
        stack, pending, share = self.stack, self.pending, self.share
        push = stack.append
        shared = share.shared if share is not None and share.work_w >= 0 else None  # None: no one to help
        if shared is None and received is not None:
            return  # in this process, the walk and the sizing cannot overlap
        wants, chunks = _Share.WANTS, _Share.CHUNKS
        files, size = self.files, self.bytes
        found = self.found
        try:
            while True:
                if not stack:
                    self.files, self.bytes = files, size
                    self._flush()
                    files = size = 0
                    if not pending:
                        if received is not None and shared is not None and self.ahead is not None:
                            self._size_ahead(shared, received)
                        return
                    self.seq, self.rule, top = pending.pop(0)  # in walk order: see below
                    push(top)
                n, b = regular_in(stack.pop(), push, found)
                files += n
                size += b
                if shared is None:
                    continue
                if shared[wants] and len(stack) + len(pending) > 1:
                    assert share is not None
                    # Every SHARE-th of the directories below the one begun
                    # (the stack's first levels are the biggest subtrees,
                    # and they alternate), or, with fewer than two, of those
                    # not begun.  Not half: the walker comes back for more
                    # when it is done, this process is left waiting when it
                    # has given too much.  The walker sizes what it gets
                    # whole, so a directory of unknown size (not begun: one
                    # may be most of the tree) is given only when nothing
                    # already split is left; and they are begun here in walk
                    # order, so that the big ones are mostly opened (split)
                    # here before little but the small ones are left.
                    if len(stack) > 1:
                        given = [(self.seq, self.rule, d) for d in stack[1::SHARE]]
                        del stack[1::SHARE]
                    else:
                        given = pending[1::SHARE] or [pending.pop()]
                        del pending[1::SHARE]
                    try:
                        share.send(given)
                    except BrokenPipeError:  # the walker died: count it all here (its rows say how it ended)
                        pending.extend(given)
                        share.close()
                        shared = None
                        if received is not None:
                            return
                        continue
                if received is not None and shared[chunks] != received:
                    return
        finally:
            self.files, self.bytes = files, size

    def _flush(self) -> None:
        self._count(self.seq, self.rule, self.files, self.bytes, self.found)
        self.files = self.bytes = 0
        self.found.clear()

    def add_helped(self, sums: dict[int, list[int]], links: list[_Link]) -> None:
        """What the walker counted (per rule index, [files, bytes]) and
        the files of several names it met (see :data:`_Helped`)."""
        for rule, (files, size) in sums.items():
            self.kept_out.count(self.rules[rule] if rule >= 0 else None, files, size)
        for dev, ino, size, seq, rule in links:
            self.kept_out.defer([(dev, ino, size)], seq, rule)


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


def _size_rows(ctx: BuildContext, on_error: bool, share: _Share | None = None) -> Iterator[_Chunk | _Helped]:
    """The walk as chunks (run in the walker process); see :data:`_Chunk`.

    Per entry only what the sums need is kept, each entry let go at once (a
    chunk of entries held would be fresh memory for every new one, slower
    than the entry just freed); a chunk ends every :data:`CHUNK` files or
    excluded entries, and at most every :data:`LARGEST_BATCH` files (a batch
    of :class:`_Tally`).  The last chunk says so; then, in a forked walker,
    the help with the pruned directories (:meth:`_Share.help`) follows."""
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

    forked = share is not None and os.getpid() != share.owner

    def chunk(end: int, last: bool = False) -> _Chunk:
        nonlocal done, errors
        if forked:
            assert share is not None
            share.made_chunk()
        out = (end - done - len(excluded), paths[:], sizes[:], excluded[:], errors, last)
        done = end
        paths.clear()
        sizes.clear()
        excluded.clear()
        errors = []
        return out

    i = -1
    pruned = False  # a pruned directory was met (then there may be sizing to help with)
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
                is_dir = e.kind == DIR
                pruned = pruned or is_dir
                add_excluded((e.path, is_dir, rule.index if rule is not None else -1))
                if len(excluded) >= limit:
                    yield chunk(i + 1)
    except Exception:
        if i + 1 > done or errors:
            yield chunk(i + 1)  # what came before the error is counted, as in measure
        raise
    yield chunk(i + 1, last=True)
    if forked and pruned:  # help (in process, or with no pruned directory, the caller sizes it all)
        assert share is not None
        yield share.help()


class _KeptOut:
    """What the rules keep out: the regular files and bytes of each excluded
    entry (below an excluded directory: everything, without matching), in
    the report's totals and per deciding rule.

    A file is on disk once however many names it has, so a file of several
    names (hard links) is kept out once: it counts for the first excluded
    entry, in walk order, that holds one of its names (and that entry's
    rule).  Sizing in walk order (:func:`measure`), that is the first met;
    sized by two processes at once (:func:`measure_context`), each such
    name is :meth:`defer`-red with its excluded entry's :meth:`number` and
    the file counted once by :meth:`settle`.  (A file also sent under
    another name is counted here too: its kept-out name is not in the
    upload.)"""

    def __init__(self, ctx: BuildContext, rep: SizeReport, deferred: bool = False):
        self.root = ctx.root
        self.rep = rep
        self.rules = {r.index: r for r in ctx.matcher.rules}
        self.savings: dict[int, RuleSaving] = {}
        self.deferred = deferred
        self.entries = 0  # excluded entries numbered so far
        # (st_dev, st_ino) -> [excluded entry's number, rule index, size]
        self.links: dict[tuple[int, int], list[int]] = {}

    def number(self) -> int:
        """The next excluded entry's number (in walk order)."""
        self.entries += 1
        return self.entries

    def add(self, path: str, is_dir: bool, rule: Rule | None) -> tuple[int, int]:
        """Count the excluded ``path`` (the next in walk order); the files
        and bytes it keeps out (but for files of several names with
        ``deferred``: those count in :meth:`settle`)."""
        seq = self.number()
        found: list[tuple[int, int, int]] = []
        if is_dir:
            # Everything below, without matching (links never followed;
            # unreadable parts passed over, as the builders skip them too).
            n, b = regular_usage(os.path.join(self.root, path), found)
        else:
            try:
                s = os.lstat(os.path.join(self.root, path))
            except OSError:
                return 0, 0  # gone meanwhile: nothing kept out
            n, b = 0, 0
            if st.S_ISREG(s.st_mode):
                if s.st_nlink > 1:
                    found.append((s.st_dev, s.st_ino, s.st_size))
                else:
                    n, b = 1, s.st_size
        if found:
            index = rule.index if rule is not None else -1
            if self.deferred:
                self.defer(found, seq, index)
            else:
                links = self.links
                for dev, ino, size in found:
                    if (dev, ino) not in links:  # its first name met
                        links[dev, ino] = [seq, index, size]
                        n += 1
                        b += size
        self.count(rule, n, b)
        return n, b

    def defer(self, found: list[tuple[int, int, int]], seq: int, rule: int) -> None:
        """Names of files of several names, (st_dev, st_ino, size), met
        below the excluded entry number ``seq`` (kept out by the rule of
        index ``rule``): each file is counted by :meth:`settle`, for the
        first entry in walk order that holds one of its names."""
        links = self.links
        for dev, ino, size in found:
            row = links.get((dev, ino))
            if row is None:
                links[dev, ino] = [seq, rule, size]
            elif seq < row[0]:
                row[0], row[1] = seq, rule

    def settle(self) -> None:
        """Count the deferred files of several names, each once."""
        if not self.deferred:
            return
        for _, rule, size in self.links.values():
            self.count(self.rules[rule] if rule >= 0 else None, 1, size)
        self.links.clear()

    def note(self, rule: Rule | None) -> RuleSaving | None:
        """The saving of ``rule`` (made when it first decides an entry: the
        report lists rules of equal savings in that order)."""
        if rule is None:
            return None
        r = self.savings.get(rule.index)
        if r is None:
            r = self.savings[rule.index] = RuleSaving(str(rule), rule.source, rule.line, rule.text)
        return r

    def count(self, rule: Rule | None, files: int, size: int) -> None:
        """Add ``files`` regular files of ``size`` bytes kept out by ``rule``."""
        rep = self.rep
        rep.excluded_files += files
        rep.excluded_bytes += size
        r = self.note(rule)
        if r is not None:
            r.files += files
            r.bytes += size


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
    _add_pair(dirs, d, run_bytes, run_files)


_K = TypeVar("_K")


def _add_pair(rows: dict[_K, list[int]], key: _K, a: int, b: int) -> None:
    """Add ``[a, b]`` to the row ``key`` of ``rows`` (made if missing)."""
    row = rows.get(key)
    if row is None:
        rows[key] = [a, b]
    else:
        row[0] += a
        row[1] += b


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


