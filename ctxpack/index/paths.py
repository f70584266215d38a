"""Where the index lives: the cache directory (a leaf module, so that a
command answered by a running watcher finds its socket without loading
SQLite)."""

import os

__all__ = ["cache_dir"]


def cache_dir() -> str:
    """Where the index lives (created on demand)."""
    explicit = os.environ.get("CTXPACK_CACHE_DIR")
    if explicit:
        return os.path.abspath(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctxpack")
