"""A context's entries as the index keeps them: a few columns, not objects.

A :class:`Columns` holds what the fingerprint covers, one slot per entry in
fingerprint order (UTF-8 bytes of the path): path, kind letter, mode bits,
size, value (content digest, link target, ``major,minor`` or empty) and the
stat key ``(size, mtime_ns, ctime_ns, inode, st_mode)`` that vouches for the
value.  After the entries come *extra* paths whose listing the entries
depend on (the context root, excluded directories the walker reads), with
their keys.  Columns are lists of shared strings and :mod:`array` buffers.
The index stores a state as parts of :data:`PART` entries, each three blobs
(:meth:`Columns.encode`), and the extras in its summary row:

* ``paths``: :mod:`marshal` of the list of paths;
* ``keys``: the stat keys as native ``int64`` (``array('q')``), five per path,
  :data:`MISSING` for synthesised entries and paths that did not exist;
* ``records``: :mod:`marshal` of ``(kinds, modes, sizes, values)``.

A warm run needs only the first two (:func:`changed`), one part at a time:
it stats every path and compares the keys in one buffer comparison.  Why a stat proves a
listing: creating, removing or renaming an entry changes its directory's
mtime and ctime, and changing a file's content, mode or links changes its
ctime; so when every directory the walk read and every entry has the key it
had, the walk would return the same entries with the same values.  A
directory whose times lie within :func:`racy_window` of the walk's start
might still change within the same clock tick, so such a state is stored
as not *checkable* (the next run walks again).
"""

from __future__ import annotations

import hashlib
import marshal
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Columns", "RecordHash", "MISSING", "PART", "changed", "racy_window", "RECIPE"]

RECIPE = "ctxpack-fp1"
MISSING = (-1, -1, -1, -1, -1)
KEY = 5
# Entries per stored part: runs hold one part at a time, not the context.
PART = 8192
# A file system whose times have sub-second resolution updates them from a
# clock that lags the real one by at most a tick (Linux: <= 10 ms); 1-second
# (or FAT's 2-second) resolutions need the whole interval.
FINE_WINDOW_NS = 50_000_000
COARSE_WINDOW_NS = 2_000_000_000


def racy_window(mtime_ns: int, ctime_ns: int) -> int:
    """How long after a directory's times a change could still leave them as they are."""
    if mtime_ns % 1_000_000_000 == 0 and ctime_ns % 1_000_000_000 == 0:
        return COARSE_WINDOW_NS
    return FINE_WINDOW_NS


@dataclass
class Columns:
    """Entries in fingerprint order, then ``extra`` paths (see the module docstring)."""

    paths: list[str] = field(default_factory=list)
    kinds: str = ""
    modes: array[int] = field(default_factory=lambda: array("l"))
    sizes: array[int] = field(default_factory=lambda: array("q"))
    values: list[str] = field(default_factory=list)
    keys: array[int] = field(default_factory=lambda: array("q"))

    @property
    def entries(self) -> int:
        return len(self.kinds)

    def key(self, i: int) -> tuple[int, ...]:
        return tuple(self.keys[KEY * i:KEY * i + KEY])

    def totals(self) -> tuple[int, int]:
        """(regular files, their bytes)."""
        files = self.kinds.count("f")
        sizes, kinds = self.sizes, self.kinds
        total = sum(sizes[i] for i in range(len(kinds)) if kinds[i] == "f") if files != len(kinds) else sum(sizes)
        return files, total

    def records(self) -> Iterator[tuple[str, str, int, int, str]]:
        """``(path, kind, mode, size, value)`` per entry, in fingerprint order."""
        return zip(self.paths, self.kinds, self.modes, self.sizes, self.values)

    def fingerprint(self) -> str:
        """The ``ctxpack-fp1`` digest of these entries (docs/fingerprint.md)."""
        h = RecordHash()
        h.add(self)
        return h.hexdigest()

    def slice(self, start: int, end: int) -> Columns:
        """Entries ``start:end`` (no extras) as their own columns."""
        return Columns(self.paths[start:end], self.kinds[start:end], self.modes[start:end], self.sizes[start:end],
                       self.values[start:end], self.keys[KEY * start:KEY * end])

    def encode(self) -> tuple[bytes, bytes, bytes]:
        """The three blobs: paths, keys, records."""
        return (
            marshal.dumps(self.paths),
            self.keys.tobytes(),
            marshal.dumps((self.kinds, self.modes.tobytes(), self.sizes.tobytes(), self.values)),
        )

    @classmethod
    def decode(cls, paths: bytes, keys: bytes, records: bytes) -> Columns:
        c = cls(marshal.loads(paths))
        if keys:
            c.keys.frombytes(keys)
        if records:
            kinds, modes, sizes, values = marshal.loads(records)
            c.kinds = kinds
            c.modes.frombytes(modes)
            c.sizes.frombytes(sizes)
            c.values = values
        return c


class RecordHash:
    """The fingerprint, fed part by part in fingerprint order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256(RECIPE.encode() + b"\n")

    def add(self, c: Columns) -> None:
        n = c.entries
        paths, kinds, modes, values = c.paths, c.kinds, c.modes, c.values
        step = 4096
        for start in range(0, n, step):
            end = min(n, start + step)
            text = "".join([f"{paths[i]}\0{kinds[i]}\0{modes[i]:o}\0{values[i]}\n" for i in range(start, end)])
            self._h.update(text.encode("utf-8", "surrogateescape"))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def current_keys(root: str, paths: list[str]) -> array[int]:
    """The stat keys of ``paths`` (relative to ``root``; ``""`` is the root) now."""
    out = array("q")
    extend = out.extend
    lstat = os.lstat
    prefix = root.rstrip("/") + "/"
    for p in paths:
        try:
            s = lstat(prefix + p if p else root)
        except OSError:
            extend(MISSING)
            continue
        extend((s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_mode))
    return out


def changed(root: str, paths: list[str], keys: bytes) -> list[int]:
    """Indices of ``paths`` whose stat key is no longer the stored one."""
    now = current_keys(root, paths)
    if now.tobytes() == keys:
        return []
    old = array("q")
    old.frombytes(keys)
    if len(old) != len(now):
        return list(range(len(paths)))
    return [i for i in range(len(paths)) if now[KEY * i:KEY * i + KEY] != old[KEY * i:KEY * i + KEY]]
