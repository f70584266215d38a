"""Resolving a build context: its root, Dockerfile, ignore file and rules.

Which ignore file applies, and where the Dockerfile is, differ per builder
(semantics note §5):

* classic (the docker CLI's own upload, docker-py, any Engine API client):
  only ``<context>/.dockerignore``; ``-f`` is relative to the current
  directory; the CLI re-adds an excluded Dockerfile and ``.dockerignore``
  as ``!`` exceptions, judged with the old single-parent matcher.
* BuildKit (``docker build`` since Engine 23): ``<Dockerfile>.dockerignore``
  next to the Dockerfile replaces ``<context>/.dockerignore``; the
  Dockerfile and ignore file travel separately and are never forced in.

An explicit ignore file (``--ignore-file``) replaces both.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ctxpack.ignore.dialect import Dialect
from ctxpack.errors import ContextError, DockerfileError
from ctxpack.fs import scandir_sorted
from ctxpack.ignore.reader import RawRule, read_ignore_file
from ctxpack.ignore.matcher import Matcher

if TYPE_CHECKING:  # the Dockerfile analysis is only loaded for --minimal
    from ctxpack.dockerfile.analysis import Analysis, Selection

__all__ = ["Dialect", "BuildContext", "open_context", "missing_dockerfile_error", "nearby_dockerfiles",
           "require_dockerfile"]


@dataclass(frozen=True)
class BuildContext:
    """A resolved build context, ready to walk.

    ``root`` is absolute with symlinks resolved (as the docker CLI resolves
    it).  ``dockerfile`` is the Dockerfile's path relative to ``root`` when it
    lies inside the context, ``None`` otherwise; ``dockerfile_path`` is its
    absolute path (``None`` for stdin or when there is none).
    ``ignore_source`` names the ignore file in use (``None`` if none).
    ``matcher`` holds the rules the walker applies: for the classic dialect
    they include the exceptions the CLI appends (``appended``).
    ``omitted`` names files that are never part of the context, whatever
    the rules say (ctxpack's own output, see :meth:`omitting`).
    ``injected_name`` fixes the tar name of a Dockerfile from stdin or from
    outside the context (default: derived from its content, see
    :func:`ctxpack.walker.injected_dockerfile_name`); docker-py callers
    choose it themselves.
    """

    root: str
    dialect: Dialect
    dockerfile: str | None
    dockerfile_path: str | None
    dockerfile_outside: bool
    dockerfile_stdin: bool
    ignore_source: str | None
    rules: tuple[RawRule, ...]
    matcher: Matcher
    file_matcher: Matcher
    appended: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    dockerfile_data: bytes | None = None
    analysis: "Analysis | None" = None
    selection: "Selection | None" = None
    omitted: frozenset[str] = frozenset()
    injected_name: str | None = None

    def omitting(self, *paths: str) -> "BuildContext":
        """This context without the given files (paths as the OS names them).

        For ctxpack's own output: ``pack -o ctx.tar`` inside the context
        must not pack ``ctx.tar`` of the last run, nor the temporary file it
        is writing now.  Paths outside the context are ignored; nothing else
        of the walk changes.
        """
        names = set(self.omitted)
        for p in paths:
            absolute = os.path.abspath(p)
            parent = os.path.realpath(os.path.dirname(absolute))
            rel = _rel_inside(self.root, os.path.join(parent, os.path.basename(absolute)))
            if rel is not None and rel != ".":
                names.add(rel)
        return dataclasses.replace(self, omitted=frozenset(names))

    def dockerfile_shown(self, default: str = "Dockerfile") -> str:
        """The Dockerfile's path as messages show it: relative to the current
        directory, absolute where that would climb out of it (``-f
        /tmp/Dockerfile`` from a deep directory is not ``../../../tmp/...``);
        ``default`` when it has no path (stdin)."""
        return default if self.dockerfile_path is None else _shown(self.dockerfile_path)

    def dockerfile_bytes(self) -> bytes | None:
        """The Dockerfile's content (from stdin, outside or inside the
        context), or ``None`` when there is none or it cannot be read."""
        if self.dockerfile_data is not None:
            return self.dockerfile_data
        if self.dockerfile_path is None:
            return None
        try:
            with open(self.dockerfile_path, "rb") as f:
                return f.read()
        except OSError:
            return None


def _shown(path: str) -> str:
    # relative to the current directory, unless that climbs out of it
    rel = os.path.relpath(path)
    return path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _resolve_root(path: str) -> str:
    # The docker CLI's messages (cli/command/image/build: prepare the context).
    absolute = os.path.abspath(path)
    try:
        real = os.path.realpath(absolute, strict=True)
    except FileNotFoundError:
        raise ContextError(f'unable to prepare context: path "{path}" not found', absolute) from None
    except OSError as e:
        raise ContextError(f"unable to prepare context: unable to evaluate symlinks in context path: "
                           f"lstat {absolute}: {(e.strerror or str(e)).lower()}", absolute) from None
    if not os.path.isdir(real):
        raise ContextError(f"unable to prepare context: context must be a directory: {real}", real)
    return real


# Directories where nobody keeps the Dockerfile they mean, and that can be huge.
_NOT_SEARCHED = frozenset((".git", "node_modules", ".venv", "venv", "__pycache__", "target", "bin", "obj",
                           "dist", "build", "vendor", ".tox", ".mypy_cache", ".cache", ".next"))


def _is_dockerfile_name(name: str) -> bool:
    low = name.lower()
    if low.endswith(".dockerignore"):
        return False
    return low in ("dockerfile", "containerfile") or low.endswith(".dockerfile") or low.startswith("dockerfile.")


def nearby_dockerfiles(root: str, *, limit: int = 5, depth: int = 4, max_dirs: int = 2000) -> list[str]:
    """Dockerfiles below ``root`` (``Dockerfile``, ``Containerfile``,
    ``*.Dockerfile``, ``Dockerfile.*``), shallowest first, as ``-f`` takes
    them (relative to the current directory), for the message about a
    missing default Dockerfile.  Bounded: ``depth`` levels, ``max_dirs``
    directories, never into dependency or build-output directories."""
    found: list[str] = []
    level = [root]
    seen = 0
    for _ in range(depth):
        below: list[str] = []
        for d in level:
            seen += 1
            if seen > max_dirs:
                return found
            try:
                entries = scandir_sorted(d)
            except OSError:
                continue
            for de in entries:
                try:
                    if de.is_dir(follow_symlinks=False):
                        if de.name not in _NOT_SEARCHED:
                            below.append(de.path)
                    elif _is_dockerfile_name(de.name) and de.is_file() and len(found) < limit:
                        found.append(os.path.relpath(de.path))
                except OSError:
                    continue
        if len(found) >= limit:
            break
        level = below
    return found


def _dockerfile_not_found(path: str, root: str) -> DockerfileError:
    # The docker CLI's message (it resolves the -f path's symlinks first).
    err = DockerfileError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                          f"lstat {path}: no such file or directory")
    nearby = nearby_dockerfiles(root)
    if nearby:
        err.hint = "Dockerfiles in the context: " + ", ".join(f"-f {p}" for p in nearby)
    return err


def missing_dockerfile_error(ctx: "BuildContext") -> DockerfileError | None:
    """The docker CLI's error when the default Dockerfile is missing, with the
    Dockerfiles found in the context as a hint; ``None`` when there is one
    (or it comes from ``-f``/stdin).  ``pack`` raises it, as ``docker build``
    refuses such a context; ``ls`` and ``size`` go on with a note."""
    if ctx.dockerfile_path is not None or ctx.dockerfile_stdin:
        return None
    return _dockerfile_not_found(os.path.join(ctx.root, "Dockerfile"), ctx.root)


def require_dockerfile(root: str, dockerfile: str | None) -> None:
    """Raise the docker CLI's :class:`DockerfileError` (with the
    Dockerfiles nearby as a hint) when the Dockerfile ``open_context`` would
    use does not exist; stdin (``-``) always has one.  ``build`` checks
    this before connecting, as ``docker build`` does."""
    if dockerfile == "-":
        return
    notes: list[str] = []
    loc = _locate_dockerfile(os.path.abspath(root), dockerfile, notes)
    if loc.abs is None:
        raise _dockerfile_not_found(os.path.join(os.path.abspath(root), "Dockerfile"), os.path.abspath(root))


def _rel_inside(root: str, path: str) -> str | None:
    rel = os.path.relpath(path, root)
    if rel == ".." or rel.startswith("../"):
        return None
    return rel.replace(os.sep, "/")


def select_ignore_file(
    root: str, dockerfile: str | None, dialect: Dialect, ignore_file: str | None
) -> tuple[str, str]:
    """The ignore file that applies: (absolute path, name for messages).

    An explicit ``ignore_file`` wins; BuildKit prefers a non-empty
    ``<Dockerfile>.dockerignore`` beside the Dockerfile as given (the
    frontend's dockerfile mount is the ``-f`` file's directory); otherwise
    ``<context>/.dockerignore``.  The path may not exist.
    """
    if ignore_file is not None:
        path = os.path.abspath(ignore_file)
        if not os.path.exists(path):
            raise ContextError(f"ignore file not found: {ignore_file}", path)
        return path, ignore_file
    if dialect is Dialect.BUILDKIT and dockerfile != "-":
        given = os.path.abspath(dockerfile) if dockerfile else os.path.join(root, "Dockerfile")
        per_df = given + ".dockerignore"
        try:
            if os.path.getsize(per_df) > 0:
                return per_df, os.path.relpath(per_df)
        except OSError:
            pass
    return os.path.join(root, ".dockerignore"), ".dockerignore"


@dataclass(frozen=True)
class _DockerfileLocation:
    """Where the Dockerfile is: absolute path (``None`` for stdin or none),
    path inside the context (``None`` outside), and how it was given."""

    abs: str | None
    rel: str | None
    stdin: bool

    @property
    def outside(self) -> bool:
        return self.abs is not None and self.rel is None


def _locate_dockerfile(root: str, dockerfile: str | None, notes: list[str]) -> _DockerfileLocation:
    """Find the Dockerfile as the docker CLI does (``-f`` relative to the
    current directory; by default ``Dockerfile``, else ``dockerfile``)."""
    if dockerfile == "-":
        return _DockerfileLocation(None, None, True)
    if dockerfile is None:
        df_abs = os.path.join(root, "Dockerfile")
        # The CLI falls back to "dockerfile" only when "Dockerfile" is absent.
        if not os.path.lexists(df_abs) and os.path.lexists(os.path.join(root, "dockerfile")):
            df_abs = os.path.join(root, "dockerfile")
    else:
        df_abs = os.path.abspath(dockerfile)
    try:
        real = os.path.realpath(df_abs, strict=True)
    except OSError:
        if dockerfile is not None:
            raise _dockerfile_not_found(df_abs, root) from None
        err = _dockerfile_not_found(df_abs, root)
        notes.append(f"no Dockerfile in {root}: docker build would fail" + (f"; {err.hint}" if err.hint else ""))
        return _DockerfileLocation(None, None, False)
    return _DockerfileLocation(real, _rel_inside(root, real), False)


def _dockerfile_data(loc: _DockerfileLocation, stdin_dockerfile: bytes | None) -> bytes | None:
    """The Dockerfile's bytes when they are not in the context (stdin, or a
    file outside it): the tar carries them under an injected name."""
    if loc.stdin:
        return stdin_dockerfile if stdin_dockerfile is not None else b""
    if loc.outside and loc.abs is not None:
        try:
            with open(loc.abs, "rb") as f:
                return f.read()
        except OSError as e:
            raise DockerfileError(f"cannot read Dockerfile {loc.abs}: {e.strerror}") from None
    return None


def _classic_reincludes(root: str, file_matcher: Matcher, loc: _DockerfileLocation) -> list[str]:
    """The exceptions the classic CLI appends (``TrimBuildFilesFromExcludes``):
    ``.dockerignore`` and the Dockerfile's relative path, each re-added when
    the deprecated single-parent matcher excludes it."""
    appended: list[str] = []
    if file_matcher.matches_single_parent(".dockerignore"):
        appended.append("!.dockerignore")
    if loc.stdin or loc.abs is None:
        return appended
    df_pattern = (loc.rel if loc.rel is not None else os.path.relpath(loc.abs, root)).replace(os.sep, "/")
    if file_matcher.matches_single_parent(df_pattern):
        appended.append("!" + df_pattern)
    return appended


def _minimal_selection(
    root: str, dialect: Dialect, loc: _DockerfileLocation, df_data: bytes | None,
    target: str | None, build_args: dict[str, str] | None, notes: list[str], platform: str | None = None,
) -> tuple[Analysis, Selection | None]:
    """Analyse the Dockerfile and, where the analysis is sure, the selection
    of paths the build can read (``--minimal``)."""
    from ctxpack.dockerfile.analysis import Selection, analyze

    if df_data is not None:
        text = df_data
    elif loc.abs is not None:
        with open(loc.abs, "rb") as f:
            text = f.read()
    else:
        raise DockerfileError(f"--minimal needs a Dockerfile: there is none in {root}")
    name = _shown(loc.abs) if loc.abs else "-"
    analysis = analyze(text, target=target, build_args=build_args, dialect=dialect, source=name, platform=platform)
    if analysis.whole_context:
        notes.extend(f"--minimal: sending the whole context: {r}" for r in analysis.reasons)
        return analysis, None
    keep = list(analysis.patterns)
    if dialect is Dialect.CLASSIC:
        # The classic daemon reads both from the tar (and removes them
        # again if .dockerignore excludes them): they stay.
        keep += [p for p in (loc.rel, ".dockerignore") if p]
    return analysis, Selection(keep, root)


def open_context(
    path: str | os.PathLike[str] = ".",
    *,
    dockerfile: str | None = None,
    dialect: Dialect | str = Dialect.BUILDKIT,
    ignore_file: str | None = None,
    stdin_dockerfile: bytes | None = None,
    rules: Sequence[RawRule] | None = None,
    minimal: bool = False,
    target: str | None = None,
    build_args: dict[str, str] | None = None,
    platform: str | None = None,
) -> BuildContext:
    """Resolve a context directory as the chosen builder would.

    ``dockerfile`` is the ``-f`` value: relative to the current directory,
    ``"-"`` for standard input (its bytes in ``stdin_dockerfile``), ``None``
    for the default ``Dockerfile`` (or ``dockerfile``) in the context.
    ``rules`` replaces the ignore file's parsed lines (``lint`` uses it to
    go on without a line docker refuses).  ``minimal`` restricts the
    context to what the Dockerfile can read (:mod:`ctxpack.dockerfile.analysis`), for
    ``target`` with ``build_args``, on ``platform`` (``linux/arm64``, or a
    comma-separated list; default: the host's).  Raises :class:`ContextError`,
    :class:`DockerfileError` or :class:`~ctxpack.errors.IgnoreFileError`.
    """
    dialect = Dialect(dialect)
    root = _resolve_root(os.fspath(path))
    notes: list[str] = []
    loc = _locate_dockerfile(root, dockerfile, notes)
    df_data = _dockerfile_data(loc, stdin_dockerfile)

    ignore_path, source = select_ignore_file(root, dockerfile, dialect, ignore_file)
    if rules is None:
        rules = (read_ignore_file(ignore_path, source) if ignore_path else None) or []
    rules = list(rules)
    file_matcher = Matcher.from_raw(rules)

    appended = _classic_reincludes(root, file_matcher, loc) if dialect is Dialect.CLASSIC else []
    matcher = file_matcher.with_extra(appended) if appended else file_matcher

    analysis = selection = None
    if minimal:
        analysis, selection = _minimal_selection(root, dialect, loc, df_data, target, build_args, notes, platform)
    return BuildContext(
        root=root,
        dialect=dialect,
        dockerfile=loc.rel,
        dockerfile_path=loc.abs,
        dockerfile_outside=loc.outside,
        dockerfile_stdin=loc.stdin,
        ignore_source=source if rules or (ignore_path and os.path.exists(ignore_path)) else None,
        rules=tuple(rules),
        matcher=matcher,
        file_matcher=file_matcher,
        appended=tuple(appended),
        notes=tuple(notes),
        dockerfile_data=df_data,
        analysis=analysis,
        selection=selection,
    )
