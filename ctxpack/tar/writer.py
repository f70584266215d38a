"""Streaming the context as the tar a builder receives.

The tar matches the docker CLI's classic upload header field by header field
(:mod:`ctxpack.tar.header`), in the walker's order.  It streams: nothing but
small files is ever held in memory, and large files go from the page cache to
the output with ``os.sendfile`` (pipes, sockets and files alike on Linux).

Consistency: a header states a size, and exactly that many bytes follow.
Small files are read whole and re-read (up to three times) until ``fstat``
before and after agree; large files are streamed and checked afterwards.  A
file that keeps changing, or shrinks under us, stops the stream with
:class:`~ctxpack.errors.ChangedDuringReadError` naming it: the consumer sees a
truncated archive (never a well-formed one with wrong content), and ``-o FILE``
leaves nothing behind.  A file that vanished between the listing and the read
is left out, as the docker CLI does, and reported through ``warn``.

The entries come as rows from :mod:`ctxpack.tar.rows` (on two or more cores, from
a forked walker process, so that walking and packing run at once); the bytes
go to a sink of :mod:`ctxpack.tar.sinks` (re-exported here).
"""

from __future__ import annotations

import os
import queue
import stat as st
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from ctxpack.context import BuildContext
from ctxpack.errors import ChangedDuringReadError, ContextError
from ctxpack.fs import DIR_FLAGS, FILE_FLAGS, SMALL_FILE, open_regular, read_whole
from ctxpack.tar.rows import BATCH, NO_STAT, WARN, Row, builder_rows, can_fork, entry_row, row_batches
from ctxpack.tar.sinks import CallbackSink, FdSink, Sink, make_sink
from ctxpack.tar.header import (
    END_OF_ARCHIVE,
    PADDINGS,
    TYPE_LINK,
    TYPE_REG,
    TarHeader,
    encode_fields,
    encode_header,
    header_from_mode,
    header_from_stat,
    padding,
    read_security_capability,
)
from ctxpack.walker import Entry, EntryKind, Progress

FILE, HARDLINK = EntryKind.FILE, EntryKind.HARDLINK

__all__ = ["PackOptions", "PackStats", "pack", "pack_entries", "iter_tar"]

_CAPABILITY = "security.capability"
CHUNK = 1 << 20
STREAM_PIECE = 64 << 20  # progress is reported between pieces of a large file
FLUSH_AT = 1 << 20

Warn = Callable[[str], None]


@dataclass(frozen=True)
class PackOptions:
    """How to pack: compression, determinism, and what to do with the Dockerfile.

    ``reproducible``: mtimes clamped to ``source_date_epoch`` (0 when
    ``None``), hard links stored as files, so the bytes depend only on
    content, paths and modes.  ``parallel``: walk in a forked process
    (``None``: where :func:`~ctxpack.tar.rows.can_fork` allows, i.e. two CPUs
    and a process with one thread); the bytes are the same either way.
    ``True`` forks even when other threads run: the child only walks, but
    a lock another thread held at the fork stays held in it (Python 3.12+
    warns), so say ``True`` only where that cannot matter.  ``strict``: a
    file that vanished between the listing and the read stops the stream
    (:class:`~ctxpack.errors.ChangedDuringReadError`) instead of being left
    out with a warning — ``ctxpack build`` sends nothing the engine could
    build from when the listing no longer holds.
    """

    compress: str = "none"
    level: int | None = None
    reproducible: bool = False
    source_date_epoch: int | None = None
    parallel: bool | None = None
    strict: bool = False


@dataclass
class PackStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    written: int = 0
    elapsed: float = 0.0


class _Writer:
    """Turns rows (:data:`~ctxpack.tar.rows.Row`) into tar bytes on a sink,
    batching small writes."""

    def __init__(self, root: str, sink: Sink, opts: PackOptions, warn: Warn, progress: Progress | None):
        self.root = root.rstrip("/") + "/"
        self.sink = sink
        self.opts = opts
        self.warn = warn
        self.progress = progress
        self.buf: list[bytes] = []
        self.buffered = 0
        self.stats = PackStats()
        self.now = int(time.time())
        self.clamp = opts.source_date_epoch if opts.source_date_epoch is not None else 0
        self._dir: tuple[str, int] = ("", -1)

    # -- output ---------------------------------------------------------------
    def put(self, data: bytes) -> None:
        self.buf.append(data)
        self.buffered += len(data)
        if self.buffered >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.sink.write(b"".join(self.buf))
            self.buf.clear()
            self.buffered = 0
            # About every MiB of small files: the content counter the upload
            # line shows then moves with the wire's, not every 1024 entries.
            if self.progress is not None:
                self.progress(self.stats.files, self.stats.bytes)

    def _clamped(self, h: TarHeader) -> TarHeader:
        return replace(h, mtime=min(h.mtime, self.clamp)) if self.opts.reproducible else h

    def _mtime(self, mtime_ns: int) -> int:
        mtime = mtime_ns // 1_000_000_000
        return min(mtime, self.clamp) if self.opts.reproducible else mtime

    # -- entries ----------------------------------------------------------------
    def rows(self, batch: list[Row]) -> None:
        """Add a batch of rows.

        The common case, a small regular file that reads back exactly as the
        walker saw it, is done inline: on a large context this loop is most
        of the packer's time.  Everything else, and any surprise on the way
        (an xattr, a changed or vanished file, a read error), goes through
        :meth:`row`, which starts that entry over with every check.
        """
        if self.opts.reproducible:
            for row in batch:
                self.row(row)
            return
        root = self.root
        buf = self.buf
        stats = self.stats
        progress = self.progress
        open_, pread, fstat, close, listxattr = os.open, os.pread, os.fstat, os.close, os.listxattr
        # Files are opened relative to their directory's descriptor (rows come
        # directory by directory): the kernel then resolves one name, not the
        # whole path, as GNU tar does.
        cur_dir, dfd = self._dir
        for row in batch:
            path, kind, mode, size, mtime_ns, ctime_ns, _, _, data, header = row
            if kind != FILE or header is None or size > SMALL_FILE:
                if header is None or kind == FILE:
                    self.row(row)
                    continue
                buf.append(header)  # a directory or symlink, encoded by the walker
                added = 512
            else:
                d, _, name = path.rpartition("/")
                if d != cur_dir or dfd < 0:
                    cur_dir, dfd = self._enter(d)
                try:
                    fd = open_(name, FILE_FLAGS, dir_fd=dfd) if dfd >= 0 else open_(root + path, FILE_FLAGS)
                except OSError:
                    self.row(row)
                    continue
                try:
                    # Docker reads security.capability of every file; listing
                    # the names first is the same answer without an exception
                    # per file (3x cheaper: none is the common case).
                    try:
                        xattr = _CAPABILITY in listxattr(fd)
                    except OSError:
                        xattr = False  # unsupported here: docker stores none either
                    data = pread(fd, size + 1, 0) if not xattr else b""
                    after = fstat(fd)
                except OSError:
                    data, xattr = b"", True
                finally:
                    close(fd)
                if (xattr or len(data) != size or after.st_mode != mode or after.st_size != size
                        or after.st_mtime_ns != mtime_ns or after.st_ctime_ns != ctime_ns):
                    self.row(row)
                    continue
                buf.append(header)
                buf.append(data)
                buf.append(PADDINGS[-size & 511])
                stats.files += 1
                stats.bytes += size
                added = size + 512
            stats.entries += 1
            self.buffered += added
            if self.buffered >= FLUSH_AT:
                self.flush()
            if progress is not None and stats.entries % 1024 == 0:
                progress(stats.files, stats.bytes)

    def _enter(self, d: str) -> tuple[str, int]:
        """The descriptor of directory ``d`` (relative), the previous closed;
        -1 when it cannot be opened (the path is used then)."""
        self.close_dir()
        try:
            fd = os.open(self.root + d if d else self.root, DIR_FLAGS)
        except OSError:
            fd = -1
        self._dir = (d, fd)
        return self._dir

    def close_dir(self) -> None:
        fd = self._dir[1]
        if fd >= 0:
            self._dir = ("", -1)
            os.close(fd)

    def row(self, row: Row) -> None:
        """Add one row (any kind, with every check)."""
        path, kind, mode, size, mtime_ns, ctime_ns, rdev, link, data, _ = row
        if kind == FILE and data is None:
            self._file(path, size, mtime_ns, ctime_ns)
        elif kind == WARN:
            self.warn(path)
            return
        elif data is not None:
            self._synthetic(path, mode, mtime_ns, data)
        elif kind == HARDLINK and not self.opts.reproducible:
            # The inode's header (devices keep their numbers), as a link.
            h = header_from_mode(path, mode, size, mtime_ns, rdev)
            self.put(encode_header(replace(h, typeflag=TYPE_LINK, linkname=link or "", size=0)))
        elif kind == HARDLINK and st.S_ISREG(mode):  # reproducible: every name stands alone
            self._file(path, size, mtime_ns, ctime_ns)
        else:
            self.put(encode_header(self._clamped(header_from_mode(path, mode, size, mtime_ns, rdev, linkname=link or ""))))
        stats = self.stats
        stats.entries += 1
        if self.progress is not None and stats.entries % 1024 == 0:
            self.progress(stats.files, stats.bytes)

    def _synthetic(self, rel: str, mode: int, mtime_ns: int, data: bytes) -> None:
        if mode != NO_STAT:  # .dockerignore rewritten in place: its header, new size
            h = encode_fields(rel, TYPE_REG, mode & 0o7777, len(data), self._mtime(mtime_ns))
        else:  # added by the CLI: mode 0600, mtime now (AddDockerfileToBuildContext)
            h = encode_fields(rel, TYPE_REG, 0o600, len(data), self._mtime(self.now * 1_000_000_000))
        self.put(h + data + padding(len(data)))
        self.stats.files += 1
        self.stats.bytes += len(data)

    def _file(self, rel: str, size: int, mtime_ns: int, ctime_ns: int) -> None:
        abspath = self.root + rel
        try:
            fd = os.open(abspath, FILE_FLAGS)
        except OSError:
            again = open_regular(abspath, rel)  # the same again, for its error reporting
            if again is None:
                if self.opts.strict:
                    raise ChangedDuringReadError(f"{rel}: vanished while being sent", abspath)
                self.warn(f"{rel}: vanished while packing; left out (as docker does)")
                return
            fd = again
        try:
            # The slow path: the file as it is now (fstat) is the "before" of
            # the consistency check; it is taken as read only if fstat after
            # the read still agrees.
            before = os.fstat(fd)
            if not st.S_ISREG(before.st_mode):
                raise ChangedDuringReadError(f"{rel}: no longer a regular file", abspath)
            os.set_blocking(fd, True)  # opened O_NONBLOCK against FIFOs; some network filesystems honour it
            xattrs = read_security_capability(fd)
            if before.st_size <= SMALL_FILE:
                try:
                    data, after = read_whole(fd, before.st_size, before.st_mtime_ns, before.st_ctime_ns, rel, abspath)
                except OSError as e:
                    raise ContextError(f"cannot read '{abspath}': {e.strerror}", abspath) from None
                size = len(data)
                mode = after.st_mode
                mtime = self._mtime(after.st_mtime_ns)
                if xattrs:
                    h = encode_header(TarHeader(rel, TYPE_REG, mode & 0o7777, size, mtime, xattrs=xattrs))
                else:
                    h = encode_fields(rel, TYPE_REG, mode & 0o7777, size, mtime)
                self.put(h + data + padding(size))
            else:
                size = before.st_size
                self.put(encode_header(self._clamped(header_from_stat(rel, before, xattrs=xattrs))))
                self.flush()
                self._stream(fd, size, rel, abspath)
                self.put(padding(size))
                after = os.fstat(fd)
                if (after.st_size != size or after.st_mtime_ns != before.st_mtime_ns
                        or after.st_ctime_ns != before.st_ctime_ns):
                    raise ChangedDuringReadError(f"{rel}: changed while being packed", abspath)
            self.stats.files += 1
            self.stats.bytes += size
        finally:
            os.close(fd)

    def _stream(self, fd: int, size: int, rel: str, abspath: str) -> None:
        # In pieces, so that the progress line moves during a large file.
        sent = 0
        while sent < size:
            piece = min(STREAM_PIECE, size - sent)
            n = self.sink.sendfile(fd, sent, piece)
            if n is None:  # the sink cannot: through memory, 1 MiB at a time
                n = 0
                while n < piece:
                    chunk = os.pread(fd, min(CHUNK, piece - n), sent + n)
                    if not chunk:
                        break
                    self.sink.write(chunk)
                    n += len(chunk)
            sent += n
            if n < piece:
                break
            if self.progress is not None:
                self.progress(self.stats.files, self.stats.bytes + sent)
        if sent < size:
            raise ChangedDuringReadError(f"{rel}: shrank from {size} to {sent} bytes while being packed", abspath)


def _fork_walker(opts: PackOptions) -> bool:
    return can_fork() if opts.parallel is None else (opts.parallel and hasattr(os, "fork"))


def _write(root: str, batches: Iterable[list[Row]], out: Sink, opts: PackOptions, warn: Warn,
           progress: Progress | None, started: float) -> PackStats:
    sink = make_sink(out, opts.compress, opts.level)
    w = _Writer(root, sink, opts, warn, progress)
    try:
        for batch in batches:
            w.rows(batch)
    finally:
        w.close_dir()
    w.put(END_OF_ARCHIVE)
    w.flush()
    sink.close()
    w.stats.written = out.written
    w.stats.elapsed = time.monotonic() - started
    return w.stats


def pack(
    ctx: BuildContext,
    out: Sink,
    opts: PackOptions = PackOptions(),
    *,
    warn: Warn = lambda msg: None,
    progress: Progress | None = None,
    walked: Iterable[Entry] | None = None,
) -> PackStats:
    """Write the context's tar to ``out`` (see :class:`~ctxpack.tar.sinks.FdSink`).

    With ``opts.parallel`` (by default where :func:`~ctxpack.tar.rows.can_fork`
    says it is safe and useful) the walk runs in a forked child process
    while this one reads and writes: same bytes, about half the wall time on
    a large context.  ``out`` may be any :class:`~ctxpack.tar.sinks.Sink`:
    a transport hands in its socket so an upload keeps ``sendfile``.
    ``walked``: :func:`~ctxpack.walker.walk_all`'s output with each entry's
    ``lstat``, when the caller has it (a running ``ctxpack watch``:
    :func:`ctxpack.watch.client.warm_entries`); nothing is walked then.
    """
    started = time.monotonic()
    headers = not opts.reproducible
    rows = None if walked is None else (lambda c: builder_rows(c, headers=headers, walked=walked))
    # The walker is forked here, before the sink exists: a compressor may
    # start threads, and a fork copies none of them.
    with row_batches(ctx, fork=_fork_walker(opts), headers=headers, rows=rows,
                     close_in_child=(out.fd,) if isinstance(out, FdSink) else ()) as batches:
        return _write(ctx.root, batches, out, opts, warn, progress, started)


def pack_entries(
    root: str,
    entries: Iterable[Entry],
    out: Sink,
    opts: PackOptions = PackOptions(),
    *,
    warn: Warn = lambda msg: None,
) -> PackStats:
    """Write a tar of exactly ``entries`` (paths relative to ``root``), in
    the order given, with the headers and checks of :func:`pack`.

    For callers that chose the entries themselves (docker-py's
    ``create_archive``); :func:`pack` is the way to send a context.
    """
    started = time.monotonic()

    def batches() -> Iterator[list[Row]]:
        batch: list[Row] = []
        for e in entries:
            batch.append(entry_row(e, header=not opts.reproducible))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        yield batch

    return _write(root, batches(), out, opts, warn, None, started)


def iter_tar(ctx: BuildContext, opts: PackOptions = PackOptions(), *, warn: Warn = lambda msg: None) -> Iterator[bytes]:
    """The tar as a stream of byte chunks, for callers that send it themselves.

    The walker is forked (as :func:`pack` does) before the producer thread
    starts, so a consumer of this stream gets ``pack``'s speed; the
    producer packs into a bounded queue, so memory stays flat whatever the
    context size; errors are re-raised in the consumer.  Closing the
    generator early stops the producer and reaps the walker.
    """
    started = time.monotonic()
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()
    batches = row_batches(ctx, fork=_fork_walker(opts), headers=not opts.reproducible)

    def put(chunk: bytes) -> None:
        while not stop.is_set():
            try:
                q.put(chunk, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def produce() -> None:
        try:
            _write(ctx.root, batches, CallbackSink(put), opts, warn, None, started)
            q.put(None)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, name="ctxpack-iter-tar", daemon=True)
    try:
        t.start()
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if t.is_alive() or t.ident is not None:
            t.join()
        batches.close()


class _Stopped(Exception):
    """The consumer of :func:`iter_tar` went away."""
