"""Where the index lives: the cache directory (a leaf module, so that a
command answered by a running watcher finds its socket without loading
SQLite); and :data:`on_wait`, how a run waiting to open the index tells
its user (here for the same reason: the CLI sets it without loading SQLite)."""

import os

TYPE_CHECKING = False  # not typing's: this module is on the watcher fast path's start-up
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["cache_dir", "on_wait"]

#: Called with a one-line note when opening the index waits for another
#: process (:func:`ctxpack.index.store._opening`); the CLI prints it as
#: ``ctxpack: note: ...``.  ``None`` (a library caller): not said.
on_wait: "Callable[[str], None] | None" = None


def cache_dir() -> str:
    """Where the index lives (created on demand)."""
    explicit = os.environ.get("CTXPACK_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctxpack")
