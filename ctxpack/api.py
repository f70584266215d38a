"""The library's front door: list and explain a build context.

Everything the CLI does goes through these functions, so other builders can
import the same behaviour::

    import ctxpack
    ctx = ctxpack.open_context(".", dialect="classic")
    for entry in ctxpack.walk(ctx):
        print(entry.name)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .audit import Progress, SizeReport, measure
from .context import BuildContext, Dialect, open_context
from .matcher import Rule
from .walker import (
    Entry,
    EntryKind,
    descends_into_excluded,
    needs_classic_validation,
    subtree_sends,
    validate_classic,
    walk_all,
)

__all__ = ["list_entries", "Explanation", "explain_path", "explain", "size"]


def list_entries(ctx: BuildContext, *, excluded: bool = False) -> Iterator[Entry]:
    """Entries in upload order, as the context's dialect sends them.

    For the classic dialect this runs the CLI's validation first where it
    could fail (broken patterns, permissions); and for a Dockerfile on
    standard input or outside the context it does what the CLI does: the
    Dockerfile travels as ``.dockerfile.<id>`` at the end, and
    ``.dockerignore`` (rewritten in place, or added) names it so that the
    daemon removes both after reading them (semantics note §5.1).
    """
    if needs_classic_validation(ctx):
        validate_classic(ctx)
    inject = ctx.dialect is Dialect.CLASSIC and ctx.dockerfile_data is not None
    name = injected_dockerfile_name(ctx) if inject else ""
    had_ignore = False
    for e in walk_all(ctx, excluded=excluded):
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


def injected_dockerfile_name(ctx: BuildContext) -> str:
    """The name under which the classic CLI injects an outside Dockerfile.

    Docker picks ``.dockerfile.`` + 20 random hex digits; ctxpack derives
    them from the Dockerfile's content so that output is reproducible.
    """
    return ".dockerfile." + hashlib.sha256(ctx.dockerfile_data or b"").hexdigest()[:20]


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


def size(ctx: BuildContext, *, top: int = 10, progress: Progress | None = None) -> SizeReport:
    """Measure what the context sends and what its ignore rules keep out."""
    return measure(ctx, lambda: list_entries(ctx, excluded=True), top=top, progress=progress)
