"""Content digests: XXH3-128 of a file, consistent, small files inline.

A digest is taken from an open file descriptor and accepted only if
``fstat`` before and after agree (size, mtime, ctime): a file rewritten while
being hashed is hashed again, and one that keeps changing is an error naming
it.  Small files are read whole (:class:`DirReader`, :func:`ctxpack.fs.read_whole`);
large ones in 1 MiB pieces into one reused buffer per thread, never whole
(xxhash and the read release the GIL, so large files hash on threads).
"""

from __future__ import annotations

import os
import stat as st
import threading
from dataclasses import dataclass

import xxhash

from ctxpack.errors import ChangedDuringReadError
from ctxpack.fs import DIR_FLAGS, FILE_FLAGS, RETRIES, SMALL_FILE, open_regular, read_whole

__all__ = ["FileDigest", "hash_file", "DirReader", "hash_workers", "StatKey", "stat_key", "CHUNK"]

CHUNK = 1 << 20

# (size, mtime_ns, ctime_ns, inode, mode): a file is re-hashed only when one
# of these changed; ctime catches content rewritten with the mtime put back.
StatKey = tuple[int, int, int, int, int]


def stat_key(s: os.stat_result) -> StatKey:
    """The index's key for ``s``: equal keys mean the digest still holds."""
    return (s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode)


@dataclass(frozen=True, slots=True)
class FileDigest:
    path: str
    digest: str
    key: StatKey
    size: int


_local = threading.local()


def _buffer() -> memoryview:
    """One reusable 1 MiB read buffer per thread."""
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(CHUNK))
    return view


def hash_file(abspath: str, rel: str | None = None) -> FileDigest | None:
    """Digest one regular file; ``None`` if it vanished meanwhile."""
    rel = rel or abspath
    fd = open_regular(abspath, rel)
    if fd is None:
        return None
    try:
        before = os.fstat(fd)
        if not st.S_ISREG(before.st_mode):
            raise ChangedDuringReadError(f"{rel}: no longer a regular file", abspath)
        if before.st_size <= SMALL_FILE:
            data, after = read_whole(fd, before.st_size, before.st_mtime_ns, before.st_ctime_ns, rel, abspath)
            return FileDigest(rel, xxhash.xxh3_128_hexdigest(data), stat_key(after), len(data))
        for _ in range(RETRIES):
            view = _buffer()
            h = xxhash.xxh3_128()
            offset = 0
            while True:
                n = os.preadv(fd, [view], offset)
                if n == 0:
                    break
                h.update(view[:n])
                offset += n
            after = os.fstat(fd)
            if offset == before.st_size and stat_key(after) == stat_key(before):
                return FileDigest(rel, h.hexdigest(), stat_key(after), offset)
            before = after
        raise ChangedDuringReadError(f"{rel}: kept changing while being read ({RETRIES} tries)", abspath)
    finally:
        os.close(fd)


class DirReader:
    """Small files read whole through their directory's descriptor.

    Entries come directory by directory (walk order), so the directory is
    opened once and each file by its name, as GNU tar does: the kernel then
    resolves one name instead of the whole path.  :meth:`digest` answers
    only when the read is consistent with the stat the walker saw (same
    size, mtimes, ctime, mode and inode after the read, exactly ``size``
    bytes); otherwise ``None``, and the caller takes :func:`hash_file`,
    which retries and names the file in its errors.
    """

    def __init__(self, root: str):
        self.root = root.rstrip("/") + "/"
        self._dir = ""
        self._dfd = -1
        self._entered = False

    def digest(self, path: str, size: int, mtime_ns: int, ctime_ns: int, ino: int, mode: int) -> bytes | None:
        d, _, name = path.rpartition("/")
        if d != self._dir or not self._entered:
            self._enter(d)
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=self._dfd) if self._dfd >= 0 else os.open(self.root + path, FILE_FLAGS)
        except OSError:
            return None
        try:
            data = os.pread(fd, size + 1, 0)  # one byte more detects growth
            after = os.fstat(fd)
        except OSError:
            return None
        finally:
            os.close(fd)
        if (len(data) != size or after.st_size != size or after.st_mtime_ns != mtime_ns
                or after.st_ctime_ns != ctime_ns or after.st_mode != mode or after.st_ino != ino):
            return None
        return xxhash.xxh3_128_digest(data)

    def _enter(self, d: str) -> None:
        self.close()
        try:
            self._dfd = os.open(self.root + d if d else self.root, DIR_FLAGS)
        except OSError:
            self._dfd = -1  # by path, then
        self._dir = d
        self._entered = True

    def close(self) -> None:
        if self._dfd >= 0:
            os.close(self._dfd)
        self._dfd = -1
        self._entered = False


def hash_workers() -> int:
    """Threads for large files (``CTXPACK_HASH_WORKERS``, default 2; 1: inline)."""
    env = os.environ.get("CTXPACK_HASH_WORKERS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 2
