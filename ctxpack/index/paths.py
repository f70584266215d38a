"""Where the index lives: the cache directory (:func:`ctxpack.watchlink.cache_dir`,
defined there so that a command answered by a running watcher finds its
socket without this package); and :data:`on_wait`, how a run waiting to
open the index tells its user (a leaf module: the CLI sets it without
loading SQLite)."""

from ctxpack.watchlink import cache_dir

TYPE_CHECKING = False  # not typing's: the CLI imports this module at every start-up
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["cache_dir", "on_wait"]

#: Called with a one-line note when opening the index waits for another
#: process (:func:`ctxpack.index.store._opening`); the CLI prints it as
#: ``ctxpack: note: ...``.  ``None`` (a library caller): not said.
on_wait: "Callable[[str], None] | None" = None

