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
from dataclasses import dataclass

from ctxpack.audit import EntryObserver, Progress, SizeReport, measure
from ctxpack.context import BuildContext, Dialect, open_context
from ctxpack.ignore.matcher import Rule
from ctxpack.walker import descends_into_excluded, injected_dockerfile_name, list_entries, subtree_sends

__all__ = ["list_entries", "injected_dockerfile_name", "Explanation", "explain_path", "explain", "size", "source_warnings"]


@dataclass(frozen=True)
class Explanation:
    """Why one path is or is not in the context, for one dialect.

    ``sent`` is the verdict; ``rule`` the deciding rule (None: no rule
    matched); ``pruned_at`` the excluded ancestor directory the walker never
    reads, if that is why the path is absent; ``forced`` says the classic
    CLI re-adds it (Dockerfile, ``.dockerignore``); ``as_parent`` says
    BuildKit sends an excluded directory because something below it is sent.
    """

    path: str
    dialect: Dialect
    sent: bool
    rule: Rule | None
    pruned_at: str | None = None
    forced: bool = False
    as_parent: bool = False

    def describe(self) -> str:
        """A one-line reason, like ``git check-ignore -v``."""
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


def explain_path(ctx: BuildContext, path: str) -> Explanation:
    """Explain the walker's verdict on ``path`` (relative to the context)."""
    rel = _clean_query(path)
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
    """For each path: (the chosen dialect's explanation, the other dialect's)."""
    dialect = Dialect(dialect)
    other = Dialect.CLASSIC if dialect is Dialect.BUILDKIT else Dialect.BUILDKIT
    a = open_context(root, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file)
    b = open_context(root, dockerfile=dockerfile, dialect=other, ignore_file=ignore_file)
    out = []
    for p in paths:
        rel = os.path.relpath(os.path.abspath(p), a.root) if os.path.isabs(p) else p
        out.append((explain_path(a, rel), explain_path(b, rel)))
    return out


def size(ctx: BuildContext, *, top: int = 10, progress: Progress | None = None, compare_full: bool = False,
         on_entry: EntryObserver | None = None) -> SizeReport:
    """Measure what the context sends and what its ignore rules keep out.

    With ``compare_full`` (for a ``--minimal`` context) also count the full
    context, to show what the minimal one saves.  ``on_entry`` sees each
    entry of the measured context (see :func:`ctxpack.audit.measure`).
    """
    rep = measure(ctx, lambda: list_entries(ctx, excluded=True), top=top, progress=progress, on_entry=on_entry)
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
