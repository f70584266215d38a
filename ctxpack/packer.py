"""Streaming the context as the tar a builder receives.

The tar matches the docker CLI's classic upload header field by header field
(:mod:`ctxpack.tarformat`), in the walker's order.  It streams: nothing but
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
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import stat as st
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from .context import BuildContext
from .errors import ChangedDuringReadError, ContextError, OutputError
from .hasher import open_regular, read_whole
from .rows import NO_STAT, WARN, Row, can_fork, row_batches
from .tarformat import (
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
from .walker import EntryKind, injected_dockerfile_name

FILE, HARDLINK = EntryKind.FILE, EntryKind.HARDLINK

__all__ = ["PackOptions", "PackStats", "pack", "iter_tar", "open_output", "Sink", "FdSink", "GzipSink", "ZstdSink", "CallbackSink", "COMPRESSIONS"]

COMPRESSIONS = ("none", "gzip", "zstd")

# O_NOFOLLOW: a file replaced by a symlink is not followed; O_NONBLOCK: one
# replaced by a FIFO does not block the open.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_CAPABILITY = "security.capability"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

# Files up to this size are read with one pread into memory (fewer syscalls
# than sendfile for the many small files of a typical context); larger ones
# are streamed.
SMALL = 256 * 1024
CHUNK = 1 << 20
STREAM_PIECE = 64 << 20  # progress is reported between pieces of a large file
FLUSH_AT = 1 << 20

Warn = Callable[[str], None]
Progress = Callable[[int, int], None]  # (files, bytes) so far


@dataclass(frozen=True)
class PackOptions:
    """How to pack: compression, determinism, and what to do with the Dockerfile.

    ``reproducible``: mtimes clamped to ``source_date_epoch`` (0 when
    ``None``), hard links stored as files, so the bytes depend only on
    content, paths and modes.  ``parallel``: walk in a forked process
    (``None``: where :func:`~ctxpack.rows.can_fork` allows, i.e. two CPUs
    and a process with one thread); the bytes are the same either way.
    ``True`` forks even when other threads run: the child only walks, but
    a lock another thread held at the fork stays held in it (Python 3.12+
    warns), so say ``True`` only where that cannot matter.
    """

    compress: str = "none"
    level: int | None = None
    reproducible: bool = False
    source_date_epoch: int | None = None
    parallel: bool | None = None


@dataclass
class PackStats:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    written: int = 0
    elapsed: float = 0.0


class Sink:
    """Where the tar goes.  ``write`` takes bytes; ``sendfile`` may move a
    file range without copying and returns False when it cannot."""

    written = 0

    def write(self, data: bytes | memoryview) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        return None

    def close(self) -> None:
        pass


def _output_error(e: OSError) -> OutputError:
    if e.errno == errno.EPIPE:
        err = OutputError("output closed by the reader (broken pipe)")
        err.broken_pipe = True  # type: ignore[attr-defined]
        return err
    if e.errno == errno.ENOSPC:
        return OutputError("no space left on device while writing the tar")
    return OutputError(f"cannot write the tar: {e.strerror}")


class FdSink(Sink):
    """A raw file descriptor: pipe, socket or file; ``sendfile`` capable."""

    def __init__(self, fd: int):
        self.fd = fd
        self.written = 0
        self._sendfile_ok = True

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
                self.written += n
        except OSError as e:
            raise _output_error(e) from None

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        if not self._sendfile_ok:
            return None
        sent = 0
        try:
            while sent < count:
                n = os.sendfile(self.fd, fd, offset + sent, count - sent)
                if n == 0:
                    break  # the file ended early
                sent += n
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and sent == 0:
                self._sendfile_ok = False
                return None
            raise _output_error(e) from None
        self.written += sent
        return sent


class _CompressingSink(Sink):
    def __init__(self, out: Sink):
        self.out = out
        self.written = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self.out.write(data)
            self.written = self.out.written


class GzipSink(_CompressingSink):
    """gzip (RFC 1952) as the daemon's ``DecompressStream`` accepts it."""

    def __init__(self, out: Sink, level: int | None = None):
        super().__init__(out)
        self._z = zlib.compressobj(6 if level is None else level, zlib.DEFLATED, 31)

    def write(self, data: bytes | memoryview) -> None:
        self._emit(self._z.compress(data))

    def close(self) -> None:
        self._emit(self._z.flush())


class ZstdSink(_CompressingSink):
    """zstd with zstandard's multi-threaded compressor (Engine >= 23 accepts it).

    A streaming writer with 1 MiB jobs: the compressobj API and the default
    job size keep hundreds of MB of input and output in flight (measured
    ~200 MB RSS on a 300 MB file); 1 MiB jobs keep it near 30 MB at the same
    speed, for a slightly larger output.
    """

    JOB_SIZE = 1 << 20

    def __init__(self, out: Sink, level: int | None = None):
        super().__init__(out)
        import zstandard

        self._flush_frame = zstandard.FLUSH_FRAME
        params = zstandard.ZstdCompressionParameters.from_level(
            3 if level is None else level, threads=-1, job_size=self.JOB_SIZE
        )
        self._w = zstandard.ZstdCompressor(compression_params=params).stream_writer(
            _SinkFile(self), closefd=False, write_return_read=True  # type: ignore[arg-type]
        )

    def write(self, data: bytes | memoryview) -> None:
        self._w.write(data)

    def close(self) -> None:
        self._w.flush(self._flush_frame)


class _SinkFile:
    """The file-like object zstandard's stream writer writes into."""

    def __init__(self, sink: _CompressingSink):
        self.sink = sink

    def write(self, data: bytes) -> int:
        self.sink._emit(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class CallbackSink(Sink):
    """Hands every chunk (at most 1 MiB) to a callable (used by :func:`iter_tar`)."""

    def __init__(self, fn: Callable[[bytes], None]):
        self.fn = fn
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        b = bytes(data)
        self.written += len(b)
        self.fn(b)

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        return None  # chunks go through memory, 1 MiB at a time


@contextlib.contextmanager
def open_output(path: str) -> Iterator[FdSink]:
    """A sink onto ``path`` that is all or nothing.

    Writes go to a temporary file in the same directory, synced and renamed
    over ``path`` when the block ends normally; on any error (a full disk, a
    file that changed, Ctrl-C) the temporary file is removed and ``path`` is
    untouched.  A target that exists and is not a regular file
    (``/dev/null``, a FIFO, a device) is written directly: renaming over it
    would replace it.
    """
    try:
        special = not st.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        special = False
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    if special:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as e:
            raise OutputError(f"cannot open {path}: {e.strerror}") from None
        try:
            yield FdSink(fd)
        finally:
            os.close(fd)
        return
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.ctxpack-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(f"cannot create {tmp}: {e.strerror}") from None
    try:
        yield FdSink(fd)
        try:
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except OSError as e:
            raise _output_error(e) from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Writer:
    """Turns rows (:data:`~ctxpack.rows.Row`) into tar bytes on a sink,
    batching small writes."""

    def __init__(self, ctx: BuildContext, sink: Sink, opts: PackOptions, warn: Warn, progress: Progress | None):
        self.root = ctx.root.rstrip("/") + "/"
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
            if kind != FILE or header is None or size > SMALL:
                if header is not None and kind != FILE:  # a directory or symlink
                    buf.append(header)
                    stats.entries += 1
                    self.buffered += 512
                    if self.buffered >= FLUSH_AT:
                        self.flush()
                    if progress is not None and stats.entries % 1024 == 0:
                        progress(stats.files, stats.bytes)
                else:
                    self.row(row)
                continue
            d, _, name = path.rpartition("/")
            if d != cur_dir or dfd < 0:
                cur_dir, dfd = self._enter(d)
            try:
                fd = open_(name, _OPEN_FLAGS, dir_fd=dfd) if dfd >= 0 else open_(root + path, _OPEN_FLAGS)
            except OSError:
                self.row(row)
                continue
            try:
                # Docker reads security.capability of every file; listing the
                # names first is the same answer without an exception per file
                # (3x cheaper: none is the common case).
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
            stats.entries += 1
            self.buffered += size + 512
            if self.buffered >= FLUSH_AT:
                self.flush()
            if progress is not None and stats.entries % 1024 == 0:
                progress(stats.files, stats.bytes)

    def _enter(self, d: str) -> tuple[str, int]:
        """The descriptor of directory ``d`` (relative), the previous closed;
        -1 when it cannot be opened (the path is used then)."""
        self.close_dir()
        try:
            fd = os.open(self.root + d if d else self.root, _DIR_FLAGS)
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
            h = header_from_mode(path, mode, size, mtime_ns, rdev, linkname=link or "")
            if self.opts.reproducible:
                h = replace(h, mtime=min(h.mtime, self.clamp))
            self.put(encode_header(h))
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
            fd = os.open(abspath, _OPEN_FLAGS)
        except OSError:
            again = open_regular(abspath, rel)  # the same again, for its error reporting
            if again is None:
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
            if before.st_size <= SMALL:
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
                hdr = header_from_stat(rel, before, xattrs=xattrs)
                if self.opts.reproducible:
                    hdr = replace(hdr, mtime=min(hdr.mtime, self.clamp))
                self.put(encode_header(hdr))
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


def dockerfile_name_in_tar(ctx: BuildContext) -> str:
    """The ``dockerfile`` parameter a daemon needs for this tar."""
    if ctx.dockerfile_data is not None:
        return injected_dockerfile_name(ctx)
    return ctx.dockerfile or "Dockerfile"


def make_sink(out: Sink, compress: str, level: int | None) -> Sink:
    if compress == "none":
        return out
    if compress == "gzip":
        return GzipSink(out, level)
    if compress == "zstd":
        return ZstdSink(out, level)
    raise ValueError(f"unknown compression {compress!r}")


def pack(
    ctx: BuildContext,
    out: Sink,
    opts: PackOptions = PackOptions(),
    *,
    warn: Warn = lambda msg: None,
    progress: Progress | None = None,
) -> PackStats:
    """Write the context's tar to ``out`` (see :class:`FdSink`).

    With ``opts.parallel`` (by default where :func:`~ctxpack.rows.can_fork`
    says it is safe and useful) the walk runs in a forked child process
    while this one reads and writes: same bytes, about half the wall time on
    a large context.
    """
    started = time.monotonic()
    fork = can_fork() if opts.parallel is None else (opts.parallel and hasattr(os, "fork"))
    # The walker is forked here, before the sink exists: a compressor may
    # start threads, and a fork copies none of them.
    with row_batches(ctx, fork=fork, headers=not opts.reproducible,
                     close_in_child=(out.fd,) if isinstance(out, FdSink) else ()) as batches:
        sink = make_sink(out, opts.compress, opts.level)
        w = _Writer(ctx, sink, opts, warn, progress)
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


def iter_tar(ctx: BuildContext, opts: PackOptions = PackOptions(), *, warn: Warn = lambda msg: None) -> Iterator[bytes]:
    """The tar as a stream of byte chunks, for callers that send it themselves.

    A producer thread packs into a bounded queue, so memory stays flat
    whatever the context size; errors are re-raised in the consumer.  Closing
    the generator early stops the producer.
    """
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
    stop = threading.Event()

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
            pack(ctx, CallbackSink(put), opts, warn=warn)
            q.put(None)
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=produce, name="ctxpack-iter-tar", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


class _Stopped(Exception):
    """The consumer of :func:`iter_tar` went away."""
