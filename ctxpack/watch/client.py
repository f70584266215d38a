"""The client side of a running watcher's socket (:mod:`ctxpack.watch.channel`).

Kept light: a command that a watcher answers should cost little more than
the interpreter's start-up, so nothing here loads the context, the matcher,
the walker or the index at import time.  Two ways to ask:

* with an opened :class:`~ctxpack.context.BuildContext`
  (:func:`warm_fingerprint`, :func:`warm_diff`, :func:`warm_walk`): the
  watcher compares a digest of the context's rules with its own;
* before any context is opened (:func:`quick_fingerprint`,
  :func:`quick_diff`): the client sends the options as given
  (:func:`spec`), the watcher answers only when it was started with the
  same ones, and sends the stat keys the Dockerfile and ignore-file
  candidates had when it last opened the context, which the client checks
  against the disk (:func:`context_inputs`).  The context's notes and
  warnings come with the answer (and only to a client in the watcher's
  working directory when there are any: some name paths relative to it).

Either way a client verifies the sample of directory mtimes the watcher
sends, and any doubt means ``None``: the caller walks as if no watcher ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from typing import TYPE_CHECKING

from ctxpack.watchlink import (PROTOCOL, context_inputs, enabled, peer_stopped, silent, socket_path, spec, stat_key,
                               timed_out)
from ctxpack.watchlink import timeout as _timeout

if TYPE_CHECKING:
    from ctxpack.context import BuildContext
    from ctxpack.index.results import Delta, Fingerprint
    from ctxpack.walker import Entry

__all__ = [
    "PROTOCOL", "enabled", "socket_path", "shape", "shape_key", "spec", "context_inputs",
    "warm_fingerprint", "warm_diff", "warm_walk", "warm_entries", "quick_fingerprint", "quick_diff", "NoSnapshot",
]

#: A JSON-able description of a command's context options (see :func:`spec`).
Spec = dict[str, object]

_stat_key = stat_key


def shape(ctx: "BuildContext") -> tuple[object, ...]:
    """Everything of a context that decides which paths it has (not their content)."""
    sel = ctx.selection.patterns if ctx.selection is not None else None
    return (ctx.dialect.value, ctx.dockerfile, ctx.dockerfile_path, ctx.ignore_source,
            tuple((r.source, r.line, r.text) for r in ctx.matcher.rules), ctx.dockerfile_data,
            None if sel is None else tuple(sel))


def shape_key(ctx: "BuildContext") -> str:
    """A digest of the options that decide the context's paths."""
    return hashlib.sha256(repr(shape(ctx)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


# -- framing: a JSON header line, then an optional payload of the length it gives ----------
def send(sock: socket.socket, header: dict[str, object], payload: bytes = b"") -> None:
    """One message: the header as a JSON line, then ``payload``."""
    header["payload"] = len(payload)
    sock.sendall(json.dumps(header).encode() + b"\n" + payload)


def recv(f: object, line: bytes | None = None) -> tuple[dict[str, object], bytes]:
    """One message from a binary file of a socket (see :func:`send`);
    ``line``: its first line, when the caller has read it already."""
    if line is None:
        line = f.readline()  # type: ignore[attr-defined]
    assert line is not None
    if not line.endswith(b"\n"):
        raise ConnectionError("connection closed")
    header = json.loads(line)
    if not isinstance(header, dict):
        raise ValueError("not a header")
    n = int(header.get("payload", 0))
    payload = f.read(n) if n else b""  # type: ignore[attr-defined]
    if len(payload) != n:
        raise ConnectionError("short payload")
    return header, payload


def _ask_root(root: str, request: dict[str, object]) -> tuple[dict[str, object], bytes] | None:
    """One request to the watcher of ``root``; ``None`` whenever the answer
    cannot be trusted (see the module docstring)."""
    path = socket_path(root)
    if not os.path.exists(path) or silent(path):
        return None
    timeout = _timeout()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            if peer_stopped(s):
                timed_out(path, root, True)  # it would not answer in time: the next ask does not try
                return None
            s.sendall(json.dumps(request).encode() + b"\n")
            with s.makefile("rb") as f:
                header, payload = recv(f)
    except TimeoutError:
        timed_out(path, root, False)  # stuck: the next ask in this process does not wait again
        return None
    except (OSError, ValueError, ConnectionError):
        return None  # dead (refused), lagging (timeout) or confused: walk instead
    if not header.get("ok") or header.get("protocol") != PROTOCOL:
        return None
    checks = header.get("checks", [])
    if not isinstance(checks, list):
        return None
    for rel, mtime in checks:
        try:
            if os.lstat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime:
                return None
        except OSError:
            return None
    return header, payload


def _ask(ctx: "BuildContext", request: dict[str, object]) -> tuple[dict[str, object], bytes] | None:
    if not enabled() or ctx.dockerfile_stdin:
        return None
    request["shape"] = shape_key(ctx)
    return _ask_root(ctx.root, request)


def _ask_quick(s: Spec, request: dict[str, object]) -> tuple[dict[str, object], list[str], list[str]] | None:
    """A request by options (no context opened): the answer, the context's
    notes and its warnings, or ``None``."""
    if not enabled():
        return None
    request["spec"] = s
    request["cwd"] = os.getcwd()
    got = _ask_root(str(s["root"]), request)
    if got is None:
        return None
    header = got[0]
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return None
    for path, key in inputs:
        if _stat_key(str(path)) != key:
            return None  # a Dockerfile or ignore file differs from what the watcher read
    notes, warnings = header.get("ctx_notes", []), header.get("ctx_warnings", [])
    if not isinstance(notes, list) or not isinstance(warnings, list):
        return None
    return header, [str(n) for n in notes], [str(w) for w in warnings]


def _fingerprint_of(header: dict[str, object]) -> "Fingerprint":
    from ctxpack.index.results import Fingerprint

    d = header["fingerprint"]
    assert isinstance(d, dict)
    fp = Fingerprint(str(d["fingerprint"]), int(d["entries"]), int(d["files"]), int(d["bytes"]),
                     int(d["hashed"]), int(d["hashed_bytes"]))
    notes = header.get("notes", [])
    fp.notes = [str(n) for n in notes] if isinstance(notes, list) else []
    return fp


class NoSnapshot:
    """``warm_diff``'s answer when the watcher found no snapshot."""


def _delta_of(header: dict[str, object]) -> "Delta | NoSnapshot":
    from ctxpack.index.results import Change, Delta

    d = header["delta"]
    if d is None:
        return NoSnapshot()
    assert isinstance(d, dict)

    def changes(key: str) -> list[Change]:
        # [path, bytes, what, kind] (kind: since the diff's kinds; older watchers send three)
        return [Change(c[0], c[1], c[2], c[3] if len(c) > 3 else "") for c in d[key]]

    return Delta(d["since"], changes("added"), changes("removed"), changes("modified"), d["fingerprint"], d["previous"])


def warm_fingerprint(ctx: "BuildContext") -> "Fingerprint | None":
    """The context's fingerprint from a running watcher, or ``None``."""
    got = _ask(ctx, {"op": "fingerprint"})
    return None if got is None else _fingerprint_of(got[0])


def warm_diff(ctx: "BuildContext") -> "Delta | NoSnapshot | None":
    """What ``diff`` would say, from a running watcher; ``None``: ask the index."""
    got = _ask(ctx, {"op": "diff"})
    return None if got is None else _delta_of(got[0])


def warm_walk(ctx: "BuildContext", *, excluded: bool = False) -> "list[Entry] | None":
    """:func:`ctxpack.walker.walk_all` from a running watcher (entries
    without stat: enough for listings), or ``None``."""
    got = _ask(ctx, {"op": "walk", "excluded": excluded})
    if got is None:
        return None
    return unpack_entries(ctx, got[1])


# lstat's file type -> the walker's kind (a hard link is a file to lstat).
_KIND_OF_TYPE = {0o100000: ("file", "hardlink"), 0o040000: ("dir",), 0o120000: ("symlink",), 0o010000: ("fifo",),
                 0o020000: ("char",), 0o060000: ("block",)}


def warm_entries(ctx: "BuildContext", *, excluded: bool = False) -> "list[Entry] | None":
    """:func:`warm_walk`'s entries with their ``lstat`` (the sent ones;
    excluded ones keep none: they are measured where they are), ready for
    :func:`ctxpack.tar.writer.pack`'s, :func:`ctxpack.explainer.size`'s and
    :func:`ctxpack.walker.entries_for_builder`'s ``walked``.  ``None`` when
    no watcher answers, or when an entry is gone or changed type by the
    time it is statted (then walk: what changed is still in the watcher's
    queue)."""
    entries = warm_walk(ctx, excluded=excluded)
    if entries is None:
        return None
    if ctx.omitted:  # ctxpack's own output (BuildContext.omitting): the walker skips it, as if absent
        entries = [e for e in entries if e.path not in ctx.omitted]
        if any(e.kind == "hardlink" and e.link in ctx.omitted for e in entries):
            return None  # its first name would have been another one: walk
    root = ctx.root
    for e in entries:
        if not e.included:
            continue
        try:
            s = os.lstat(os.path.join(root, e.path))
        except OSError:
            return None
        if e.kind not in _KIND_OF_TYPE.get(s.st_mode & 0o170000, ()):
            return None
        e.stat = s
    return entries


def quick_fingerprint(s: Spec) -> "tuple[Fingerprint, list[str], list[str]] | None":
    """(fingerprint, the context's notes, its warnings) from a running
    watcher started with the options ``s``, without opening the context."""
    got = _ask_quick(s, {"op": "fingerprint"})
    return None if got is None else (_fingerprint_of(got[0]), got[1], got[2])


def quick_diff(s: Spec) -> "tuple[Delta | NoSnapshot, list[str], list[str]] | None":
    """(what ``diff`` says, notes, warnings), as :func:`quick_fingerprint`."""
    got = _ask_quick(s, {"op": "diff"})
    return None if got is None else (_delta_of(got[0]), got[1], got[2])


# -- entries on the wire -------------------------------------------------------------------
def pack_entries(entries: "list[Entry]") -> bytes:
    """path NUL kind NUL rule-index NUL included NUL link NUL forced, per entry."""
    parts: list[str] = []
    for e in entries:
        parts.extend((e.path, e.kind, str(e.rule.index) if e.rule is not None else "", "1" if e.included else "",
                      e.link or "", "1" if e.forced else ""))
    return "\0".join(parts).encode("utf-8", "surrogateescape")


def unpack_entries(ctx: "BuildContext", payload: bytes) -> "list[Entry]":
    """The entries :func:`pack_entries` wrote, their rules from ``ctx``."""
    from ctxpack.walker import Entry

    if not payload:
        return []
    rules = ctx.matcher.rules
    f = payload.decode("utf-8", "surrogateescape").split("\0")
    out = []
    for i in range(0, len(f), 6):
        path, kind, rule, inc, link, forced = f[i:i + 6]
        out.append(Entry(path, kind, None, link or None, rules[int(rule)] if rule else None, bool(inc), bool(forced)))
    return out
