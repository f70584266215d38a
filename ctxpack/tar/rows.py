"""The walk as flat rows, produced here or by a forked walker process.

The packer needs little of an :class:`~ctxpack.walker.Entry`: the path, the
type, five numbers of its ``lstat`` and a link target.  A :data:`Row` is just
that, as a plain tuple, so it is cheap to build and cheap to ship between
processes with :mod:`marshal`.

Why a second process: packing a large context is Python work per entry in
two halves of about the same size, walking and matching on one side, opening,
reading and framing files on the other.  One Python process can only do one
at a time, and threads do not help (the GIL is handed over around every short
system call; measured 2x slower).  With the walk in a forked child that sends
rows through a pipe, the two halves run on two cores: on the 98k-file
benchmark tree the full-context pack went from 2.5x to about 1.2x GNU tar's
wall time (bench/results/pack.md).

The child only walks: it never writes the output.  It sends rows in batches,
the builder-facing warnings in place (``kind == WARN``), and an error where
the walk raised one, so the parent sees exactly the sequence an in-process
walk gives, at the same points.  If the parent stops early it kills the
child; if the child dies, the parent raises :class:`WalkerDiedError`.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ctxpack.errors import ContextError, TarHeaderError, WalkerDiedError
from ctxpack.context import BuildContext, Dialect
from ctxpack.tar.header import encode_from_mode
from ctxpack.walker import Entry, EntryKind, HardLinks, entries_for_builder, injected_dockerfile_name

# Kinds whose header the walker process encodes from the lstat alone (a hard
# link's header is a link record, built by the packer).
_ENCODED = frozenset((EntryKind.FILE, EntryKind.DIR, EntryKind.SYMLINK))

__all__ = ["Row", "WARN", "NO_STAT", "entry_row", "builder_rows", "row_batches", "RowBatches", "can_fork", "usable_cpus", "WalkerDiedError"]

# (path, kind, mode, size, mtime_ns, ctime_ns, rdev, link, data, header)
# kind: an EntryKind value, or WARN (then path is the message).  mode is
# NO_STAT for an entry the classic CLI synthesises (no file behind it); data
# replaces the file's content for synthesised and rewritten entries.  header:
# the tar header this lstat gives (files, directories, symlinks), encoded by
# the walker's process to share the work; the packer uses it only if the
# file still has that stat when it reads it.
Row = tuple[str, str, int, int, int, int, int, "str | None", "bytes | None", "bytes | None"]

WARN = "warn"
NO_STAT = -1
BATCH = 256

_FRAME = struct.Struct("<cI")
_ROWS, _ERROR, _END = b"R", b"E", b"Z"
_F_SETPIPE_SZ = 1031  # Linux fcntl: a 1 MiB pipe lets the walker run ahead


def entry_row(e: Entry, *, header: bool = False) -> Row:
    """``e`` as a row; with ``header``, its tar header encoded (where cheap)."""
    s = e.stat
    if s is None:
        return (e.path, e.kind, NO_STAT, 0, 0, 0, 0, e.link, e.data, None)
    mode, size, mtime_ns, rdev = s.st_mode, s.st_size, s.st_mtime_ns, s.st_rdev
    h = None
    if header and e.data is None and e.kind in _ENCODED:
        try:
            h = encode_from_mode(e.path, mode, size, mtime_ns, rdev, e.link or "")
        except (TarHeaderError, UnicodeEncodeError):
            pass  # the packer meets it again and decides (docker leaves it out)
    return (e.path, e.kind, mode, size, mtime_ns, s.st_ctime_ns, rdev, e.link, e.data, h)


def builder_rows(ctx: BuildContext, *, headers: bool = False, walked: Iterable[Entry] | None = None) -> Iterator[Row]:
    """What a tar for a builder holds, in upload order, with warnings in place.

    The walker's :func:`~ctxpack.walker.entries_for_builder`, a warning for
    each excluded file forced in, and (BuildKit) a Dockerfile from outside
    the context or stdin at the end; the classic dialect injects that one
    already, as the docker CLI does.  ``walked``: as for
    ``entries_for_builder``, with each entry's ``lstat``.

    A classic tar is the docker CLI's: go-archive's ``SeenFiles`` makes the
    later name of a hard-linked *symlink* a link to the first name, as for
    any non-directory (the walker keeps symlinks as symlinks, which is what
    a BuildKit session sends).  Not without ``headers``: that is the
    reproducible tar, where every name stands alone.
    """
    logged: list[str] = []
    symlinks = HardLinks() if headers and ctx.dialect is Dialect.CLASSIC else None
    SYMLINK = EntryKind.SYMLINK
    for e in entries_for_builder(ctx, warn=logged.append, walked=walked):
        while logged:
            yield (logged.pop(0), WARN, 0, 0, 0, 0, 0, None, None, None)
        decision = ctx.file_matcher.match(e.path) if e.forced and e.data is None else None
        # Forced in because the ignore rules exclude it: say so where it is
        # true.  BuildKit applies no ignore rules to a tar body, so COPY .
        # sees it; the classic daemon applies .dockerignore to the tar and
        # drops it again (the image is the docker CLI's): no warning there.
        # (A Dockerfile only left out of a --minimal selection travels
        # without a warning.)
        if decision is not None and decision.excluded and ctx.dialect is Dialect.BUILDKIT:
            rule = decision.rule
            message = (
                f"{e.path} is excluded by the ignore rules but travels in the tar so the builder can read it ({rule}); "
                "BuildKit applies no ignore rules to a tar body, so COPY . sees it (a BuildKit session does not send it)"
            )
            yield (message, WARN, 0, 0, 0, 0, 0, None, None, None)
        s = e.stat
        if symlinks is not None and e.kind == SYMLINK and s is not None and s.st_nlink > 1:
            first = symlinks.first_name(e.path, s)
            if first is not None:
                yield (e.path, EntryKind.HARDLINK, s.st_mode, s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_rdev,
                       first, None, None)
                continue
        yield entry_row(e, header=headers)
    for message in logged:
        yield (message, WARN, 0, 0, 0, 0, 0, None, None, None)
    if ctx.dialect is Dialect.BUILDKIT and ctx.dockerfile_data is not None:
        yield (injected_dockerfile_name(ctx), EntryKind.FILE, NO_STAT, 0, 0, 0, 0, None, ctx.dockerfile_data, None)


def can_fork() -> bool:
    """Whether a forked walker can help and is safe here.

    Needs ``os.fork``, two usable CPUs, and a process with one thread: a
    fork copies no other thread, so locks they hold would stay held in the
    child.  ``CTXPACK_PARALLEL=0`` turns it off.
    """
    if os.environ.get("CTXPACK_PARALLEL", "") == "0" or not hasattr(os, "fork"):
        return False
    return usable_cpus() >= 2 and threading.active_count() == 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class RowBatches:
    """The rows of a walk in batches of up to :data:`BATCH`: an iterator
    that must be closed (:meth:`close`, or ``with``), which stops and reaps
    a forked walker at once."""

    def __init__(self, it: Iterator[list[Row]], walker: _Walker | None = None):
        self._it = it
        self.walker = walker

    def __iter__(self) -> Iterator[list[Row]]:
        return self._it

    def __enter__(self) -> RowBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()
        if self.walker is not None:
            self.walker.stop()


def row_batches(
    ctx: BuildContext, *, fork: bool, headers: bool = False, close_in_child: Sequence[int] = (),
    rows: Callable[[BuildContext], Iterator[tuple[Any, ...]]] | None = None, batch: int | None = None,
) -> RowBatches:
    """:func:`builder_rows` in batches; walked by a forked child if ``fork``.

    ``rows`` replaces :func:`builder_rows` as what is walked (any tuples
    :mod:`marshal` can carry): the fingerprint sends its own, smaller rows
    through the same machinery.  ``batch``: rows per batch (default
    :data:`BATCH`, read at the call; the size report's rows are already
    chunks of a thousand entries: it sends each on its own).

    The child is forked here, before the caller starts anything else (a
    compressor's threads, say).  If the system refuses a new process
    (``EAGAIN`` under a pids limit, ``ENOMEM``), the walk runs in this
    process instead.  ``close_in_child``: descriptors the child must not
    keep open (the output: a reader waiting for end-of-file must not wait
    for the child).
    """
    if batch is None:
        batch = BATCH
    if fork:
        try:
            walker = _Walker(ctx, headers, close_in_child, rows, batch)
        except OSError:
            pass  # no new process to be had: walk here
        else:
            return RowBatches(walker.batches(), walker)
    return RowBatches(_batched(_produce(ctx, headers, rows), batch))


def _produce(ctx: BuildContext, headers: bool, rows: Callable[[BuildContext], Iterator[tuple[Any, ...]]] | None) -> Iterator[Any]:
    return builder_rows(ctx, headers=headers) if rows is None else rows(ctx)


def _batched(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """Batches of rows; a batch begun when the walk fails is still
    delivered, before the error, as a forked walker's would be."""
    batch: list[Any] = []
    try:
        for row in rows:
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
    except Exception:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _child(ctx: BuildContext, headers: bool, w: int, rows: Callable[[BuildContext], Iterator[tuple[Any, ...]]] | None,
           size: int) -> None:
    def send(kind: bytes, payload: bytes) -> None:
        _write_all(w, _FRAME.pack(kind, len(payload)) + payload)

    try:
        for batch in _batched(_produce(ctx, headers, rows), size):
            send(_ROWS, marshal.dumps(batch))
    except Exception as e:  # noqa: BLE001 - re-raised by the parent, in place
        import pickle  # here: only an error needs it (its import is a few ms of every start-up)

        try:
            payload = pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an exception pickle cannot carry
            payload = pickle.dumps(ContextError(f"walking the context failed: {type(e).__name__}: {e}"))
        send(_ERROR, payload)
    send(_END, b"")


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this child if the parent dies, even by
    SIGKILL (no ``finally`` runs then); elsewhere the next write fails."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


class _Walker:
    """A forked child process running the walk; the parent reads its rows."""

    def __init__(self, ctx: BuildContext, headers: bool, close_in_child: Sequence[int],
                 rows: Callable[[BuildContext], Iterator[tuple[Any, ...]]] | None, batch: int):
        r, w = os.pipe()
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.fcntl(w, _F_SETPIPE_SZ, 1 << 20)
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            raise
        if pid == 0:  # the walker
            code = 0
            try:
                os.close(r)
                for fd in close_in_child:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                # Ctrl-C is the parent's to handle: it kills this process.
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _die_with_parent(parent)
                _child(ctx, headers, w, rows, batch)
            except BaseException:  # noqa: BLE001 - the parent went away (EPIPE) or worse
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        self.pid = pid
        self._r = r
        self._status: str | None = None  # how it ended, once reaped

    def batches(self) -> Iterator[list[Row]]:
        try:
            with open(self._r, "rb", buffering=1 << 16, closefd=False) as f:
                while True:
                    head = f.read(_FRAME.size)
                    if len(head) < _FRAME.size:
                        break
                    kind, n = _FRAME.unpack(head)
                    payload = f.read(n)
                    if len(payload) < n:
                        break
                    if kind == _ROWS:
                        yield marshal.loads(payload)
                    elif kind == _ERROR:
                        import pickle

                        raise pickle.loads(payload)
                    else:
                        return
            raise WalkerDiedError(f"the walker process ended unexpectedly ({self.reap()})")
        finally:
            self.stop()

    def stop(self) -> None:
        """Kill the walker unless it finished, and reap it (idempotent)."""
        if self._r >= 0:
            os.close(self._r)
            self._r = -1
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # a no-op for a child that exited (a zombie)
            self.reap()

    def reap(self) -> str:
        """Wait for the child, once; how it ended."""
        if self._status is None:
            interrupted: KeyboardInterrupt | None = None
            while True:
                try:
                    _, status = os.waitpid(self.pid, 0)
                    break
                except ChildProcessError:
                    self._status = "already reaped"
                    return self._status
                except KeyboardInterrupt as e:  # wait again (never leave a zombie), then re-raise
                    interrupted = e
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
            self._status = _describe(status)
            if interrupted is not None:
                raise interrupted
        return self._status


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
        return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"
