"""ctxpack: Docker build contexts, exactly as Docker decides them.

The public API: open a context, walk it, explain decisions.
"""

from .api import Explanation, explain, explain_path, list_entries
from .context import BuildContext, Dialect, open_context
from .errors import (
    ContextError,
    CtxpackError,
    DockerfileError,
    IgnoreFileError,
    InputError,
    OutputError,
    PatternError,
    TransportError,
)
from .ignorefile import RawRule, parse_ignore, read_ignore_file
from .matcher import Decision, Matcher, Rule
from .walker import Entry, EntryKind, walk, walk_all

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
]

__version__ = "0.1.0"
