"""One view of a build context for lint's checks, made once.

The walker decides every path it meets exactly once (the same walk ``ls
--excluded`` does: pruned directories are one entry); the checks read the
entries, the deciding rule of each, and the Dockerfile analysis from here.
What the walk does not visit (the inside of a pruned directory, git
history) is listed lazily, only for a check that needs it.

The entries are kept compact (:class:`Walked`): per entry only what the
checks read -- the path, the kind, whether it is sent, the deciding rule
and the size -- in columns, never the walker's ``Entry`` with its
``lstat`` (a million-entry directory would otherwise cost ~1 kB a name).
What every check needs from all entries (the rules' decisions, the bytes
sent, the heavy directories, the secret candidates) is counted while the
walk runs (:class:`Census`); the set of sent paths, the entries by path and
a directory's names are made on demand, only for a check that asks.
"""

from __future__ import annotations

import gc
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import TYPE_CHECKING, NamedTuple

from ctxpack import fs
from ctxpack.context import BuildContext, Dialect, open_context, select_ignore_file
from ctxpack.errors import ContextError, CtxpackError, PatternSyntaxError
from ctxpack.ignore.matcher import Rule
from ctxpack.ignore.pattern import compile_pattern
from ctxpack.ignore.reader import RawRule, read_ignore_file
from ctxpack.linter.guards import DOTNET_PROJECTS, HEAVY
from ctxpack.walker import Entry, EntryKind, needs_classic_validation, validate_classic, walk_all

if TYPE_CHECKING:
    from ctxpack.dockerfile.analysis import Analysis, Selection
    from ctxpack.linter.secrets import Hit

__all__ = ["Census", "ContextView", "Opened", "RefusedLine", "Row", "Walked", "open_view", "open_lenient", "split_rules",
           "walk_entries"]

CLI_SOURCE = "<docker cli>"


@dataclass(frozen=True)
class RefusedLine:
    """An ignore-file line docker refuses (when it loads the file, or when
    it first evaluates the pattern)."""

    rule: RawRule
    message: str


@dataclass(frozen=True)
class Opened:
    """How the context was opened (to open it again with other rules)."""

    dockerfile: str | None
    ignore_file: str | None
    stdin_dockerfile: bytes | None


class Row(NamedTuple):
    """One entry of a :class:`Walked`, as the checks read it: ``size`` is the
    ``lstat`` size, -1 for an entry that was not statted (excluded ones)."""

    path: str
    kind: str
    included: bool
    rule: Rule | None
    size: int


# An entry's code: its kind's index here times two, plus one when it is sent.
_KINDS = (EntryKind.FILE, EntryKind.DIR, EntryKind.SYMLINK, EntryKind.HARDLINK, EntryKind.FIFO, EntryKind.CHAR,
          EntryKind.BLOCK, EntryKind.SOCKET)
_CODE = {k: i << 1 for i, k in enumerate(_KINDS)}
SENT = 1
FILE_CODE = _CODE[EntryKind.FILE]
DIR_CODE = _CODE[EntryKind.DIR]
# Look-ups by path scan the paths (in C, no memory) this many times; then a
# dict of every path is made once.
_SCANS = 16


class Walked:
    """The walk's entries in walk order, in columns: ``paths``; ``codes``
    (kind and sent, one byte: :data:`FILE_CODE`, :data:`DIR_CODE`, ``| SENT``);
    ``rules`` (the deciding rule, ``None`` when no rule matched); ``sizes``
    (the ``lstat`` size, -1 when not statted).  About 90 bytes an entry with
    its path; ``walked[i]`` and iteration give :class:`Row` s."""

    __slots__ = ("paths", "codes", "rules", "sizes", "_index", "_lookups")

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.codes = bytearray()
        self.rules: list[Rule | None] = []
        self.sizes = array("q")
        self._index: dict[str, int] | None = None
        self._lookups = 0

    def append(self, e: Entry) -> None:
        """Add the walker's entry ``e`` (keeping only what the checks read)."""
        self.paths.append(e.path)
        self.codes.append(_CODE[e.kind] | e.included)
        self.rules.append(e.rule)
        self.sizes.append(e.stat.st_size if e.stat is not None else -1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Row:
        c = self.codes[i]
        return Row(self.paths[i], _KINDS[c >> 1], bool(c & SENT), self.rules[i], self.sizes[i])

    def __iter__(self) -> Iterator[Row]:
        kinds = _KINDS
        for p, c, r, s in zip(self.paths, self.codes, self.rules, self.sizes):
            yield Row(p, kinds[c >> 1], bool(c & SENT), r, s)

    def sent(self) -> set[str]:
        """The paths sent."""
        return {p for p, c in zip(self.paths, self.codes) if c & SENT}

    def dirs(self) -> set[str]:
        """The paths of directories (sent or not)."""
        return {p for p, c in zip(self.paths, self.codes) if c & ~SENT == DIR_CODE}

    def index(self, path: str) -> int | None:
        """Where ``path`` is in the walk, or ``None``."""
        if self._index is None:
            self._lookups += 1
            if self._lookups <= _SCANS:
                try:
                    return self.paths.index(path)
                except ValueError:
                    return None
            self._index = {p: i for i, p in enumerate(self.paths)}
        return self._index.get(path)

    def get(self, path: str) -> Row | None:
        """The entry of ``path``, or ``None``."""
        i = self.index(path)
        return None if i is None else self[i]


@dataclass
class Census:
    """What the checks need from every entry, counted while the walk runs
    (so that no check scans every entry again): how many paths rule ``i``
    decided (``decided[i]``; of them sent: ``decided_sent[i]``); the bytes
    sent; the sent directories with a heavy name
    (:data:`~ctxpack.linter.guards.HEAVY`), and the sent files whose names
    :func:`~ctxpack.linter.secrets.maybe` accepts outside installed-package
    directories (:data:`~ctxpack.linter.secrets.INSTALLED`), as indices into
    the entries, in walk order.

    Also made during the walk, for the checks that would otherwise run
    after it: ``sent_before[i]``, the bytes of the sent files among the
    first ``i`` entries (what a directory's entries send is a difference
    of two); ``projects``, the directories holding a .NET project file
    (:data:`~ctxpack.linter.guards.DOTNET_PROJECTS`); ``scans``, for each
    of ``secret``: why it is worth reading
    (:func:`~ctxpack.linter.secrets.candidate`, ``None``: it is not) and
    what :func:`~ctxpack.linter.secrets.scan` found in it (``None``: it
    could not be read).  In the forked walk (:func:`walk_entries`) all of
    it is done while the walker walks."""

    decided: dict[int, int] = field(default_factory=dict)
    decided_sent: dict[int, int] = field(default_factory=dict)
    sent_bytes: int = 0
    heavy: list[int] = field(default_factory=list)
    secret: list[int] = field(default_factory=list)
    sent_before: array[int] = field(default_factory=lambda: array("q", [0]))
    projects: set[str] = field(default_factory=set)
    scans: dict[int, tuple[str | None, list[Hit] | None]] = field(default_factory=dict)


@dataclass
class ContextView:
    """The context as the builder sees it, for the checks.

    ``entries``: every entry the walker met, in walk order, compact
    (:class:`Walked`: path, kind, sent or not, deciding rule, size; a pruned
    directory once).  ``census``: what was counted during the walk
    (:class:`Census`); ``decided[i]`` / ``decided_sent[i]``: how many paths
    rule ``i`` decided (of them, sent).  ``sent`` (made on first use): the
    paths sent.  ``refused``: lines docker refuses at load time (left out of
    ``ctx``).  ``analysis``: the Dockerfile's sources (``None`` without a
    Dockerfile or when it cannot be analysed, see ``analysis_error``);
    ``reads`` selects the paths the build reads, ``None`` when that is not
    known (no analysis, or a fallback to the whole context).  ``errors``:
    paths docker could not read.
    """

    ctx: BuildContext
    opened: Opened
    entries: Walked
    census: Census
    refused: list[RefusedLine]
    ignore_text: str | None
    analysis: Analysis | None = None
    analysis_error: str | None = None
    reads: Selection | None = None
    errors: list[ContextError] = field(default_factory=list)
    _subtrees: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _history: set[str] | None | bool = field(default=False, repr=False)
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _sent: set[str] | None = field(default=None, repr=False)
    _undecided_deeper: set[str] | None = field(default=None, repr=False)

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The ignore file's rules as the walk used them (no CLI re-adds)."""
        return self.ctx.file_matcher.rules

    @property
    def decided(self) -> dict[int, int]:
        """How many paths each rule (by index) decided."""
        return self.census.decided

    @property
    def decided_sent(self) -> dict[int, int]:
        """How many sent paths each rule (by index) decided."""
        return self.census.decided_sent

    @property
    def sent(self) -> set[str]:
        """The paths sent (made on first use)."""
        if self._sent is None:
            self._sent = self.entries.sent()
        return self._sent

    @property
    def undecided_deeper_names(self) -> set[str]:
        """The names of entries below the root that are sent and that no
        rule decides (made on first use): where a rule for a root path of
        that name, written unrooted, would be a gitignore habit."""
        if self._undecided_deeper is None:
            w = self.entries
            codes, rules = w.codes, w.rules
            self._undecided_deeper = {p.rpartition("/")[2] for i, p in enumerate(w.paths)
                                      if "/" in p and codes[i] & SENT and rules[i] is None}
        return self._undecided_deeper

    @property
    def forced(self) -> set[str]:
        """Paths the build always gets whatever the rules say: the classic
        CLI's re-adds, and the Dockerfile and ignore file it reads."""
        out = {p[1:] for p in self.ctx.appended}
        if self.ctx.dialect is Dialect.CLASSIC:
            out.add(".dockerignore")
            if self.ctx.dockerfile:
                out.add(self.ctx.dockerfile)
        return out

    def reopen(self, *, rules: Sequence[RawRule], dialect: Dialect | None = None) -> BuildContext:
        """The same context with other rules (or for the other builder)."""
        o = self.opened
        return open_context(self.ctx.root, dockerfile=o.dockerfile, dialect=dialect or self.ctx.dialect,
                            ignore_file=o.ignore_file, stdin_dockerfile=o.stdin_dockerfile, rules=rules)

    def user_exception(self, rule: Rule | None) -> bool:
        """Whether ``rule`` is a ``!`` line the user wrote."""
        return rule is not None and rule.exception and rule.source != CLI_SOURCE

    def pruned(self) -> Iterator[Row]:
        """Excluded directories the walker did not read."""
        w = self.entries
        return (w[i] for i, c in enumerate(w.codes) if c == DIR_CODE)

    def subtree(self, rel: str) -> list[str]:
        """The paths below the (pruned) directory ``rel``, listed on demand."""
        if rel not in self._subtrees:
            self._subtrees[rel] = [p for p, _ in fs.iter_tree(os.path.join(self.ctx.root, rel), rel)]
        return self._subtrees[rel]

    def counted(self) -> Census:
        """The :class:`Census` of the entries."""
        return self.census

    def entry(self, path: str) -> Row | None:
        """The walk's entry for ``path``, or ``None``."""
        return self.entries.get(path)

    def children(self, directory: str) -> set[str]:
        """Names the walk met directly in ``directory`` (``""`` = root)."""
        kids = self._children.get(directory)
        if kids is None:
            prefix = directory + "/" if directory else ""
            n = len(prefix)
            kids = {p[n:] for p in self.entries.paths if p.startswith(prefix) and "/" not in p[n:]}
            self._children[directory] = kids
        return kids

    def history(self) -> set[str] | None:
        """Every path (and its parents) that git history ever held below the
        context, relative to it; ``None`` when the context is not in a git
        work tree or git is unavailable."""
        if self._history is False:
            self._history = _git_history(self.ctx.root)
        return self._history  # type: ignore[return-value]


def _git_history(root: str) -> set[str] | None:
    import subprocess  # only for a rule that matches nothing in the tree

    try:
        inside = subprocess.run(["git", "-C", root, "rev-parse", "--is-inside-work-tree"],
                                capture_output=True, text=True, timeout=10)
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return None
        log = subprocess.run(["git", "-C", root, "-c", "core.quotepath=off", "log", "--all", "--name-only",
                              "--format=", "--relative", "-z"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if log.returncode != 0:
        return None
    out: set[str] = set()
    for raw in log.stdout.split(b"\0"):
        name = raw.strip(b"\n").decode("utf-8", "surrogateescape")
        while name and name not in out:
            out.add(name)
            name = name.rpartition("/")[0]
    return out


def split_rules(raw: list[RawRule]) -> tuple[list[RawRule], list[RefusedLine]]:
    """The lines docker uses, and those it refuses (at load time, or when it
    first evaluates them: the walk goes on without those, to describe the rest)."""
    good: list[RawRule] = []
    refused: list[RefusedLine] = []
    for r in raw:
        try:
            pat = compile_pattern(r.pattern)
        except PatternSyntaxError as err:
            refused.append(RefusedLine(r, f"docker refuses this file: {err}"))
            continue
        if pat.error is not None:
            refused.append(RefusedLine(r, "docker accepts this pattern but fails with 'syntax error in pattern' "
                                          f"when it first evaluates it ({pat.error})"))
            continue
        good.append(r)
    return good, refused


def open_lenient(root: str | os.PathLike[str], dockerfile: str | None, dialect: Dialect, ignore_file: str | None,
                 stdin_dockerfile: bytes | None = None) -> tuple[BuildContext, list[RefusedLine], str | None]:
    """Open the context without the lines docker refuses at load time and
    those it fails on when it first evaluates them (so that the walk can
    describe the rest); returns the context, those lines and the ignore
    file's text."""
    real = os.path.realpath(os.fspath(root))
    path, source = select_ignore_file(real, dockerfile, dialect, ignore_file)
    raw = read_ignore_file(path, source) or []
    try:
        with open(path, "rb") as f:
            text: str | None = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        text = None
    good, refused = split_rules(raw)
    ctx = open_context(root, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file,
                       stdin_dockerfile=stdin_dockerfile, rules=good)
    return ctx, refused, text


def dockerfile_name(ctx: BuildContext) -> str:
    """The Dockerfile as messages name it: relative to the context when inside it."""
    if ctx.dockerfile:
        return ctx.dockerfile
    return ctx.dockerfile_shown()


def analyse(ctx: BuildContext) -> tuple[Analysis | None, str | None, Selection | None]:
    """The Dockerfile analysis, an error message if it failed, and the
    selection of what the build reads (``None`` when that is not known)."""
    from ctxpack.dockerfile.analysis import Selection, analyze  # here: lint loads it while its walk runs

    data = ctx.dockerfile_bytes()
    if data is None:
        return None, "no Dockerfile", None
    try:
        an = analyze(data, dialect=ctx.dialect, source=dockerfile_name(ctx))
    except CtxpackError as e:
        return None, str(e), None
    if an.whole_context:
        return an, None, None
    keep = list(an.patterns) + [p for p in (ctx.dockerfile, ".dockerignore") if p]
    return an, None, Selection(keep, ctx.root)


def open_view(root: str | os.PathLike[str], *, dockerfile: str | None = None, dialect: Dialect = Dialect.BUILDKIT,
              ignore_file: str | None = None, stdin_dockerfile: bytes | None = None) -> ContextView:
    """Open the context leniently and walk it once."""
    ctx, refused, text = open_lenient(root, dockerfile, dialect, ignore_file, stdin_dockerfile)
    census = Census()
    analysed: list[tuple[Analysis | None, str | None, Selection | None]] = []

    def meanwhile() -> None:  # while the walk runs: the Dockerfile, and the secret scanner's patterns
        analysed.append(analyse(ctx))
        import ctxpack.linter.secrets  # noqa: F401

    entries, errors = walk_entries(ctx, census, meanwhile=meanwhile)
    an, an_error, reads = analysed[0]
    opened = Opened(dockerfile, ignore_file, stdin_dockerfile)
    return ContextView(ctx, opened, entries, census, refused, text,
                       analysis=an, analysis_error=an_error, reads=reads, errors=errors)


def _add_error(errors: list[ContextError], err: ContextError) -> None:
    if not any(err.path == x.path for x in errors):
        errors.append(err)


# Entries per chunk of the walk (_view_rows): small enough for the walker
# and this process to overlap, large enough that a chunk costs one write.
CHUNK = 2048

# A chunk: the paths, their codes (see Walked), their rules' indices plus one
# (0: no rule; array "l" as bytes), their sizes (array "q" as bytes, -1: not
# statted) and the errors the walk handed on (pickled), in walk order.
_Chunk = tuple[list[str], bytes, bytes, bytes, list[bytes]]


def walk_entries(ctx: BuildContext, census: Census | None = None, *, fork: bool | None = None,
                 meanwhile: Callable[[], None] | None = None) -> tuple[Walked, list[ContextError]]:
    """The walk's entries, excluded ones included (compact, see
    :class:`Walked`), and the paths docker would fail on (the classic CLI's
    validation first, then the walk's); with ``census``, counted into it
    during the walk.

    The walk runs in a forked process where it can (``fork``: ``None``
    decides by :func:`~ctxpack.tar.rows.can_fork`), as ``size``'s: it
    walks, matches and stats, and sends the entries' columns a chunk at a
    time; this process adds them to the view and counts the census
    meanwhile, and first runs ``meanwhile`` (lint: the Dockerfile analysis).
    """
    from ctxpack.tar.rows import can_fork, row_batches  # here: the view is also made where no walk runs

    entries = Walked()
    errors: list[ContextError] = []
    if needs_classic_validation(ctx):
        # The docker CLI's own walk first: it fails on unreadable paths the
        # upload walk would never reach (an excluded unreadable directory).
        try:
            validate_classic(ctx)
        except ContextError as e:
            errors.append(e)
    rules = ctx.matcher.rules
    by_index: list[Rule | None] = [None] * (max((r.index for r in rules), default=-1) + 2)
    for r in rules:
        by_index[r.index + 1] = r
    rule_of = by_index.__getitem__
    counter = _Counter(census, ctx.root) if census is not None else None
    # The cyclic collector is paused for the walk (the forked walker
    # inherits it): each entry is a new tracked object (freed at once), and
    # a collection would rescan the walker's frames again and again
    # although nothing kept holds a cycle.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with row_batches(ctx, fork=can_fork() if fork is None else fork, rows=_view_rows, batch=1) as batches:
            if meanwhile is not None:
                meanwhile()
            chunk: _Chunk
            for (chunk,) in batches:  # type: ignore[assignment]  # rows=_view_rows: one chunk per batch
                paths, codes, raw_rules, raw_sizes, raw_errors = chunk
                if raw_errors:
                    import pickle  # here: only an error needs it

                    for raw in raw_errors:
                        _add_error(errors, pickle.loads(raw))
                indices = array("l")
                indices.frombytes(raw_rules)
                sizes = array("q")
                sizes.frombytes(raw_sizes)
                chunk_rules = list(map(rule_of, indices))
                start = len(entries.paths)
                entries.paths.extend(paths)
                entries.codes.extend(codes)
                entries.rules.extend(chunk_rules)
                entries.sizes.extend(sizes)
                if counter is not None:
                    counter.count(start, paths, codes, chunk_rules, sizes)
    except ContextError as err:  # the context root itself
        _add_error(errors, err)
    finally:
        if collecting:
            gc.enable()
    return entries, errors


def _view_rows(ctx: BuildContext) -> Iterator[_Chunk]:
    """The walk as chunks (see :data:`_Chunk`; run in the walker process):
    per entry only the columns of :class:`Walked`, each entry let go at
    once; what came before an error the walk raises is sent first."""
    errors: list[bytes] = []

    def report(err: ContextError) -> None:
        import pickle

        errors.append(pickle.dumps(err))

    paths: list[str] = []
    codes = bytearray()
    rules = array("l")
    sizes = array("q")
    add_path, add_code, add_rule, add_size = paths.append, codes.append, rules.append, sizes.append
    kind_code = _CODE

    def chunk() -> _Chunk:
        nonlocal errors
        out = (paths[:], bytes(codes), rules.tobytes(), sizes.tobytes(), errors)
        paths.clear()
        del codes[:], rules[:], sizes[:]
        errors = []
        return out

    e: Entry
    try:
        for e in walk_all(ctx, excluded=True, on_error=report):
            add_path(e.path)
            add_code(kind_code[e.kind] | e.included)
            r = e.rule
            add_rule(r.index + 1 if r is not None else 0)
            s = e.stat
            add_size(s.st_size if s is not None else -1)
            if len(paths) >= CHUNK:
                yield chunk()
    except Exception:
        if paths or errors:
            yield chunk()
        raise
    if paths or errors:
        yield chunk()


class _Counter:
    """Counts a :class:`Census` a chunk of entries at a time, in walk order."""

    def __init__(self, census: Census, root: str):
        self.census = census
        self.root = root
        self.skip = ""  # inside an installed-package directory ("path/"): its files are not the project's secrets

    def count(self, start: int, paths: list[str], codes: bytes, rules: list[Rule | None], sizes: array[int]) -> None:
        """Count the entries ``start``, ``start + 1``, ... of the walk."""
        from ctxpack.linter.secrets import INSTALLED, candidate, maybe, scan  # here: not in the forked walker (its start-up)

        c = self.census
        decided, decided_sent, heavy, secret = c.decided, c.decided_sent, c.heavy, c.secret
        before = c.sent_before.append
        skip = self.skip
        sent_bytes = c.sent_bytes
        sent_file, sent_dir = FILE_CODE | SENT, DIR_CODE | SENT
        # One loop: it runs once per entry of the context.
        for i, (path, code, r, size) in enumerate(zip(paths, codes, rules, sizes), start):
            if code & SENT:
                if r is not None:
                    decided_sent[r.index] = decided_sent.get(r.index, 0) + 1
                if code == sent_file:
                    if size >= 0:
                        sent_bytes += size
                        if not (skip and path.startswith(skip)) and maybe(path):
                            secret.append(i)
                            reason = candidate(path)
                            hits = None
                            if reason is not None:
                                try:
                                    hits = scan(os.path.join(self.root, path), path, size, reason)
                                except (ContextError, OSError):
                                    pass  # unreadable: the walk reports it
                            c.scans[i] = (reason, hits)
                elif code == sent_dir and path.rpartition("/")[2] in HEAVY:
                    heavy.append(i)
            if r is not None:
                decided[r.index] = decided.get(r.index, 0) + 1
            if code & ~SENT == DIR_CODE and not (skip and path.startswith(skip)) and path.rpartition("/")[2] in INSTALLED:
                skip = path + "/"
            before(sent_bytes)
        self.skip = skip
        c.sent_bytes = sent_bytes
        projects = c.projects
        for p in compress(paths, map(str.endswith, paths, repeat(DOTNET_PROJECTS))):  # in C: every path is looked at
            projects.add(p.rpartition("/")[0])
