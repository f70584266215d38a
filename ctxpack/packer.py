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

from .context import BuildContext, Dialect
from .errors import ChangedDuringReadError, OutputError
from .hasher import open_regular, read_whole
from .tarformat import (
    END_OF_ARCHIVE,
    TYPE_LINK,
    TYPE_REG,
    TarHeader,
    encode_header,
    header_from_stat,
    padding,
    read_security_capability,
)
from .walker import Entry, EntryKind, entries_for_builder, injected_dockerfile_name

__all__ = ["PackOptions", "PackStats", "pack", "iter_tar", "open_output", "Sink", "FdSink", "GzipSink", "ZstdSink", "CallbackSink", "COMPRESSIONS"]

COMPRESSIONS = ("none", "gzip", "zstd")

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC

# Files up to this size are read with one pread into memory (fewer syscalls
# than sendfile for the many small files of a typical context); larger ones
# are streamed.
SMALL = 256 * 1024
CHUNK = 1 << 20
FLUSH_AT = 1 << 20

Warn = Callable[[str], None]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PackOptions:
    """How to pack: compression, determinism, and what to do with the Dockerfile.

    ``reproducible``: mtimes clamped to ``source_date_epoch`` (0 when
    ``None``), hard links stored as files, so the bytes depend only on
    content, paths and modes.
    """

    compress: str = "none"
    level: int | None = None
    reproducible: bool = False
    source_date_epoch: int | None = None


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


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_ctime_ns == b.st_ctime_ns


class _Writer:
    """Turns entries into tar bytes on a sink, batching small writes."""

    def __init__(self, ctx: BuildContext, sink: Sink, opts: PackOptions, warn: Warn, progress: Progress | None):
        self.ctx = ctx
        self.sink = sink
        self.opts = opts
        self.warn = warn
        self.progress = progress
        self.buf: list[bytes] = []
        self.buffered = 0
        self.stats = PackStats()
        self.links: dict[tuple[int, int], str] = {}
        self.now = int(time.time())
        self.clamp = opts.source_date_epoch if opts.source_date_epoch is not None else 0

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

    # -- headers ----------------------------------------------------------------
    def _fix(self, h: TarHeader) -> TarHeader:
        if self.opts.reproducible:
            return replace(h, mtime=min(h.mtime, self.clamp))
        return h

    def entry(self, e: Entry) -> None:
        abspath = self.ctx.root + "/" + e.path
        if e.data is not None:
            self._synthetic(e, abspath)
        elif e.kind == EntryKind.FILE or (e.kind == EntryKind.HARDLINK and self.opts.reproducible):
            self._file(e, abspath)
        else:
            assert e.stat is not None
            link = e.link or ""
            h = header_from_stat(e.path, e.stat, linkname=link)
            if e.kind == EntryKind.HARDLINK:
                h = replace(h, typeflag=TYPE_LINK, linkname=link, size=0)
            self.put(encode_header(self._fix(h)))
        self.stats.entries += 1
        if self.progress is not None and self.stats.entries % 1024 == 0:
            self.progress(self.stats.entries, self.stats.bytes)

    def _synthetic(self, e: Entry, abspath: str) -> None:
        data = e.data or b""
        if e.stat is not None:  # .dockerignore rewritten in place: its header, new size
            h = replace(header_from_stat(e.path, e.stat), size=len(data))
        else:  # added by the CLI: mode 0600, mtime now (AddDockerfileToBuildContext)
            h = TarHeader(name=e.path, typeflag=TYPE_REG, mode=0o600, size=len(data), mtime=self.now)
        self.put(encode_header(self._fix(h)) + data + padding(len(data)))
        self.stats.files += 1
        self.stats.bytes += len(data)

    def _file(self, e: Entry, abspath: str) -> None:
        try:
            fd = os.open(abspath, _OPEN_FLAGS)
        except OSError:
            again = open_regular(abspath, e.path)  # the same again, for its error reporting
            if again is None:
                self.warn(f"{e.path}: vanished while packing; left out (as docker does)")
                return
            fd = again
        try:
            # The walker's lstat is the "before" of the consistency check: a
            # file is taken as read only if fstat after the read still agrees.
            before = e.stat if e.stat is not None and e.kind == EntryKind.FILE else os.fstat(fd)
            if not st.S_ISREG(before.st_mode):
                raise ChangedDuringReadError(f"{e.path}: no longer a regular file", abspath)
            xattrs = read_security_capability(fd)
            size = before.st_size
            if size <= SMALL:
                data, before = read_whole(fd, before, e.path, abspath)
                size = len(data)
                # What header_from_stat builds for a regular file, without the detour.
                h = TarHeader(e.path, TYPE_REG, before.st_mode & 0o7777, size, before.st_mtime_ns // 1_000_000_000,
                              xattrs=xattrs)
                if self.opts.reproducible:
                    h = self._fix(h)
                self.put(encode_header(h) + data + padding(size))
            else:
                h = header_from_stat(e.path, before, xattrs=xattrs)
                self.put(encode_header(self._fix(h)))
                self.flush()
                self._stream(fd, size, e.path, abspath)
                self.put(padding(size))
                if not _same(before, os.fstat(fd)):
                    raise ChangedDuringReadError(f"{e.path}: changed while being packed", abspath)
            self.stats.files += 1
            self.stats.bytes += size
        finally:
            os.close(fd)

    def _stream(self, fd: int, size: int, rel: str, abspath: str) -> None:
        sent = self.sink.sendfile(fd, 0, size)
        if sent is None:
            sent = 0
            while sent < size:
                chunk = os.pread(fd, min(CHUNK, size - sent), sent)
                if not chunk:
                    break
                self.sink.write(chunk)
                sent += len(chunk)
        if sent < size:
            raise ChangedDuringReadError(f"{rel}: shrank from {size} to {sent} bytes while being packed", abspath)


def _entries(ctx: BuildContext, warn: Warn) -> Iterator[Entry]:
    """The walker's entries, plus the Dockerfile wherever a tar needs it."""
    for e in entries_for_builder(ctx):
        if e.forced and e.data is None:
            rule = ctx.file_matcher.decide_path(e.path)[-1][1].rule
            warn(
                f"{e.path} is excluded by the ignore rules but travels in the tar so the builder can read it ({rule}); "
                "builders that apply no ignore rules to an uploaded tar (BuildKit) let COPY . see it"
            )
        yield e
    if ctx.dialect is Dialect.BUILDKIT and ctx.dockerfile_data is not None:
        # A Dockerfile from outside the context or stdin (the classic dialect
        # injects it already, as the docker CLI does).
        yield Entry(injected_dockerfile_name(ctx), EntryKind.FILE, None, forced=True, data=ctx.dockerfile_data)


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
    """Write the context's tar to ``out`` (see :class:`FdSink`)."""
    started = time.monotonic()
    sink = make_sink(out, opts.compress, opts.level)
    w = _Writer(ctx, sink, opts, warn, progress)
    for e in _entries(ctx, warn):
        w.entry(e)
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
