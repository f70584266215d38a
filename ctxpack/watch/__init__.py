"""Watch mode: keep a context's entries and digests current from inotify
events, and share them with other ctxpack commands on the same context.

source (the kernel seam) → model (the context, one name at a time) →
watcher (the loop, coalescing, deltas) → channel (the socket, clients).
"""

from ctxpack.watch.watcher import Settled, WarmState, Watcher

__all__ = ["Watcher", "Settled", "WarmState"]
