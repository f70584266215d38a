"""The one seam between the watcher and the kernel: non-recursive directory
watches and the raw events they report.

:class:`InotifySource` places one inotify watch per directory through
watchdog's :class:`~watchdog.observers.inotify_c.InotifyFD` (its own
instance, not the shared one, so no other watchdog user sees our events);
watchdog's recursive observers are not used, because they watch every
directory below the root (watchdog#212) — ``node_modules`` included.  Tests
use :class:`ScriptedSource`, or :class:`InotifySource` with a watch limit
to provoke ENOSPC, and inject events (an overflow) with :meth:`inject`.

Events are delivered, in the kernel's order, to one ``sink`` callable on
the source's reader thread; the watcher only queues them there.
:meth:`InotifySource.drained` tells whether everything the kernel has
queued so far was delivered, so that a client's request can skip the
barrier (a file made in a watched directory, then a round through the
reader thread) when nothing is on its way.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sys
import termios
import threading
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from ctxpack.errors import WatchLimitError

__all__ = [
    "watched_inodes", "RawEvent", "EventSource", "InotifySource", "ScriptedSource", "WATCH_MASK", "LOST",
    "IN_MODIFY", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_CREATE",
    "IN_DELETE", "IN_DELETE_SELF", "IN_MOVE_SELF", "IN_UNMOUNT", "IN_Q_OVERFLOW", "IN_IGNORED", "IN_ISDIR",
]

# inotify(7) bits (the kernel ABI; the same numbers watchdog names).
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
# Not IN_OPEN/IN_ACCESS/IN_CLOSE_NOWRITE: reads change nothing, and a build
# reading the context would otherwise wake the watcher for every file.
WATCH_MASK = (
    IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK
)
#: The mask of the synthetic event that says a watch is gone (``IN_IGNORED``).
LOST = IN_IGNORED


class RawEvent(NamedTuple):
    """One event: the watch it came from, the child's name (``""``: the
    watched directory itself), the inotify mask and the rename cookie.
    An overflow has ``handle == -1`` and ``IN_Q_OVERFLOW`` in ``mask``; a
    watch the kernel dropped (directory deleted, file system unmounted)
    arrives as ``LOST``."""

    handle: int
    name: str
    mask: int
    cookie: int = 0


Sink = Callable[[RawEvent], None]


class EventSource(Protocol):
    """What the watcher needs from a source of directory events."""

    def start(self, sink: Sink) -> None:
        """Begin delivering events to ``sink`` (from another thread)."""

    def add(self, path: str) -> int:
        """Watch one directory (not recursively); return its handle.

        Raises :class:`~ctxpack.errors.WatchLimitError` when a kernel limit
        is hit, ``FileNotFoundError``/``NotADirectoryError`` when ``path`` is
        no longer a directory.  Adding a directory already watched returns
        the same handle (inotify's own rule: one watch per inode).
        """

    def remove(self, handle: int) -> None:
        """Stop watching; a handle the kernel already dropped is fine."""

    def close(self) -> None:
        """Remove every watch and stop the reader; idempotent."""


def _limit_error(err: int, count: int) -> WatchLimitError:
    if err == errno.ENOSPC:
        return WatchLimitError(
            f"inotify watch limit reached after {count:,} watches: raise fs.inotify.max_user_watches "
            "(e.g. sysctl -w fs.inotify.max_user_watches=524288)", "fs.inotify.max_user_watches")
    return WatchLimitError(
        "inotify instance limit reached: raise fs.inotify.max_user_instances "
        "(e.g. sysctl -w fs.inotify.max_user_instances=512)", "fs.inotify.max_user_instances")


class _Callback:
    """watchdog's per-watch callback; one object for every watch, so an
    overflow is reported once."""

    def __init__(self, source: InotifySource):
        self.source = source

    def on_event(self, event: object) -> None:
        self.source._deliver(RawEvent(event.wd, os.fsdecode(event.name), event.mask, event.cookie))  # type: ignore[attr-defined]

    def on_watch_deleted(self, wd: int) -> None:
        self.source._deliver(RawEvent(wd, "", LOST))

    def on_queue_overflow(self) -> None:
        self.source._deliver(RawEvent(-1, "", IN_Q_OVERFLOW))

    def on_events_lost(self) -> None:
        """watchdog >= 7.1 calls this after ``on_queue_overflow`` (its
        callback protocol; a callback without it kills its dispatcher
        thread).  The overflow already made the watcher rescan."""


class _TappedQueue:
    """watchdog's queue of raw event buffers (>= 7.1), counting what was put
    and what its dispatcher has delivered: when it waits for a buffer (a
    blocking ``get``), it has handled every buffer it took."""

    def __init__(self, queue: Any):
        self._queue = queue
        self.puts = 0
        self.taken = 0
        self.delivered = 0

    def put(self, item: bytes, *args: Any, **kw: Any) -> None:
        self.puts += 1  # before the dispatcher can take it
        self._queue.put(item, *args, **kw)

    def get(self, *args: Any, **kw: Any) -> bytes:
        self.delivered = self.taken
        item = self._queue.get(*args, **kw)
        self.taken += 1
        return item  # type: ignore[no-any-return]

    def get_nowait(self) -> bytes:
        item = self._queue.get_nowait()
        self.taken += 1
        return item  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)


class InotifySource:
    """Non-recursive inotify watches through watchdog's ``InotifyFD``.

    ``max_watches`` makes :meth:`add` fail like ENOSPC beyond that many
    watches (tests); ``hold`` is an event the reader waits on before it
    reads and before it delivers, so a test can let the kernel queue
    overflow for real (watchdog >= 7.1 reads on one thread into a queue
    without bound and delivers on another).
    """

    def __init__(self, *, max_watches: int | None = None) -> None:
        try:
            from watchdog.observers.inotify_c import InotifyFD
        except Exception as e:  # not Linux, or a libc without inotify
            raise WatchLimitError(f"inotify is unavailable here: {e}", "") from None
        try:
            self._fd = InotifyFD()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                raise _limit_error(errno.EMFILE, 0) from None
            raise
        # We report an overflow ourselves (with the rescan it causes).
        logging.getLogger("watchdog.observers.inotify_c").setLevel(logging.ERROR)
        self._cb = _Callback(self)
        self._sink: Sink | None = None
        self._handles: set[int] = set()
        self._max = max_watches
        self._lock = threading.Lock()
        self._closed = False
        self.hold: threading.Event | None = None
        self._waiting = False  # the reader is in its poll (see drained)
        self._polls = 0  # its polls that returned
        self._queue: _TappedQueue | None = None  # watchdog >= 7.1's buffers, tapped (see _tap_reader)
        self._inotify_fd = self._tap_reader()

    def _tap_reader(self) -> int | None:
        """Wrap watchdog's poller (``InotifyFD._poller``, polled before each
        read) so that :meth:`drained` sees when the reader waits; the
        inotify descriptor, or ``None`` where watchdog is built otherwise
        (then :meth:`drained` is always False: every request takes the
        barrier)."""
        found = getattr(self._fd, "_poller", None)
        fd = getattr(self._fd, "_inotify_fd", None)
        if found is None or not isinstance(fd, int) or not callable(getattr(found, "poll", None)):
            return None
        poller: Any = found
        source = self
        # watchdog >= 7.1 reads on one thread and delivers on another
        # ("InotifyFD-Dispatcher"), through a queue of raw buffers
        # (``_raw_queue``), and a read may wait up to 1 ms more for the rest
        # of a burst (a poll with a timeout, holding what it read): the
        # reader's blocking poll then says only that what it read is queued.
        # So there the queue is tapped too: delivered means every buffer put
        # was taken and the dispatcher came back for more (it finishes one
        # buffer, and those it can take at once, before it waits again).
        queue = getattr(self._fd, "_raw_queue", None)
        if queue is not None:
            if not all(callable(getattr(queue, m, None)) for m in ("put", "get", "get_nowait")):
                return None
            self._queue = _TappedQueue(queue)
            setattr(self._fd, "_raw_queue", self._queue)  # noqa: B010 - watchdog's private attribute, on purpose
        # (watchdog < 7.1: the reader delivers what it read before it polls again.)

        class _TappedPoller:
            def register(self, *args: object) -> object:
                return poller.register(*args)

            def unregister(self, *args: object) -> object:
                return poller.unregister(*args)

            def poll(self, timeout: object = None) -> object:
                # Only a poll that waits for the kernel (no timeout) is the
                # reader's rest; a short one is the middle of a read.
                waits = timeout is None or (isinstance(timeout, (int, float)) and timeout < 0)
                hold = source.hold
                if hold is not None:  # a test lets the kernel's queue overflow: nothing is read meanwhile
                    hold.wait()
                source._waiting = waits  # everything read before has been handed on
                try:
                    return poller.poll(timeout)
                finally:
                    source._waiting = False
                    source._polls += 1

        setattr(self._fd, "_poller", _TappedPoller())  # noqa: B010 - watchdog's private attribute, on purpose
        return fd

    def drained(self) -> bool:
        """Whether every event the kernel queued up to now has been
        delivered to the sink: the reader waits in its poll (it delivers
        all it read before it polls again), the kernel's queue is empty
        (``FIONREAD``) and the reader did not wake meanwhile.  ``False``
        when that cannot be told (or a test holds the delivery)."""
        fd = self._inotify_fd
        if fd is None or self.hold is not None or self._closed:
            return False
        polls = self._polls
        if not self._waiting:
            return False
        try:
            queued = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        if int.from_bytes(queued, sys.byteorder) != 0:
            return False
        q = self._queue
        if q is not None and q.puts != q.delivered:  # read, not yet delivered (watchdog >= 7.1)
            return False
        return self._waiting and self._polls == polls

    def start(self, sink: Sink) -> None:
        self._sink = sink
        self._fd.daemon = True
        self._fd.start()

    def _deliver(self, event: RawEvent) -> None:
        hold = self.hold
        if hold is not None:
            hold.wait()
        sink = self._sink
        if sink is not None:
            sink(event)

    def inject(self, event: RawEvent) -> None:
        """Deliver a synthetic event as if the kernel had sent it (tests)."""
        self._deliver(event)

    @property
    def count(self) -> int:
        """How many watches are placed."""
        return len(self._handles)

    def add(self, path: str) -> int:
        with self._lock:
            if self._max is not None and len(self._handles) >= self._max:
                raise _limit_error(errno.ENOSPC, len(self._handles))
            try:
                # id 0 for every watch: one callback object serves them all.
                # Re-adding a watched inode (a rescan) returns its watch;
                # watchdog warns that it replaces the callback — by itself.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    wd = self._fd.add_callback(os.fsencode(path), WATCH_MASK, self._cb, 0)  # type: ignore[arg-type]
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EMFILE):
                    raise _limit_error(e.errno, len(self._handles)) from None
                raise
            self._handles.add(wd)
            return int(wd)

    def remove(self, handle: int) -> None:
        with self._lock:
            if handle in self._handles:
                self._handles.discard(handle)
                try:
                    self._fd.remove_callbacks([(handle, 0)])  # type: ignore[list-item]
                except OSError:
                    pass  # already gone in the kernel

    def forget(self, handle: int) -> None:
        """The kernel dropped this watch (``LOST``): forget it without a syscall."""
        with self._lock:
            self._handles.discard(handle)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sink = None
        hold = self.hold
        if hold is not None:
            hold.set()
        self._fd.stop()  # closes the descriptor and its watches
        self._fd.join(timeout=5)


class ScriptedSource:
    """A source for tests: records watches, delivers what the test injects."""

    synthetic = True  # no kernel behind it: the watcher injects its own barrier events

    def __init__(self) -> None:
        self.watched: dict[int, str] = {}
        self._next = 1
        self._sink: Sink | None = None
        self.closed = False

    def start(self, sink: Sink) -> None:
        self._sink = sink

    def add(self, path: str) -> int:
        if not os.path.isdir(path):
            raise FileNotFoundError(path)
        for h, p in self.watched.items():
            if p == path:
                return h
        h = self._next
        self._next += 1
        self.watched[h] = path
        return h

    def remove(self, handle: int) -> None:
        self.watched.pop(handle, None)

    def forget(self, handle: int) -> None:
        self.watched.pop(handle, None)

    @property
    def count(self) -> int:
        return len(self.watched)

    def inject(self, event: RawEvent) -> None:
        if self._sink is not None:
            self._sink(event)

    def close(self) -> None:
        self.closed = True
        self.watched.clear()


def watched_inodes(pid: int | str = "self") -> list[int]:
    """The inode of every directory a process's inotify instances watch,
    read from ``/proc/PID/fdinfo`` (what ``ctxpack watch`` costs the
    kernel's ``fs.inotify.max_user_watches``); unreadable entries are
    passed over."""
    out: list[int] = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:inotify":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                out += [int(ln.split(" ino:")[1].split()[0], 16) for ln in f if ln.startswith("inotify wd:")]
        except OSError:
            continue
    return out
