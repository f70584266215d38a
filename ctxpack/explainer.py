"""The library's front door: list and explain a build context.

Everything the CLI does goes through these functions, so other builders can
import the same behaviour::

    import ctxpack
    ctx = ctxpack.open_context(".", dialect="classic")
    for entry in ctxpack.walk(ctx):
        print(entry.name)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ctxpack.audit import EntryObserver, SizeReport, measure, measure_context
from ctxpack.context import BuildContext, Dialect, open_context
from ctxpack.errors import ContextError
from ctxpack.ignore.matcher import Rule
from ctxpack.walker import (
    Entry, OnError, Progress, descends_into_excluded, docker_read_error, injected_dockerfile_name, list_entries, subtree_sends,
)

__all__ = [
    "list_entries", "injected_dockerfile_name", "Explanation", "explain_path", "explain", "size", "source_warnings",
    "context_path",
]


@dataclass(frozen=True)
class Explanation:
    """Why one path is or is not in the context, for one dialect.

    ``sent`` is the verdict; ``rule`` the deciding rule (None: no rule
    matched); ``pruned_at`` the excluded ancestor directory the walker never
    reads, if that is why the path is absent; ``forced`` says the classic
    CLI re-adds it (Dockerfile, ``.dockerignore``); ``as_parent`` says
    BuildKit sends an excluded directory because something below it is sent.
    ``exists`` says whether the path is there (rules decide paths that do
    not exist too); ``docker_error`` is the error the builder would stop
    with on this path or a directory above it (unreadable), if any.
    """

    path: str
    dialect: Dialect
    sent: bool
    rule: Rule | None
    pruned_at: str | None = None
    forced: bool = False
    as_parent: bool = False
    exists: bool = True
    docker_error: str | None = None

    def describe(self) -> str:
        """A one-line reason, like ``git check-ignore -v``, with what the
        builder would make of the path if it does not exist or cannot be read."""
        text = self.verdict()
        if not self.exists:
            text += " (no such file or directory)"
        if self.docker_error:
            text += f"; docker build would fail: {self.docker_error}"
        return text

    def verdict(self) -> str:
        """The rules' verdict alone (no note on existence or readability)."""
        if not self.path:
            return "the context directory itself: the root of the upload"
        if self.forced:
            return f"sent: the docker CLI always sends it (appended {self.rule.text if self.rule else ''})".rstrip()
        if self.pruned_at is not None:
            why = f" by {self.rule}" if self.rule else ""
            return f"excluded: directory {self.pruned_at!r} is excluded{why} and not searched for exceptions"
        if self.as_parent:
            return f"sent as the parent of re-included paths, although excluded by {self.rule}"
        if self.rule is None:
            return "included: no rule"
        verb = "excluded" if not self.sent else "included"
        return f"{verb} by {self.rule}"


def _clean_query(path: str) -> str:
    p = path.replace(os.sep, "/").strip("/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    return "/".join(parts)


def context_path(ctx: BuildContext, path: str, base: str | None = None) -> str:
    """``path`` (relative to ``base``, default: the context root; or absolute)
    as a path relative to the context, ``/``-separated ("" for the root).

    ``..`` is resolved by name, as the user wrote it; directories above the
    path may be symlinks to the context (``/tmp`` → ``/private/tmp``).
    Raises :class:`ContextError` for an empty path or one outside the
    context, as ``git check-ignore`` refuses paths outside the repository.
    """
    if path == "":
        raise ContextError("'': an empty path is not a path in the context", path)
    start = os.path.abspath(base) if base is not None else ctx.root
    full = os.path.normpath(os.path.join(start, path))
    # The root as the user named it (when base names it), then as it really is,
    # then the path with the directories above it resolved.
    tries = [(full, ctx.root), (os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full)), ctx.root)]
    if start != ctx.root and os.path.realpath(start) == ctx.root:
        tries.insert(0, (full, start))
    for candidate, root in tries:
        rel = os.path.relpath(candidate, root)
        if rel == ".":
            return ""
        if rel != ".." and not rel.startswith("../"):
            return rel.replace(os.sep, "/")
    raise ContextError(f"{path}: outside the context {ctx.root}", path)


def explain_path(ctx: BuildContext, path: str) -> Explanation:
    """Explain the walker's verdict on ``path`` (relative to the context)."""
    rel = _clean_query(path)
    if not rel:
        return Explanation("", ctx.dialect, True, None)
    ex = _verdict(ctx, rel)
    try:
        os.lstat(os.path.join(ctx.root, rel))
        exists = True
    except PermissionError:
        exists = True  # cannot tell: a directory above it is unreadable (docker_read_error says which)
    except OSError:
        exists = False
    err = docker_read_error(ctx, rel) if exists else None
    if exists and err is None:
        return ex
    return dataclasses.replace(ex, exists=exists, docker_error=str(err) if err else None)


def _verdict(ctx: BuildContext, rel: str) -> Explanation:
    chain = ctx.matcher.decide_path(rel)
    for sub, d in chain[:-1]:
        if d.excluded and not descends_into_excluded(ctx, sub):
            return Explanation(rel, ctx.dialect, False, d.rule, pruned_at=sub)
    d = chain[-1][1]
    forced = d.rule is not None and d.rule.source == "<docker cli>"
    if (
        d.excluded
        and ctx.dialect is Dialect.BUILDKIT
        and descends_into_excluded(ctx, rel)
        and subtree_sends(ctx, rel)
    ):
        # fsutil sends an excluded directory before its first sent descendant.
        return Explanation(rel, ctx.dialect, True, d.rule, as_parent=True)
    return Explanation(rel, ctx.dialect, not d.excluded, d.rule, forced=forced)


def explain(
    root: str | os.PathLike[str],
    paths: list[str],
    *,
    dockerfile: str | None = None,
    dialect: Dialect | str = Dialect.BUILDKIT,
    ignore_file: str | None = None,
) -> list[tuple[Explanation, Explanation]]:
    """For each path: (the chosen dialect's explanation, the other dialect's).

    Paths are relative to ``root`` (or absolute); one outside the context,
    or an empty one, raises :class:`ContextError` (:func:`context_path`).
    """
    dialect = Dialect(dialect)
    other = Dialect.CLASSIC if dialect is Dialect.BUILDKIT else Dialect.BUILDKIT
    a = open_context(root, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file)
    b = open_context(root, dockerfile=dockerfile, dialect=other, ignore_file=ignore_file)
    out = []
    for p in paths:
        rel = context_path(a, p, os.fspath(root))
        out.append((explain_path(a, rel), explain_path(b, rel)))
    return out


def size(ctx: BuildContext, *, top: int = 10, progress: Progress | None = None, compare_full: bool = False,
         on_entry: EntryObserver | None = None, on_error: OnError | None = None,
         walked: Iterable[Entry] | None = None) -> SizeReport:
    """Measure what the context sends and what its ignore rules keep out.

    With ``compare_full`` (for a ``--minimal`` context) also count the full
    context, to show what the minimal one saves.  ``on_entry`` sees each
    entry of the measured context (see :func:`ctxpack.audit.measure`).
    ``on_error`` receives the paths the builder could not read, and the
    measuring goes on (:func:`~ctxpack.walker.walk_all`); without it the
    first one raises.  ``walked``: :func:`~ctxpack.walker.walk_all`'s
    output with ``excluded=True`` and each entry's ``lstat``, when the
    caller has it (a running ``ctxpack watch``:
    :func:`ctxpack.watch.client.warm_entries`).
    """
    if walked is None and on_entry is None:  # the walk can be forked (an observer needs the entries here)
        rep = measure_context(ctx, top=top, progress=progress, on_error=on_error)
    else:
        rep = measure(ctx, lambda: list_entries(ctx, excluded=True, on_error=on_error, walked=walked), top=top,
                      progress=progress, on_entry=on_entry)
    if compare_full and ctx.selection is not None:
        full = dataclasses.replace(ctx, selection=None)
        rep.full_files = rep.full_bytes = 0
        for e in list_entries(full):
            if e.kind == "file":
                rep.full_files += 1
                rep.full_bytes += len(e.data) if e.data is not None else (e.stat.st_size if e.stat else 0)
    return rep


def source_warnings(ctx: BuildContext) -> list[str]:
    """For a ``--minimal`` context: literal COPY/ADD sources that exist but that
    the ignore rules keep out, or that do not exist (the build would fail
    with "not found"), said before anything is uploaded."""
    out: list[str] = []
    if ctx.analysis is None:
        return out
    for src in ctx.analysis.sources:
        if any(c in src.pattern for c in "*?[\\"):
            continue
        where = f"{ctx.analysis.dockerfile}:{src.line}"
        if not os.path.lexists(os.path.join(ctx.root, src.pattern)):
            out.append(f"{where}: {src.instruction} source {src.pattern!r} does not exist: the build will fail with 'not found'")
            continue
        ex = explain_path(ctx, src.pattern)
        if not ex.sent:
            out.append(f"{where}: {src.instruction} source {src.pattern!r} is excluded ({ex.describe()}): the build will fail with 'not found'")
    return out
