"""What fingerprint and diff answer: :class:`Fingerprint`, :class:`Delta`,
:class:`Change` (a leaf module: a command answered by a running watcher
builds them without loading the index)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["Fingerprint", "Delta", "Change"]


@dataclass
class Fingerprint:
    """A fingerprint and what it took: ``hashed`` files were read this run.

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


@dataclass(frozen=True)
class Change:
    path: str
    bytes: int
    what: str = ""  # for modified: "content", "mode", "link", "type"

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"path": self.path, "bytes": self.bytes}
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
