"""The only place ctxpack lists directories and opens files: sorted scandir,
open flags, consistent reads of small files, and all-or-nothing output.

Every other module asks this one, so the order Docker's walkers use (names
sorted byte-wise, as Go's ``filepath.WalkDir``), the flags that keep a read
from following a symlink or blocking on a FIFO, and the size below which a
file is read whole are each defined once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
from collections.abc import Callable, Iterator

from ctxpack.errors import ChangedDuringReadError, ClosedPipeError, ContextError, OutputError

__all__ = [
    "DIR_FLAGS", "FILE_FLAGS", "SMALL_FILE", "RETRIES",
    "bytes_key", "sort_entries", "scandir_sorted", "scandir_fd",
    "open_regular", "read_whole", "iter_tree", "regular_usage", "regular_in", "atomic_output", "output_error",
]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# O_NOFOLLOW: a file replaced by a symlink after it was listed is not
# followed; O_NONBLOCK: a file replaced by a FIFO cannot block the open.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Files up to this size are read whole in one pread (and re-read when the
# stat after the read disagrees); larger ones are streamed.
SMALL_FILE = 256 * 1024
# How often a read that raced with a writer is redone before giving up.
RETRIES = 3


def bytes_key(name: str) -> bytes:
    """The byte-wise sort key Go uses for a (surrogate-escaped) name."""
    return name.encode("utf-8", "surrogateescape")


def _name(e: os.DirEntry[str]) -> str:
    return e.name


def sort_entries(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Sort directory entries in place, byte-wise by name, and return them."""
    if "".join([e.name for e in entries]).isascii():
        entries.sort(key=_name)
    else:
        # Go sorts names byte-wise; code point order differs for surrogate escapes.
        entries.sort(key=lambda e: bytes_key(e.name))
    return entries


def scandir_sorted(abs_dir: str) -> list[os.DirEntry[str]]:
    """A directory's entries in Go's order; ``OSError`` as the OS raised it."""
    with os.scandir(abs_dir) as it:
        return sort_entries(list(it))


def scandir_fd(abs_dir: str) -> tuple[list[os.DirEntry[str]], int]:
    """:func:`scandir_sorted` through an open descriptor, which the caller
    keeps open while it uses the entries (then closes): their ``stat()`` is
    an ``fstatat`` of one name instead of a lookup of the whole path, as GNU
    tar does."""
    fd = os.open(abs_dir, DIR_FLAGS)
    try:
        with os.scandir(fd) as it:
            entries = list(it)
    except BaseException:
        os.close(fd)
        raise
    return sort_entries(entries), fd


def open_regular(abspath: str, rel: str) -> int | None:
    """Open a file that was listed as regular, without following a symlink
    that replaced it meanwhile; ``None`` if it vanished."""
    try:
        return os.open(abspath, FILE_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ChangedDuringReadError(f"{rel}: replaced by a symlink while being read", abspath) from None
        raise ContextError(f"cannot read '{abspath}': {e.strerror}", abspath) from None


def read_whole(fd: int, size: int, mtime_ns: int, ctime_ns: int, rel: str, abspath: str) -> tuple[bytes, os.stat_result]:
    """Read a small file whole, consistently.

    ``size``/``mtime_ns``/``ctime_ns`` are the file's stat before the read.
    The read is taken when ``fstat`` after it agrees with them and exactly
    ``size`` bytes came; otherwise it is redone, up to :data:`RETRIES`
    times, against the newer stat.  Returns the content and that stat; the
    packer and the hasher both take a small file's bytes this way.
    """
    for _ in range(RETRIES):
        data = os.pread(fd, size + 1, 0)  # one byte more detects growth
        after = os.fstat(fd)
        if (len(data) == size and after.st_size == size and after.st_mtime_ns == mtime_ns
                and after.st_ctime_ns == ctime_ns):
            return data, after
        if not st.S_ISREG(after.st_mode):
            break
        if after.st_size > SMALL_FILE:  # not "small" any more: never read a big file whole
            raise ChangedDuringReadError(f"{rel}: grew from {size} to {after.st_size} bytes while being read", abspath)
        size, mtime_ns, ctime_ns = after.st_size, after.st_mtime_ns, after.st_ctime_ns
    raise ChangedDuringReadError(f"{rel}: kept changing while being read ({RETRIES} tries)", abspath)


def iter_tree(top: str, rel_top: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Every path below ``top`` with its ``lstat``, in walk order (parents
    first, names byte-wise per directory); links are never followed and
    directories that cannot be read are passed over (their entry is still
    yielded).  For descriptions of the whole tree, excluded parts included:
    the walker, not this, decides what a builder sends."""
    stack: list[tuple[str, str]] = [(top, rel_top)]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            entries = scandir_sorted(abs_dir)
        except OSError:
            continue
        subdirs = []
        for de in entries:
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            try:
                s = de.stat(follow_symlinks=False)
            except OSError:
                continue
            yield rel, s
            if st.S_ISDIR(s.st_mode):
                subdirs.append((de.path, rel))
        stack.extend(reversed(subdirs))


def regular_usage(top: str, links: list[tuple[int, int, int]] | None = None) -> tuple[int, int]:
    """How many regular files are below ``top`` and their bytes (``lstat``
    sizes; links never followed; directories that cannot be read, and
    entries gone since their listing, passed over).

    A file of several names (hard links: ``st_nlink`` > 1) is on disk once:
    with ``links``, each such name is appended to it as (``st_dev``,
    ``st_ino``, size) and not counted, so that the caller can count each
    file once over several calls; without, it is counted once here.

    Only sums, so in no order and with no path per entry: the listing's
    entry types (``d_type``) tell directories and regular files apart, and
    only regular files are statted, for their size (where the file system
    gives no entry types, ``is_dir``/``is_file`` stat each entry).  What
    :func:`iter_tree` counts, at a fraction of its cost per entry.
    """
    found: list[tuple[int, int, int]] = [] if links is None else links
    files = size = 0
    stack = [top]
    pop, push = stack.pop, stack.append
    while stack:
        n, b = regular_in(pop(), push, found)
        files += n
        size += b
    if links is None:
        once = {(dev, ino): b for dev, ino, b in found}
        files += len(once)
        size += sum(once.values())
    return files, size


def regular_in(directory: str, push: Callable[[str], object],
               links: list[tuple[int, int, int]]) -> tuple[int, int]:
    """One step of :func:`regular_usage`: the regular files directly in
    ``directory`` and their bytes, except those of several names, which are
    appended to ``links`` as (``st_dev``, ``st_ino``, size) instead; each
    sub-directory's path is handed to ``push`` (to be counted the same way,
    by whoever takes it: ``size`` shares the directories below pruned ones
    between two processes)."""
    files = size = 0
    try:
        it = os.scandir(directory)
    except OSError:
        return 0, 0  # unreadable, or gone meanwhile
    with it:
        for de in it:
            try:
                if de.is_dir(follow_symlinks=False):
                    push(de.path)
                elif de.is_file(follow_symlinks=False):
                    s = de.stat(follow_symlinks=False)
                    if st.S_ISREG(s.st_mode):  # still one (not replaced since the listing)
                        if s.st_nlink > 1:
                            links.append((s.st_dev, s.st_ino, s.st_size))
                        else:
                            size += s.st_size
                            files += 1
            except OSError:
                continue  # gone since the listing: nothing to count
    return files, size


def output_error(e: OSError, what: str = "the tar") -> OutputError:
    """An ``OSError`` while writing ``what``, as the error users see."""
    if e.errno == errno.EPIPE:
        return ClosedPipeError("output closed by the reader (broken pipe)")
    if e.errno == errno.ENOSPC:
        return OutputError(f"no space left on device while writing {what}")
    return OutputError(f"cannot write {what}: {e.strerror}")


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[int]:
    """A descriptor onto ``path`` whose content appears all or nothing.

    Writes go to a temporary file in the same directory, synced and renamed
    over ``path`` when the block ends normally; on any error (a full disk, a
    file that changed, Ctrl-C) the temporary file is removed and ``path`` is
    untouched.  A target that exists and is not a regular file
    (``/dev/null``, a FIFO, a device) is written directly: renaming over it
    would replace it.  :func:`temporary_name` names the temporary file, so
    a walker can leave it (and ``path``) out of the context.
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
            yield fd
        finally:
            os.close(fd)
        return
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise OutputError(f"cannot create {tmp}: {e.strerror}") from None
    try:
        yield fd
        try:
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except OSError as e:
            raise output_error(e, path) from None
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def temporary_name(path: str) -> str:
    """The temporary file :func:`atomic_output` writes before renaming."""
    directory = os.path.dirname(os.path.abspath(path))
    return os.path.join(directory, f".{os.path.basename(path)}.ctxpack-{os.getpid()}.tmp")
