"""ctxpack: Docker build contexts, exactly as Docker decides them.

The public API (everything in ``__all__``; see ``docs/api.md``):

* rules: :func:`read_ignore_file`, :func:`parse_ignore`, :func:`parse_lines`
  give :class:`RawRule` lines; :class:`Matcher` compiles them and
  :meth:`Matcher.match` gives the :class:`Decision` and deciding :class:`Rule`;
* a context: :func:`open_context` (``dialect``, ``minimal``/``target``) gives a
  :class:`BuildContext`; :func:`list_entries`, :func:`walk`, :func:`walk_all`
  enumerate its :class:`Entry` values in upload order; :func:`explain_path`,
  :func:`explain` say why; :func:`size` measures; :func:`lint` reviews;
* the tar: :func:`pack` to a :class:`Sink` (:class:`FdSink` for a file
  descriptor or socket, :class:`CallbackSink` for any writable), or
  :func:`iter_tar` as chunks, with :class:`PackOptions` (compression,
  reproducibility);
* change: :func:`fingerprint`, :func:`snapshot`, :func:`diff`;
* building: :func:`build` a context on an :class:`Engine` (a Docker daemon)
  with :class:`BuildOptions`, giving a :class:`BuildResult`;
* errors: every error ctxpack raises is a :class:`CtxpackError` (tree and
  exit codes in :mod:`ctxpack.errors`).

Semantic versioning (``CHANGELOG.md``): the names in ``__all__``, their
parameters and documented behaviour change incompatibly only with a new major
version; submodules are internal unless documented.  What Docker decides is
not an API promise: when ctxpack differs from Docker, that is a bug, and its
fix ships in a patch release.
"""

# Not typing's TYPE_CHECKING, and the error tree is lazy too: this module is
# on the console script's start-up, where a running watcher answers `diff`
# in a few milliseconds (ctxpack.watchlink.run) and every import shows.
TYPE_CHECKING = False

#: The version of the package and of ``ctxpack --version`` (the only place it is written).
__version__ = "0.2.0"

# Everything loads on first use, so `import ctxpack` (and
# the CLI's start-up: a warm `ctxpack diff` is mostly start-up) stays cheap:
# name -> (module, attribute).
_LAZY = {
    "ChangedDuringReadError": ("errors", "ChangedDuringReadError"),
    "ClosedPipeError": ("errors", "ClosedPipeError"),
    "ContextError": ("errors", "ContextError"),
    "CtxpackError": ("errors", "CtxpackError"),
    "DockerfileError": ("errors", "DockerfileError"),
    "DockerfileSyntaxError": ("errors", "DockerfileSyntaxError"),
    "IgnoreFileError": ("errors", "IgnoreFileError"),
    "InputError": ("errors", "InputError"),
    "InternalError": ("errors", "InternalError"),
    "OutputError": ("errors", "OutputError"),
    "PatternError": ("errors", "PatternError"),
    "TransportError": ("errors", "TransportError"),
    "BuildContext": ("context", "BuildContext"),
    "Dialect": ("ignore.dialect", "Dialect"),
    "open_context": ("context", "open_context"),
    "Explanation": ("explainer", "Explanation"),
    "explain": ("explainer", "explain"),
    "explain_path": ("explainer", "explain_path"),
    "list_entries": ("explainer", "list_entries"),
    "RawRule": ("ignore.reader", "RawRule"),
    "parse_ignore": ("ignore.reader", "parse_ignore"),
    "parse_lines": ("ignore.reader", "parse_lines"),
    "read_ignore_file": ("ignore.reader", "read_ignore_file"),
    "Decision": ("ignore.matcher", "Decision"),
    "Matcher": ("ignore.matcher", "Matcher"),
    "Rule": ("ignore.matcher", "Rule"),
    "Entry": ("walker", "Entry"),
    "EntryKind": ("walker", "EntryKind"),
    "walk": ("walker", "walk"),
    "walk_all": ("walker", "walk_all"),
    "pack": ("tar.writer", "pack"),
    "iter_tar": ("tar.writer", "iter_tar"),
    "PackOptions": ("tar.writer", "PackOptions"),
    "PackStats": ("tar.writer", "PackStats"),
    "Sink": ("tar.sinks", "Sink"),
    "FdSink": ("tar.sinks", "FdSink"),
    "CallbackSink": ("tar.sinks", "CallbackSink"),
    "fingerprint": ("index.snapshots", "fingerprint"),
    "snapshot": ("index.snapshots", "snapshot"),
    "diff": ("index.snapshots", "diff"),
    "Fingerprint": ("index.snapshots", "Fingerprint"),
    "Delta": ("index.snapshots", "Delta"),
    "Change": ("index.snapshots", "Change"),
    "lint": ("linter", "lint"),
    "LintReport": ("linter", "LintReport"),
    "Finding": ("linter", "Finding"),
    "analyze": ("dockerfile.analysis", "analyze"),
    "parse_dockerfile": ("dockerfile.parser", "parse_dockerfile"),
    "size": ("explainer", "size"),
    "SizeReport": ("audit", "SizeReport"),
    "build": ("engine.builder", "build"),
    "BuildOptions": ("engine.builder", "BuildOptions"),
    "BuildResult": ("engine.builder", "BuildResult"),
    "Engine": ("engine.client", "Engine"),
}

if TYPE_CHECKING:  # type checkers see the lazy names with their real types
    from ctxpack.errors import (
        ChangedDuringReadError,
        ClosedPipeError,
        ContextError,
        CtxpackError,
        DockerfileError,
        DockerfileSyntaxError,
        IgnoreFileError,
        InputError,
        InternalError,
        OutputError,
        PatternError,
        TransportError,
    )
    from ctxpack.context import BuildContext, open_context
    from ctxpack.explainer import Explanation, explain, explain_path, list_entries
    from ctxpack.ignore.dialect import Dialect
    from ctxpack.ignore.matcher import Decision, Matcher, Rule
    from ctxpack.ignore.reader import RawRule, parse_ignore, parse_lines, read_ignore_file
    from ctxpack.walker import Entry, EntryKind, walk, walk_all
    from ctxpack.audit import SizeReport
    from ctxpack.dockerfile.analysis import analyze
    from ctxpack.dockerfile.parser import parse_dockerfile
    from ctxpack.engine.builder import BuildOptions, BuildResult, build
    from ctxpack.engine.client import Engine
    from ctxpack.explainer import size
    from ctxpack.index.snapshots import Change, Delta, Fingerprint, diff, fingerprint, snapshot
    from ctxpack.linter import Finding, LintReport, lint
    from ctxpack.tar.sinks import CallbackSink, FdSink, Sink
    from ctxpack.tar.writer import PackOptions, PackStats, iter_tar, pack


def __getattr__(name: str) -> object:
    """Load the heavier public names (:data:`_LAZY`) on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctxpack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# A literal list (type checkers read it): the names above, then the lazy ones.
__all__ = [
    "BuildContext",
    "ChangedDuringReadError",
    "ClosedPipeError",
    "ContextError",
    "CtxpackError",
    "Decision",
    "Dialect",
    "DockerfileError",
    "DockerfileSyntaxError",
    "Entry",
    "EntryKind",
    "Explanation",
    "IgnoreFileError",
    "InputError",
    "InternalError",
    "Matcher",
    "OutputError",
    "PatternError",
    "RawRule",
    "Rule",
    "TransportError",
    "explain",
    "explain_path",
    "list_entries",
    "open_context",
    "parse_ignore",
    "parse_lines",
    "read_ignore_file",
    "walk",
    "walk_all",
    # lazy
    "pack",
    "iter_tar",
    "PackOptions",
    "PackStats",
    "Sink",
    "FdSink",
    "CallbackSink",
    "fingerprint",
    "snapshot",
    "diff",
    "Fingerprint",
    "Delta",
    "Change",
    "lint",
    "LintReport",
    "Finding",
    "analyze",
    "parse_dockerfile",
    "size",
    "SizeReport",
    "build",
    "BuildOptions",
    "BuildResult",
    "Engine",
]
