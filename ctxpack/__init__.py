"""ctxpack: Docker build contexts, exactly as Docker decides them.

The public API: open a context, walk it, explain decisions.
"""

from ctxpack.explainer import Explanation, explain, explain_path, list_entries
from ctxpack.context import BuildContext, Dialect, open_context
from ctxpack.errors import (
    ContextError,
    CtxpackError,
    DockerfileError,
    IgnoreFileError,
    InputError,
    OutputError,
    PatternError,
    TransportError,
)
from ctxpack.ignore.reader import RawRule, parse_ignore, read_ignore_file
from ctxpack.ignore.matcher import Decision, Matcher, Rule
from ctxpack.walker import Entry, EntryKind, walk, walk_all

# Heavier parts load on first use, so `import ctxpack` (and the CLI's start-up)
# stays cheap: name -> (module, attribute).
_LAZY = {
    "pack": ("tar.writer", "pack"),
    "iter_tar": ("tar.writer", "iter_tar"),
    "PackOptions": ("tar.writer", "PackOptions"),
    "FdSink": ("tar.sinks", "FdSink"),
    "fingerprint": ("index.snapshots", "fingerprint"),
    "snapshot": ("index.snapshots", "snapshot"),
    "diff": ("index.snapshots", "diff"),
    "lint": ("linter", "lint"),
    "analyze": ("dockerfile.analysis", "analyze"),
    "parse_dockerfile": ("dockerfile.parser", "parse_dockerfile"),
    "size": ("explainer", "size"),
    "build": ("engine.builder", "build"),
    "BuildOptions": ("engine.builder", "BuildOptions"),
    "BuildResult": ("engine.builder", "BuildResult"),
    "Engine": ("engine.client", "Engine"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctxpack' has no attribute {name!r}")


__all__ = [
    "BuildContext",
    "ContextError",
    "CtxpackError",
    "Decision",
    "Dialect",
    "DockerfileError",
    "Entry",
    "EntryKind",
    "Explanation",
    "IgnoreFileError",
    "InputError",
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
    "read_ignore_file",
    "walk",
    "walk_all",
    *_LAZY,
]

__version__ = "0.1.0"
