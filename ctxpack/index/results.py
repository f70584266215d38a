"""What fingerprint and diff answer: :class:`Fingerprint`, :class:`Delta`,
:class:`Change` (a leaf module: a command answered by a running watcher
builds them without loading the index)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Fingerprint", "Delta", "Change", "KINDS"]


@dataclass
class Fingerprint:
    """A fingerprint and what it took: ``hashed`` files (``hashed_bytes``
    bytes) were read to answer, by this call; 0 when the index vouched for
    every digest, or when a running ``ctxpack watch`` answered (it hashed
    them when the tree changed, for every client).

    ``how`` says which way it went: ``"warm"`` (stat keys only),
    ``"files"`` (changed files re-read), ``"walk"``.
    """

    fingerprint: str
    entries: int = 0
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    hashed_bytes: int = 0
    elapsed: float = 0.0
    how: str = "walk"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "fingerprint": self.fingerprint, "entries": self.entries, "files": self.files, "bytes": self.bytes,
            "hashed": self.hashed, "hashed_bytes": self.hashed_bytes,
        }


# The fingerprint's kind letters, as ``diff --json`` names them.
KINDS = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "c": "char", "b": "block"}


@dataclass(frozen=True)
class Change:
    """One entry added, removed or modified.  ``bytes``: its content bytes
    (what a regular file carries; 0 for a directory, symlink or device:
    they carry none, whatever their ``st_size``); ``kind``: its kind
    letter (``f``, ``d``, ``l``, ...; the new one for a modified entry),
    ``""`` when not known."""

    path: str
    bytes: int
    what: str = ""  # for modified: "content", "mode", "link", "type"
    kind: str = ""

    @classmethod
    def of(cls, path: str, kind: str, size: int, what: str = "") -> Change:
        """The change of an entry of ``kind`` whose stat size is ``size``."""
        return cls(path, size if kind == "f" else 0, what, kind)

    @property
    def has_size(self) -> bool:
        """A regular file's change (one whose size means something)."""
        return self.kind in ("f", "")

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"path": self.path, "bytes": self.bytes}
        if self.kind:
            d["kind"] = KINDS.get(self.kind, self.kind)
        if self.what:
            d["change"] = self.what
        return d


@dataclass
class Delta:
    since: float | None
    added: list[Change]
    removed: list[Change]
    modified: list[Change]
    fingerprint: str
    previous: str | None
    # The index's warnings of this run (a file moved aside, an index that
    # could not be used): stderr, not part of the JSON.
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def to_json(self) -> dict[str, object]:
        return {
            "since": None if self.since is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.since)),
            "added": [c.to_json() for c in self.added],
            "removed": [c.to_json() for c in self.removed],
            "modified": [c.to_json() for c in self.modified],
        }
