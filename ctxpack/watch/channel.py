"""Sharing a running watcher's warm state with other ctxpack commands.

Choice: a unix socket, not a state file.  A state file can only say what
the watcher knew when it last wrote it: a write made since, still in the
inotify queue or inside the quiet period, would be missed, and a client
cannot tell.  Over the socket a client's request is a barrier: the watcher
creates a file in a private watched directory, and because one inotify
instance queues events in order, once that event is read every change made
before the request has been read too; the watcher applies them at once
(no quiet period) and answers.  Measured on the 100k-file tree: see
bench/results/watch.md.

Safety: the socket lives in a 0700 directory of the cache directory, named
after the context's root; the server answers only its own user
(``SO_PEERCRED``).  A client falls back to walking itself — returns ``None``
— when nobody listens (a watcher that died leaves at most a dead socket,
which the next watcher replaces), when the answer takes longer than
``CTXPACK_WATCH_TIMEOUT`` seconds (default 5: a lagging watcher), when the
watcher's context options differ (dialect, Dockerfile, rules, --minimal),
when the watcher reports it cannot vouch for its state (overflow rescan,
inotify limit, unreadable paths), or when a quick check of directory mtimes
it sends disagrees with the disk.  ``CTXPACK_WATCH=0`` turns clients off.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

from typing import TYPE_CHECKING

from ctxpack import fs
from ctxpack.context import BuildContext
from ctxpack.errors import CtxpackError, WatchError
from ctxpack.index.store import Index, cache_dir
from ctxpack.walker import Entry

if TYPE_CHECKING:  # clients (ls, diff, fingerprint) load only what they use
    from ctxpack.index.snapshots import Delta, Fingerprint
    from ctxpack.watch.watcher import WarmState, Watcher

__all__ = ["socket_path", "Server", "serving", "warm_fingerprint", "warm_diff", "warm_walk", "shape", "shape_key", "NoSnapshot"]

PROTOCOL = 1
IDLE = 0.5  # seconds without events after which the fingerprint is made ahead of clients
_CHECKS = 64  # directories whose mtime a client verifies per answer


def shape(ctx: BuildContext) -> tuple[object, ...]:
    """Everything of a context that decides which paths it has (not their content)."""
    sel = ctx.selection.patterns if ctx.selection is not None else None
    return (ctx.dialect.value, ctx.dockerfile, ctx.dockerfile_path, ctx.ignore_source,
            tuple((r.source, r.line, r.text) for r in ctx.matcher.rules), ctx.dockerfile_data,
            None if sel is None else tuple(sel))


def shape_key(ctx: BuildContext) -> str:
    """A digest of the options that decide the context's paths."""
    return hashlib.sha256(repr(shape(ctx)).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def socket_path(root: str) -> str:
    """Where the watcher of ``root`` listens (the directory may not exist)."""
    name = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:24] + ".sock"
    base = os.path.join(cache_dir(), "watch")
    if len(os.path.join(base, name)) > 100:  # sun_path holds 108 bytes
        base = f"/tmp/ctxpack-sockets-{os.getuid()}"
    return os.path.join(base, name)


# -- framing: a JSON header line, then an optional payload of the length it gives ----------
def _send(sock: socket.socket, header: dict[str, object], payload: bytes = b"") -> None:
    header["payload"] = len(payload)
    sock.sendall(json.dumps(header).encode() + b"\n" + payload)


def _recv(f: object, deadline: float) -> tuple[dict[str, object], bytes]:
    line = f.readline()  # type: ignore[attr-defined]
    if not line.endswith(b"\n"):
        raise ConnectionError("connection closed")
    header = json.loads(line)
    n = int(header.get("payload", 0))
    payload = f.read(n) if n else b""  # type: ignore[attr-defined]
    if len(payload) != n:
        raise ConnectionError("short payload")
    return header, payload


class Server:
    """Answers clients for one :class:`Watcher` on its socket (one thread,
    requests one at a time: each is a few milliseconds).  Holds a lock file
    so that two watchers of one context refuse each other."""

    def __init__(self, watcher: "Watcher", root: str, *, timeout: float = 5.0):
        self.watcher = watcher
        self.path = socket_path(root)
        self.timeout = timeout
        d = os.path.dirname(self.path)
        os.makedirs(d, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise WatchError(f"{root} is already being watched (lock {self.path}.lock)") from None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead watcher's socket: we hold the lock, so it is dead
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(16)
        self.sock.settimeout(0.5)
        self._stop = threading.Event()
        self._rotor = 0
        self.served = 0
        self._fp: tuple[int, Fingerprint] | None = None
        self._delta: tuple[tuple[int, object], Delta | None] | None = None
        self._snap: tuple[object, list[tuple[str, str, int, int, str]], dict[str, int]] | None = None
        self._thread = threading.Thread(target=self._run, name="ctxpack-watch-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering; remove the socket and the lock file."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path + ".lock")
        os.close(self._lock_fd)

    def _run(self) -> None:
        index: Index | None = None
        try:
            while not self._stop.is_set():
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    index = index or Index(self.watcher.index_dir)
                    self._ahead(index)
                    continue
                except OSError:
                    break
                with conn:
                    try:
                        conn.settimeout(self.timeout)
                        if not self._same_user(conn):
                            continue
                        index = index or Index(self.watcher.index_dir)
                        self._answer(conn, index)
                        self.served += 1
                    except (OSError, ValueError):
                        pass  # the client went away or sent garbage: its problem
        finally:
            if index is not None:
                index.close()

    def _ahead(self, index: Index) -> None:
        """Nothing asked and nothing changing for a moment: have the
        fingerprint ready for the next client."""
        w = self.watcher
        if w.idle >= IDLE and (self._fp is None or self._fp[0] != w.generation) and w.problem is None:
            with contextlib.suppress(CtxpackError, OSError):
                got = w.fingerprint(index)
                if got is not None:
                    self._fp = (got[0].generation, got[1])

    def fingerprint(self, index: Index) -> Fingerprint | None:
        """The fingerprint now, computed once per generation."""
        if self._fp is not None and self._fp[0] == self.watcher.generation:
            return self._fp[1]
        got = self.watcher.fingerprint(index)
        if got is None:
            return None
        self._fp = (got[0].generation, got[1])
        return got[1]

    def delta(self, index: Index, ctx: BuildContext) -> tuple[bool, Delta | None]:
        """(ok, what diff says now), once per generation and snapshot."""
        from ctxpack.index.snapshots import _variant  # the snapshot's key, as diff looks it up

        snap = index.load_snapshot(ctx.root, _variant(ctx))  # the summary row: cheap
        stamp = None if snap is None else (snap.when, snap.fingerprint)
        key = (self.watcher.generation, stamp)
        if self._delta is not None and self._delta[0] == key:
            return True, self._delta[1]
        if snap is None:
            return True, None
        fast = self._compare(index, ctx, snap)
        if fast is not None:
            self._delta = ((fast[0], stamp), fast[1])
            return True, fast[1]
        got = self.watcher.delta(index)
        if got is None:
            return False, None
        self._delta = ((got[0].generation, stamp), got[1])
        return True, got[1]

    def _compare(self, index: Index, ctx: BuildContext, head: object) -> tuple[int, Delta] | None:
        """``diff`` from the watcher's records and the snapshot alone (no
        walk, no stat, nothing hashed, no state written): what the library's
        ``diff`` computes, entry by entry, in the same order."""
        from ctxpack.index.snapshots import Change, Delta, _variant
        from ctxpack.index.state import Columns

        got = self.watcher.records()
        if got is None:
            return None
        state, now = got
        stamp = (head.when, head.fingerprint)  # type: ignore[attr-defined]
        if self._snap is None or self._snap[0] != stamp:
            then_list: list[tuple[str, str, int, int, str]] = []
            for part in index.snapshot_parts(ctx.root, _variant(ctx)):
                then_list.extend(Columns.decode(part[0], b"", part[2]).records())
            self._snap = (stamp, then_list, {r[0]: i for i, r in enumerate(then_list)})
        _, then, before = self._snap
        added, modified = [], []
        for p in sorted(now, key=fs.bytes_key):
            kind, mode, size, value = now[p]
            j = before.get(p)
            if j is None:
                added.append(Change(p, size))
                continue
            _, k0, m0, _, v0 = then[j]
            if k0 != kind:
                modified.append(Change(p, size, "type"))
            elif v0 != value:
                modified.append(Change(p, size, "link" if kind == "l" else "content"))
            elif m0 != mode:
                modified.append(Change(p, size, "mode"))
        removed = [Change(p, sz) for p, _, _, sz, _ in then if p not in now]
        fp = self._fp[1].fingerprint if self._fp is not None and self._fp[0] == state.generation else ""
        return state.generation, Delta(head.when, added, removed, modified, fp, head.fingerprint)  # type: ignore[attr-defined]

    @staticmethod
    def _same_user(conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return bool(uid == os.getuid())

    def _answer(self, conn: socket.socket, index: Index) -> None:
        with conn.makefile("rb") as f:
            req, _ = _recv(f, time.monotonic() + self.timeout)
        op = req.get("op")
        state = self.watcher.sync(self.timeout)
        w = self.watcher
        if state is None:
            _send(conn, {"ok": False, "why": w.problem or "the watcher is not ready"})
            return
        if req.get("shape") != shape_key(state.ctx):
            _send(conn, {"ok": False, "why": "the watcher watches with other options"})
            return
        header: dict[str, object] = {
            "ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "generation": state.generation,
            "checks": self._checks(state),
        }
        if op == "fingerprint":
            fp = self.fingerprint(index)
            if fp is None:
                _send(conn, {"ok": False, "why": w.problem or "changed meanwhile"})
                return
            header["fingerprint"] = fp.to_json()
            header["notes"] = fp.notes
            _send(conn, header)
        elif op == "diff":
            ok, delta = self.delta(index, state.ctx)
            if not ok:
                _send(conn, {"ok": False, "why": w.problem or "changed meanwhile"})
                return
            if delta is None:
                header["delta"] = None
            else:
                header["delta"] = {
                    "since": delta.since, "fingerprint": delta.fingerprint, "previous": delta.previous,
                    "added": [[c.path, c.bytes, c.what] for c in delta.added],
                    "removed": [[c.path, c.bytes, c.what] for c in delta.removed],
                    "modified": [[c.path, c.bytes, c.what] for c in delta.modified],
                }
            _send(conn, header)
        elif op == "walk":
            entries = w.walked(bool(req.get("excluded")))
            _send(conn, header, _pack_entries(entries))
        else:
            _send(conn, {"ok": False, "why": f"unknown request {op!r}"})

    def _checks(self, state: "WarmState") -> list[list[object]]:
        """The root and a rotating sample of watched directories, with the
        mtime the watcher believes they have."""
        dirs = self.watcher.dir_times()
        if not dirs:
            return []
        n = len(dirs)
        picks = [dirs[0]] + [dirs[(self._rotor + i) % n] for i in range(min(_CHECKS, n))]
        self._rotor = (self._rotor + _CHECKS) % n
        return [[rel, m] for rel, m in picks]


def _pack_entries(entries: list[Entry]) -> bytes:
    # path NUL kind NUL rule-index NUL included NUL link NUL, per entry.
    parts: list[str] = []
    for e in entries:
        parts.extend((e.path, e.kind, str(e.rule.index) if e.rule is not None else "", "1" if e.included else "",
                      e.link or "", "1" if e.forced else ""))
    return "\0".join(parts).encode("utf-8", "surrogateescape")


def _unpack_entries(ctx: BuildContext, payload: bytes) -> list[Entry]:
    if not payload:
        return []
    rules = ctx.matcher.rules
    f = payload.decode("utf-8", "surrogateescape").split("\0")
    out = []
    for i in range(0, len(f), 6):
        path, kind, rule, inc, link, forced = f[i:i + 6]
        out.append(Entry(path, kind, None, link or None, rules[int(rule)] if rule else None, bool(inc), bool(forced)))
    return out


# -- the client ------------------------------------------------------------------------
def _enabled() -> bool:
    return os.environ.get("CTXPACK_WATCH", "1") not in ("0", "no", "false")


def _timeout() -> float:
    try:
        return float(os.environ.get("CTXPACK_WATCH_TIMEOUT", "5"))
    except ValueError:
        return 5.0


def _ask(ctx: BuildContext, request: dict[str, object]) -> tuple[dict[str, object], bytes] | None:
    """One request to the context's watcher; ``None`` whenever the answer
    cannot be trusted (see the module docstring)."""
    if not _enabled() or ctx.dockerfile_stdin:
        return None
    path = socket_path(ctx.root)
    if not os.path.exists(path):
        return None
    timeout = _timeout()
    request["shape"] = shape_key(ctx)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(request).encode() + b"\n")
            with s.makefile("rb") as f:
                header, payload = _recv(f, time.monotonic() + timeout)
    except (OSError, ValueError, ConnectionError):
        return None  # dead (refused), lagging (timeout) or confused: walk instead
    if not header.get("ok") or header.get("protocol") != PROTOCOL:
        return None
    checks = header.get("checks", [])
    assert isinstance(checks, list)
    for rel, mtime in checks:
        try:
            if os.lstat(os.path.join(ctx.root, rel) if rel else ctx.root).st_mtime_ns != mtime:
                return None
        except OSError:
            return None
    return header, payload


def warm_fingerprint(ctx: BuildContext) -> "Fingerprint | None":
    """The context's fingerprint from a running watcher, or ``None``."""
    got = _ask(ctx, {"op": "fingerprint"})
    if got is None:
        return None
    from ctxpack.index.snapshots import Fingerprint

    d = got[0]["fingerprint"]
    assert isinstance(d, dict)
    fp = Fingerprint(str(d["fingerprint"]), int(d["entries"]), int(d["files"]), int(d["bytes"]),
                     int(d["hashed"]), int(d["hashed_bytes"]))
    notes = got[0].get("notes", [])
    fp.notes = [str(n) for n in notes] if isinstance(notes, list) else []
    return fp


class NoSnapshot:
    """``warm_diff``'s answer when the watcher found no snapshot."""


def warm_diff(ctx: BuildContext) -> "Delta | NoSnapshot | None":
    """What ``diff`` would say, from a running watcher; ``None``: ask the index."""
    got = _ask(ctx, {"op": "diff"})
    if got is None:
        return None
    from ctxpack.index.snapshots import Change, Delta

    d = got[0]["delta"]
    if d is None:
        return NoSnapshot()
    assert isinstance(d, dict)

    def changes(key: str) -> list[Change]:
        return [Change(p, b, w) for p, b, w in d[key]]

    return Delta(d["since"], changes("added"), changes("removed"), changes("modified"), d["fingerprint"], d["previous"])


def warm_walk(ctx: BuildContext, *, excluded: bool = False) -> list[Entry] | None:
    """:func:`ctxpack.walker.walk_all` from a running watcher (entries
    without stat: enough for listings), or ``None``."""
    got = _ask(ctx, {"op": "walk", "excluded": excluded})
    if got is None:
        return None
    return _unpack_entries(ctx, got[1])


@contextlib.contextmanager
def serving(watcher: "Watcher", root: str) -> Iterator[Server]:
    """Run a :class:`Server` for ``watcher`` while the block runs."""
    server = Server(watcher, root)
    try:
        yield server
    finally:
        server.close()
