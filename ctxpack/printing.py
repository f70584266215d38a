"""The text commands print, as (stream, text) chunks: one renderer for the
CLI and for a running ``ctxpack watch`` that answers for it.

A watcher answering ``ctxpack diff`` or ``ctxpack fingerprint`` on the
console script's fast path (:func:`ctxpack.watchlink.run`) sends back exactly what
the command would print; it renders that with these functions, which the
click commands (:mod:`ctxpack.cli.indexing`) use too, so that the two cannot
drift.  A chunk is ``(1, text)`` for stdout or ``(2, text)`` for stderr, the
text with its newline, in the order printed (one ``click.echo`` each).
No click here: the watcher does not load the CLI.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ctxpack.units import format_size

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ctxpack.index.results import Delta, Fingerprint

__all__ = ["Chunk", "printable", "diagnostic", "notes_chunks", "to_json", "fingerprint_chunks", "diff_chunks",
           "diff_exit_code"]

#: (1: stdout, 2: stderr; the text with its newline).
Chunk = tuple[int, str]

# Control characters (C0, DEL, C1) and undecodable bytes (surrogate escapes)
# in a path must never reach a terminal raw: a file named "\x1b]0;pwned\x07"
# would retitle the window, one with "\r" would overwrite the line (issue 16).
# A backslash is doubled where it starts what reads as one of these escapes
# (``\\x``, ``\\n``, ``\\r``, ``\\t``, ``\\\\``): a file literally named
# ``a\\x1b`` is not shown like one holding an ESC byte.  Elsewhere it stays
# single, so patterns and paths quoted in messages read as written.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]|\\\\(?=[xnrt\\\\])")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    n = ord(c)
    return f"\\x{n - 0xDC00 if n >= 0xDC80 else n:02x}"


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters and undecodable
    bytes shown as ``\\n``, ``\\x1b``, ``\\xff``, a backslash before ``x``,
    ``n``, ``r``, ``t`` or another backslash doubled (so the escapes are
    unambiguous); everything else as is."""
    return _UNPRINTABLE.sub(_escape, text)


def diagnostic(kind: str, message: str) -> Chunk:
    """One diagnostic line on stderr: ``ctxpack: KIND: message`` (escaped)."""
    return 2, f"ctxpack: {kind}: {printable(message)}\n"


def notes_chunks(notes: "Sequence[str]", warnings: "Sequence[str]", *, describing: bool = True,
                 dockerfile: bool = True) -> list[Chunk]:
    """A context's notes and warnings, as opening it says them.
    ``describing``: the command only describes the tree (a missing
    Dockerfile is a note; otherwise the caller stops with the error)."""
    out = []
    for note in notes:
        if not describing and not dockerfile and note.startswith("no Dockerfile in "):
            continue  # the caller stops with the error itself
        out.append(diagnostic("note", note))
    out.extend(diagnostic("warning", w) for w in warnings)
    return out


def to_json(obj: object) -> str:
    """The JSON documents commands print (indented; UTF-8 when it can be)."""
    import json  # here: most commands print no JSON
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable file names: keep the document valid UTF-8 with \udcXX
        # escapes (json.loads gives back the surrogate-escaped name).
        text = json.dumps(obj, indent=2)
    return text


def fingerprint_chunks(fp: "Fingerprint", as_json: bool) -> list[Chunk]:
    """What ``ctxpack fingerprint`` prints once the context is open: the
    run's notes and warnings (an index that could not be used), then the
    fingerprint (``--json``: the document)."""
    out = notes_chunks(fp.notes, fp.warnings)
    out.append((1, (to_json(fp.to_json()) if as_json else fp.fingerprint) + "\n"))
    return out


def diff_chunks(delta: "Delta", as_json: bool) -> list[Chunk]:
    """What ``ctxpack diff`` prints once the context is open: the index's
    warnings, then the changes (``--json``: the document); a line on stderr
    when there are none.  Regular files are shown with their size;
    directories, symlinks and devices with none (they carry no content
    bytes: a directory's ``st_size`` is its listing's).  Names are shown
    with :func:`printable` (control characters, undecodable bytes escaped)."""
    out = [diagnostic("warning", w) for w in delta.warnings]
    if as_json:
        out.append((1, to_json(delta.to_json()) + "\n"))
        return out
    for sign, items in (("+", delta.added), ("-", delta.removed), ("M", delta.modified)):
        for c in items:
            extra = f" ({c.what})" if c.what else ""
            size = f"  {format_size(c.bytes)}" if c.has_size else ""
            # Escaped as every other command's text names a path (a "\x1b[31m" in a name
            # would colour the terminal, or be stripped off by click.echo off one, a "\n"
            # split the line); --json and `ls` keep the exact name.
            out.append((1, f"{sign} {printable(c.path)}{extra}{size}\n"))
    if not delta.changed:
        out.append((2, "no changes since the last snapshot\n"))
    return out


def diff_exit_code(delta: "Delta", exit_code: bool) -> int:
    """``diff``'s exit status: 1 for changes with ``--exit-code``, else 0."""
    return 1 if exit_code and delta.changed else 0
