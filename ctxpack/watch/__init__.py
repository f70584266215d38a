"""Watch mode: keep a context's entries and digests current from inotify
events, and share them with other ctxpack commands on the same context.

source (the kernel seam) → model (the context, one name at a time) →
watcher (the loop, coalescing, deltas) → channel (the socket, the server)
and client (what other commands ask; light, so that an answered command
costs little more than the interpreter's start-up).  Nothing is imported
here: ``ctxpack.watch.client`` must not load the watcher.
"""

TYPE_CHECKING = False  # not typing's: ctxpack.watch is on the console script's fast path

if TYPE_CHECKING:
    from ctxpack.watch.watcher import Settled, WarmState, Watcher

__all__ = ["Watcher", "Settled", "WarmState"]


def __getattr__(name: str) -> object:
    """:class:`Watcher`, :class:`Settled`, :class:`WarmState` on first use."""
    if name in __all__:
        from ctxpack.watch import watcher

        return getattr(watcher, name)
    raise AttributeError(f"module 'ctxpack.watch' has no attribute {name!r}")
