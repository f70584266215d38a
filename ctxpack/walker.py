"""Enumerating a build context in upload order, as each builder does.

One walker, two dialects (semantics note §4.5–4.6, §6, §7):

* order: depth-first pre-order, each directory's entries sorted byte-wise
  (Go ``filepath.WalkDir``); the root itself has no entry;
* decisions: :meth:`Matcher.decide` with per-rule results inherited from the
  parent directory;
* pruning: an excluded directory is not read unless an exception could
  re-include something below it.  classic (go-archive) descends only when an
  exception's literal text starts with ``dir/``; BuildKit (fsutil) does the
  same when every exception is "prefix-only", and otherwise descends into
  every excluded directory.  ctxpack decides this from the rules, never by
  reading the directory first;
* directory entries: classic never emits an excluded-but-descended directory;
  BuildKit emits it just before its first sent descendant;
* entries: regular files, directories, symlinks (never followed), hard links
  (later names of an inode already sent), FIFOs and devices; sockets are
  dropped (Go's tar writer refuses them), except where the BuildKit
  session serves them (``sockets=True``: fsutil's sender lists a socket
  as an empty file with its permission bits, see docs/session.md).
"""

from __future__ import annotations

import hashlib
import os
import stat as st
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ctxpack import fs
from ctxpack.context import BuildContext, Dialect
from ctxpack.errors import ContextError
from ctxpack.ignore.matcher import NO_RULE, DirPlan, Rule

__all__ = [
    "Entry", "EntryKind", "walk", "walk_all", "list_entries", "entries_for_builder",
    "injected_dockerfile_name", "dockerfile_name_in_tar", "descends_into_excluded", "excluded_dirs_read", "Progress",
    "docker_read_error", "OnError", "HardLinks", "kind_of", "pruned_ahead",
]

# How far a job that goes through the entries got: (files, bytes) so far.
# One definition for the packer, the size report and the fingerprint.
Progress = Callable[[int, int], None]

# Where a describing command (ls, size) sends the paths the builder could not
# read, to go on with the rest instead of stopping at the first one.
OnError = Callable[[ContextError], None]


class EntryKind:
    """Entry types, named like tar's."""

    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    FIFO = "fifo"
    CHAR = "char"
    BLOCK = "block"
    #: A unix socket: only in a BuildKit listing asked for with ``sockets=True``.
    SOCKET = "socket"


@dataclass(slots=True)
class Entry:
    """One entry of the context.

    ``path`` is relative to the context root, ``/``-separated, without a
    trailing slash (undecodable bytes kept as surrogate escapes).  ``stat``
    is the ``lstat`` result.  ``link`` is a symlink's target as ``readlink``
    returns it, or for a hard link the path of the inode's first sent name.
    ``included`` is False only in :func:`walk_all`'s excluded entries;
    ``rule`` is the rule that decided the path (None: no rule matched).
    ``forced`` says the classic CLI forced it in (Dockerfile/.dockerignore).
    ``data`` replaces the file's content for entries the classic CLI
    synthesises or rewrites (a Dockerfile from stdin or outside the context,
    and the ``.dockerignore`` that then names it).
    """

    path: str
    kind: str
    stat: os.stat_result | None
    link: str | None = None
    rule: Rule | None = None
    included: bool = True
    forced: bool = False
    data: bytes | None = None

    @property
    def name(self) -> str:
        """The listing name: directories end with ``/``."""
        return self.path + "/" if self.kind == EntryKind.DIR else self.path


_KINDS = {
    st.S_IFREG: EntryKind.FILE, st.S_IFDIR: EntryKind.DIR, st.S_IFLNK: EntryKind.SYMLINK,
    st.S_IFIFO: EntryKind.FIFO, st.S_IFCHR: EntryKind.CHAR, st.S_IFBLK: EntryKind.BLOCK,
}
_KINDS_AND_SOCKETS = {**_KINDS, st.S_IFSOCK: EntryKind.SOCKET}


def kind_of(mode: int) -> str | None:
    """The :class:`EntryKind` of an ``lstat`` mode; ``None`` for a socket
    (Docker's tar writer skips them)."""
    return _KINDS.get(st.S_IFMT(mode))


class HardLinks:
    """Hard links as the docker CLI's tar writer finds them (go-archive's
    ``SeenFiles``): the first name met of an inode with more than one link
    is sent as it is, every later name as a hard link to that first one.
    One per walk (or list of paths), fed the names in upload order."""

    __slots__ = ("_first",)

    def __init__(self) -> None:
        self._first: dict[tuple[int, int], str] = {}

    def first_name(self, rel: str, s: os.stat_result) -> str | None:
        """The name ``rel``'s inode was met under first: ``rel`` is then a
        hard link to it.  ``None``: ``rel`` is the first (or only) name, or
        a directory (never a link)."""
        if s.st_nlink < 2 or st.S_ISDIR(s.st_mode):
            return None
        key = (s.st_dev, s.st_ino)
        first = self._first.get(key)
        if first is None:
            self._first[key] = rel
        return first


def descends_into_excluded(ctx: BuildContext, path: str) -> bool:
    """Whether the dialect's walker reads the excluded directory ``path``."""
    return ctx.matcher.descent(ctx.dialect).reads(path)


def excluded_dirs_read(ctx: BuildContext) -> list[str] | None:
    """A superset of the excluded directories the walker reads (for
    exceptions); ``None`` when no finite list can be given from the rules
    (BuildKit with a wildcard exception, or a ``--minimal`` selection).
    The index stats them to prove that a listing did not change."""
    if ctx.selection is not None:
        return None
    return ctx.matcher.descent(ctx.dialect).literal_dirs()


def pruned_ahead(ctx: BuildContext) -> Iterator[str | None]:
    """The directories that :func:`walk_all` will report as pruned
    (excluded and not read for exceptions: one entry each), found the cheap
    way: only directories are listed and matched, nothing is statted, and
    breadth first, so that the big ones near the top (a root
    ``node_modules``) come first.  ``None`` after each directory listed: a
    point where the caller may stop for other work and come back.

    For ``size``: its parent process sizes what these hold while the forked
    walker is still on its way to them (with ``**/node_modules`` the walk
    of the bench tree meets the first one 40 % in), and uses a sum only
    for a directory the walker then reports, so a guess that the tree made
    wrong meanwhile costs time, never a wrong count.  The decisions are the
    walker's own (``decide``, the dialect's descent test, ctxpack's omitted
    output file); nothing with a ``--minimal`` selection.  Any error ends
    it quietly: the walk itself reports errors.
    """
    if ctx.selection is not None:
        return
    matcher = ctx.matcher
    descent = matcher.descent(ctx.dialect)
    decide, plan_for = matcher.decide, matcher.plan
    omitted = ctx.omitted
    level = [(ctx.root, "", matcher.plan("", 0, 1), 1)]
    try:
        while level:
            below = []
            for abs_dir, rel_dir, plan, depth in level:
                prefix = rel_dir + "/" if rel_dir else ""
                try:
                    with os.scandir(abs_dir) as it:
                        dirs = [de.name for de in it if de.is_dir(follow_symlinks=False)]
                except OSError:
                    continue  # the walker says what it makes of it
                for name in sorted(dirs):
                    rel = prefix + name
                    if omitted and rel in omitted:
                        continue
                    d = decide(rel, plan) if plan.candidates else NO_RULE
                    if d.excluded and not descent.reads(rel):
                        yield rel
                    else:
                        below.append((abs_dir + "/" + name, rel, plan_for(rel, d.bits, depth + 1), depth + 1))
                yield None
            level = below
    except Exception:  # a broken pattern, say: the walk raises it where the builder would
        return


def _listing_error(e: OSError, abs_dir: str, dialect: Dialect) -> ContextError:
    if isinstance(e, PermissionError):
        if dialect is Dialect.CLASSIC:
            return ContextError(f"can't stat '{abs_dir}'", abs_dir)
        return ContextError(f"open {abs_dir}: permission denied", abs_dir)
    if isinstance(e, FileNotFoundError):
        return ContextError(f"file ('{abs_dir}') not found or excluded by .dockerignore", abs_dir)
    return ContextError(f"cannot read directory '{abs_dir}': {e.strerror}", abs_dir)


def _unreadable_file(absp: str, dialect: Dialect) -> ContextError:
    if dialect is Dialect.CLASSIC:
        return ContextError(f"no permission to read from '{absp}'", absp)
    return ContextError(f"open {absp}: permission denied", absp)


def _scan(abs_dir: str, dialect: Dialect) -> list[os.DirEntry[str]]:
    """A directory's entries in Go's order (byte-wise by name)."""
    try:
        return fs.scandir_sorted(abs_dir)
    except OSError as e:
        raise _listing_error(e, abs_dir, dialect) from None


class _Denied(Exception):
    """A directory the walker may not list; ``error`` is what to raise if
    the builder fails on it."""

    def __init__(self, error: ContextError):
        self.error = error


# Deeper than this, directories are listed by path instead of through an open
# descriptor, so that a pathologically deep tree cannot run out of them.
_MAX_OPEN_DIRS = 128


def _scan_fd(abs_dir: str, dialect: Dialect, depth: int) -> tuple[list[os.DirEntry[str]], int]:
    """:func:`_scan` through an open descriptor (:func:`ctxpack.fs.scandir_fd`),
    or by path (descriptor ``-1``) below :data:`_MAX_OPEN_DIRS` levels.
    Permission errors come as :class:`_Denied` (the caller decides)."""
    try:
        if depth > _MAX_OPEN_DIRS:
            return fs.scandir_sorted(abs_dir), -1
        return fs.scandir_fd(abs_dir)
    except PermissionError as e:
        raise _Denied(_listing_error(e, abs_dir, dialect)) from None
    except OSError as e:
        raise _listing_error(e, abs_dir, dialect) from None


def _drain(entries: list[os.DirEntry[str]]) -> Iterator[os.DirEntry[str]]:
    """The entries in order, each let go once it is handed out: a directory
    of a million names then holds its sorted listing, not also a million
    cached ``lstat`` results (issue 16: about 600 bytes a name less)."""
    entries.reverse()
    pop = entries.pop
    while entries:
        yield pop()


Warn = Callable[[str], None]


def walk_all(ctx: BuildContext, *, excluded: bool = False, warn: Warn | None = None,
             on_error: OnError | None = None) -> Iterator[Entry]:
    """Yield the context's entries in upload order.

    With ``excluded=True`` also yield what was left out (``included=False``),
    at the place the walker met it; a pruned directory is one entry.
    Raises :class:`ContextError` for unreadable paths the builder would
    refuse, and :class:`~ctxpack.errors.PatternError` when a broken pattern
    is first evaluated.  ``warn`` hears of what the docker CLI only logs
    (a directory it cannot read below an excluded one, say).  With
    ``on_error``, an unreadable path below the root that the builder would
    fail on is handed to it instead and the walk goes on (an unreadable file
    is still yielded; an unreadable directory is yielded without children).
    """
    return _walk(ctx, ctx.root, "", ctx.matcher.plan("", 0, 1), 1, excluded, warn, on_error)


# Held directories: (entry, also_in_classic).  An excluded directory that is
# read for exceptions is sent lazily by BuildKit only; a directory read only
# because --minimal needs something below it is sent lazily by both.
_Held = tuple[Entry, bool]
_Frame = tuple[Iterator[os.DirEntry[str]], str, str, DirPlan, int, tuple[_Held, ...], int]


def _walk(ctx: BuildContext, abs_top: str, rel_top: str, top_plan: DirPlan, top_depth: int,
          excluded: bool, warn: Warn | None = None, on_error: OnError | None = None,
          reported: set[str] | None = None, sockets: bool = False) -> Iterator[Entry]:
    # One frame per open directory: its sorted children, where it is, the
    # plan for its children, (BuildKit) the excluded-but-descended ancestors
    # not yet emitted (they are sent before their first sent child), and
    # the descriptor its children are statted through.
    matcher = ctx.matcher
    dialect = ctx.dialect
    classic = dialect is Dialect.CLASSIC
    descent = matcher.descent(dialect)
    check_read = os.geteuid() != 0
    forced = {p[1:] for p in ctx.appended}
    links = HardLinks()
    decide = matcher.decide
    plan_for = matcher.plan
    selection = ctx.selection
    omitted = ctx.omitted
    kinds = _KINDS_AND_SOCKETS if sockets and not classic else _KINDS
    FILE, DIR, SYMLINK = EntryKind.FILE, EntryKind.DIR, EntryKind.SYMLINK
    stack: list[_Frame] = []

    def push(abs_dir: str, rel: str, plan: DirPlan, depth: int, pending: tuple[_Held, ...],
             excluded_dir: bool = False) -> bool:
        try:
            children, fd = _scan_fd(abs_dir, dialect, len(stack) + 1)
        except _Denied as e:
            if not stack or not (classic or excluded_dir):
                if on_error is None or not stack:
                    raise e.error from None
                on_error(e.error)  # a describing command goes on without its children
                return False
            # The walkers go on without the directory's contents: fsutil
            # skips an unreadable excluded directory (filter.go: "if skip &&
            # errors.Is(walkErr, os.ErrPermission) { return nil }"), and
            # go-archive logs "Tar: Can't stat file … to tar" and uploads the
            # rest.  (The classic CLI's validation, run first, fails on the
            # unreadable directories it reaches itself.)
            if classic and warn is not None and not (reported and abs_dir in reported):
                warn(f"{rel}: cannot read the directory (permission denied); the docker CLI logs "
                     f"\"Tar: Can't stat file\" and uploads the context without its contents")
            return False
        stack.append((_drain(children), abs_dir, rel, plan, depth, pending, fd))
        return True

    try:
        push(abs_top, rel_top, top_plan, top_depth, ())
        while stack:
            it, abs_dir, rel_dir, plan, depth, pending, _ = stack[-1]
            prefix = rel_dir + "/" if rel_dir else ""
            candidates = plan.candidates
            for de in it:
                name = de.name
                rel = prefix + name
                if omitted and rel in omitted:
                    continue  # ctxpack's own output file (BuildContext.omitting)
                d = decide(rel, plan) if candidates else NO_RULE
                if d.excluded:
                    try:
                        is_dir = de.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir and descent.reads(rel):
                        held = Entry(rel, DIR, None, rule=d.rule, included=False)
                        if push(abs_dir + "/" + name, rel, plan_for(rel, d.bits, depth + 1), depth + 1,
                                pending + ((held, False),), excluded_dir=True):
                            break
                        continue
                    if excluded:
                        yield Entry(rel, DIR if is_dir else FILE, None, rule=d.rule, included=False)
                    continue
                if selection is not None and rel not in forced and not selection.wants(rel):
                    if de.is_dir(follow_symlinks=False) and selection.may_contain(rel):
                        held = Entry(rel, DIR, None, rule=d.rule, included=False)
                        if push(abs_dir + "/" + name, rel, plan_for(rel, d.bits, depth + 1), depth + 1,
                                pending + ((held, True),)):
                            break
                        continue
                    continue  # not read by the build (--minimal)
                try:
                    sr = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished since the listing: go-archive logs and skips it
                except OSError as e:
                    absp = abs_dir + "/" + name
                    err = ContextError(f"can't stat '{absp}': {e.strerror}", absp)
                    if on_error is None:
                        raise err from None
                    on_error(err)
                    continue
                kind = kinds.get(sr.st_mode & 0o170000)
                if kind is None:
                    continue  # sockets: go-archive logs "sockets not supported" and skips
                if pending:
                    for held, in_classic in pending:
                        if not held.included and (in_classic or not classic):
                            held.included = True
                            try:
                                held.stat = os.lstat(os.path.join(ctx.root, held.path))
                            except OSError:
                                continue  # gone meanwhile: nothing to describe (the daemon creates parents)
                            yield held
                link = None
                if kind == SYMLINK:
                    link = os.readlink(abs_dir + "/" + name)
                elif kind != DIR and sr.st_nlink > 1:
                    # (A symlink's second name stays a symlink here, as a
                    # session sends it; the classic tar makes it a link to
                    # the first: ctxpack.tar.rows.builder_rows.)
                    first = links.first_name(rel, sr)
                    if first is not None:
                        kind, link = EntryKind.HARDLINK, first
                if check_read and kind == FILE and not os.access(abs_dir + "/" + name, os.R_OK):
                    err = _unreadable_file(abs_dir + "/" + name, dialect)
                    if on_error is None:
                        raise err
                    on_error(err)
                yield Entry(rel, kind, sr, link, d.rule, True, bool(forced) and rel in forced)
                if kind == DIR and push(abs_dir + "/" + name, rel, plan_for(rel, d.bits, depth + 1), depth + 1, ()):
                    break
            else:
                fd = stack.pop()[6]
                if fd >= 0:
                    os.close(fd)
    finally:
        for frame in stack:
            if frame[6] >= 0:
                os.close(frame[6])


def subtree_sends(ctx: BuildContext, rel: str) -> bool:
    """Whether anything below the excluded directory ``rel`` is sent.

    Only meaningful when the dialect's walker descends into it; used to
    explain BuildKit's lazily sent parent directories.
    """
    chain = ctx.matcher.decide_path(rel)
    bits = chain[-1][1].bits
    absp = os.path.join(ctx.root, rel)
    if not os.path.isdir(absp) or os.path.islink(absp):
        return False
    if not os.access(absp, os.R_OK | os.X_OK):
        return False  # fsutil skips an excluded directory it cannot read: nothing below is sent
    depth = rel.count("/") + 2
    return any(e.included for e in _walk(ctx, absp, rel, ctx.matcher.plan(rel, bits, depth), depth, False))


def dockerfile_name_in_tar(ctx: BuildContext) -> str:
    """The Dockerfile's name in this context's tar: the ``dockerfile``
    parameter a daemon's ``/build`` needs (an injected name for stdin or a
    Dockerfile outside the context)."""
    if ctx.dockerfile_data is not None:
        return injected_dockerfile_name(ctx)
    return ctx.dockerfile or "Dockerfile"


def docker_read_error(ctx: BuildContext, rel: str) -> ContextError | None:
    """The error the dialect's builder stops with on ``rel`` or on a directory
    it lists on the way there, or ``None``.

    The walker lists every directory it sends or searches for exceptions;
    the classic CLI's validation also lists each directory before judging it
    (so an excluded but unreadable directory fails there) and opens every
    file it keeps.  Only ``rel`` and its ancestors are looked at, not the
    rest of the context (``ls`` finds those).
    """
    if os.geteuid() == 0 or not rel:
        return None  # root reads everything, as it does for the builder
    classic = ctx.dialect is Dialect.CLASSIC
    parts = rel.split("/")
    chain = ctx.matcher.decide_path(rel)
    descent = ctx.matcher.descent(ctx.dialect)
    m = ctx.file_matcher
    walked = validated = True  # the walker / the classic validation reach this level
    anc = 0
    for k, (sub, d) in enumerate(chain):
        absp = os.path.join(ctx.root, *parts[: k + 1])
        try:
            mode = os.lstat(absp).st_mode
        except PermissionError:
            return ContextError(f"can't stat '{absp}'", absp) if (walked or (classic and validated)) else None
        except OSError:
            return None  # does not exist: nothing to read
        is_dir = st.S_ISDIR(mode)
        if validated and classic:
            if is_dir:
                if not os.access(absp, os.R_OK | os.X_OK):
                    return ContextError(f"can't stat '{absp}'", absp)  # listed before it is judged
                if m.matches_or_parent_matches_with(sub, anc):
                    validated = False
                anc = m.self_or_ancestor_bits(sub, anc)
            elif st.S_ISREG(mode) and not m.matches_or_parent_matches_with(sub, anc) and not os.access(absp, os.R_OK):
                return ContextError(f"no permission to read from '{absp}'", absp)
        if walked:
            if d.excluded and not (is_dir and descent.reads(sub)):
                walked = False
            elif is_dir and not os.access(absp, os.R_OK | os.X_OK):
                if not classic and not d.excluded:
                    return _listing_error(PermissionError(), absp, ctx.dialect)
                walked = False  # the walker goes on without its contents (see _walk's push)
            elif st.S_ISREG(mode) and not d.excluded and not os.access(absp, os.R_OK):
                return _unreadable_file(absp, ctx.dialect)
        if not is_dir:
            break
    return None


def walk(ctx: BuildContext) -> Iterator[Entry]:
    """The entries the builder sends, in upload order (see :func:`walk_all`)."""
    return (e for e in walk_all(ctx) if e.included)

def needs_classic_validation(ctx: BuildContext) -> bool:
    """Whether :func:`validate_classic` can find anything the walk would not.

    It can report a broken pattern the walk never evaluates, and permission
    problems; as root nothing is unreadable, so with well-formed patterns the
    pass is skipped.
    """
    if ctx.dialect is not Dialect.CLASSIC:
        return False
    broken = any(r.pattern.error is not None for r in ctx.file_matcher.rules)
    return broken or os.geteuid() != 0


def validate_classic(ctx: BuildContext, on_error: OnError | None = None) -> None:
    """The docker CLI's ``ValidateContextDirectory`` (semantics note §7).

    Walks the whole context with ``MatchesOrParentMatches`` and the rules as
    read from the file (before the CLI re-adds the Dockerfile), pruning
    excluded directories; lists every directory it enters *before* judging
    it (Go's ``filepath.Walk``), so an unreadable directory fails even when
    it is itself excluded; opens every kept file except symlinks and FIFOs.
    With ``on_error``, unreadable paths below the root go there and the
    validation goes on.
    """
    m = ctx.file_matcher
    mopm = m.matches_or_parent_matches_with
    anc_of = m.self_or_ancestor_bits

    def report(err: ContextError) -> None:
        if on_error is None:
            raise err
        on_error(err)

    def enter(abs_dir: str, rel_dir: str, parent_anc: int) -> tuple[Iterator[os.DirEntry[str]], int] | None:
        try:
            children = _scan(abs_dir, Dialect.CLASSIC)  # listed before judging, as filepath.Walk does
        except ContextError as e:
            if not rel_dir:
                raise
            report(e)
            return None
        if rel_dir and mopm(rel_dir, parent_anc):
            return None  # filepath.SkipDir
        return iter(children), (anc_of(rel_dir, parent_anc) if rel_dir else 0)

    root = enter(ctx.root, "", 0)
    assert root is not None
    # Frames: (children, abs dir, rel dir, bits of rules matching the dir or an ancestor)
    stack: list[tuple[Iterator[os.DirEntry[str]], str, str, int]] = [(root[0], ctx.root, "", root[1])]
    while stack:
        it, abs_dir, rel_dir, anc = stack[-1]
        de = next(it, None)
        if de is None:
            stack.pop()
            continue
        rel = rel_dir + "/" + de.name if rel_dir else de.name
        if rel in ctx.omitted:
            continue
        absp = abs_dir + "/" + de.name
        try:
            mode = de.stat(follow_symlinks=False).st_mode
        except FileNotFoundError:
            raise ContextError(f"file ('{absp}') not found or excluded by .dockerignore", absp) from None
        except PermissionError:
            report(ContextError(f"can't stat '{absp}'", absp))
            continue
        if st.S_ISDIR(mode):
            sub = enter(absp, rel, anc)
            if sub is not None:
                stack.append((sub[0], absp, rel, sub[1]))
            continue
        if mopm(rel, anc) or st.S_ISLNK(mode) or st.S_ISFIFO(mode):
            continue
        try:
            fd = os.open(absp, fs.FILE_FLAGS)
        except PermissionError:
            report(ContextError(f"no permission to read from '{absp}'", absp))
            continue
        except OSError:
            continue
        os.close(fd)


def list_entries(ctx: BuildContext, *, excluded: bool = False, warn: Warn | None = None,
                 on_error: OnError | None = None, walked: Iterable[Entry] | None = None,
                 sockets: bool = False) -> Iterator[Entry]:
    """Entries in upload order, as the context's dialect sends them.

    ``walked`` stands for :func:`walk_all`'s output (with the same
    ``excluded``) when the caller already has it, as a running
    ``ctxpack watch`` does; the caller vouches that it is current.

    For the classic dialect this runs the CLI's validation first where it
    could fail (broken patterns, permissions); and for a Dockerfile on
    standard input or outside the context it does what the CLI does: the
    Dockerfile travels as ``.dockerfile.<id>`` at the end, and
    ``.dockerignore`` (rewritten in place, or added) names it so that the
    daemon removes both after reading them (semantics note §5.1).
    ``warn`` and ``on_error``: see :func:`walk_all`.  ``sockets``: the
    BuildKit dialect also lists unix sockets (kind ``socket``), as the
    session serves them; tars never hold them (``walked`` entries are taken
    as they are).
    """
    reported: set[str] = set()  # what the validation already reported: not warned about again

    def report(error: ContextError) -> None:
        reported.add(error.path or "")
        assert on_error is not None
        on_error(error)

    if walked is None and needs_classic_validation(ctx):
        validate_classic(ctx, report if on_error is not None else None)
    inject = ctx.dialect is Dialect.CLASSIC and ctx.dockerfile_data is not None
    name = injected_dockerfile_name(ctx) if inject else ""
    had_ignore = False
    entries = walked if walked is not None else _walk(
        ctx, ctx.root, "", ctx.matcher.plan("", 0, 1), 1, excluded, warn, on_error, reported, sockets)
    for e in entries:
        if inject and e.included and e.path == ".dockerignore" and e.kind == EntryKind.FILE:
            had_ignore = True
            with open(os.path.join(ctx.root, ".dockerignore"), "rb") as f:
                e.data = f.read() + b"\n" + name.encode() + b"\n"
        yield e
    if inject:
        assert ctx.dockerfile_data is not None
        yield Entry(name, EntryKind.FILE, None, forced=True, data=ctx.dockerfile_data)
        if not had_ignore:
            yield Entry(".dockerignore", EntryKind.FILE, None, forced=True, data=b".dockerignore\n" + name.encode() + b"\n")


def entries_for_builder(ctx: BuildContext, *, warn: Warn | None = None,
                        walked: Iterable[Entry] | None = None) -> Iterator[Entry]:
    """:func:`list_entries`, plus the Dockerfile at the end when the rules
    keep it out (BuildKit, ``--minimal``): whatever is handed to a builder as
    the context (a tar, a fingerprint) must let it read its Dockerfile.  The
    classic dialect already forces it in, as the docker CLI does.
    ``walked``: as for :func:`list_entries`."""
    sent = False
    for e in list_entries(ctx, warn=warn, walked=walked):
        if e.path == ctx.dockerfile:
            sent = True
        yield e
    if ctx.dockerfile is not None and not sent and ctx.dockerfile_path:
        path = os.path.join(ctx.root, ctx.dockerfile)
        try:
            s = os.lstat(path)
        except OSError as err:
            raise ContextError(f"cannot stat Dockerfile: {err.strerror}", path) from None
        yield Entry(ctx.dockerfile, EntryKind.FILE, s, forced=True)


def injected_dockerfile_name(ctx: BuildContext) -> str:
    """The name under which the classic CLI injects an outside Dockerfile.

    Docker picks ``.dockerfile.`` + 20 random hex digits; ctxpack derives
    them from the Dockerfile's content so that output is reproducible, unless
    the context names it (``ctx.injected_name``).
    """
    if ctx.injected_name is not None:
        return ctx.injected_name
    return ".dockerfile." + hashlib.sha256(ctx.dockerfile_data or b"").hexdigest()[:20]
