"""Sharing a running watcher's warm state with other ctxpack commands.

Choice: a unix socket, not a state file.  A state file can only say what
the watcher knew when it last wrote it: a write made since, still in the
inotify queue or inside the quiet period, would be missed, and a client
cannot tell.  Over the socket a client's request is a barrier: the watcher
makes a name in a private watched directory, and because one inotify
instance queues events in order, once that event is read every change made
before the request has been read too; the watcher applies them at once
(no quiet period) and answers.  No barrier is needed when nothing is on
its way (:meth:`ctxpack.watch.source.InotifySource.drained`: the kernel's
queue empty, the reader waiting in its poll) and nothing is left to apply.
Measured on the 100k-file tree: see bench/results/watch.md.

Two kinds of request: a JSON line (:mod:`ctxpack.watch.client`: answers
as data), or a fast one (``F<length>``, :mod:`ctxpack.watchlink`: the
console script's, answered with the exact text the command prints).

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
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ctxpack import fs
from ctxpack.context import BuildContext
from ctxpack.errors import CtxpackError, WatchError
from ctxpack.index.store import Index
from ctxpack.watch.client import (
    PROTOCOL, NoSnapshot, Spec, _delta_of, _fingerprint_of, context_inputs, pack_entries, recv, send, shape,
    shape_key, socket_path, warm_diff, warm_fingerprint, warm_walk,
)
from ctxpack.watchlink import FAST, pack_fields, spec_of_fields, unpack_fields

if TYPE_CHECKING:
    from ctxpack.index.snapshots import Delta, Fingerprint
    from ctxpack.watch.watcher import WarmState, Watcher

__all__ = ["socket_path", "Server", "Inputs", "serving", "warm_fingerprint", "warm_diff", "warm_walk", "shape",
           "shape_key", "NoSnapshot"]

IDLE = 0.5  # seconds without events after which the fingerprint is made ahead of clients
_CHECKS = 64  # directories whose mtime a client verifies per answer


class Inputs:
    """What lets a watcher answer clients that have not opened the context
    (:func:`ctxpack.watch.client.quick_diff`): the options it was started
    with (:func:`ctxpack.watch.client.spec`) and, for each context it
    opened, the stat keys its Dockerfile and ignore files had just before.
    Wrap the watcher's opener with :meth:`opening`."""

    def __init__(self, s: Spec):
        self.spec = s
        self._opened: list[tuple[BuildContext, list[list[object]]]] = []
        self._lock = threading.Lock()

    def opening(self, open_it: Callable[[], BuildContext]) -> BuildContext:
        """``open_it()``, remembering the inputs' stat keys from before it."""
        before = context_inputs(self.spec)
        ctx = open_it()
        with self._lock:
            self._opened = (self._opened + [(ctx, before)])[-4:]  # the watcher may open one it then drops
        return ctx

    def of(self, ctx: BuildContext) -> list[list[object]] | None:
        """The inputs recorded when ``ctx`` was opened (``None``: not by :meth:`opening`)."""
        with self._lock:
            for c, inputs in self._opened:
                if c is ctx:
                    return inputs
        return None


def _answered(fp: Fingerprint) -> dict[str, object]:
    """``fp`` as the answer to one client's fingerprint: ``hashed`` and
    ``hashed_bytes`` count the files the command that asked read to answer,
    and it read none.  The watcher's own count (the files it hashed when it
    made this generation's fingerprint) would repeat on every query of the
    generation, and differ from the same command without a watcher, which
    finds those digests in the index the watcher wrote (trial S21-4)."""
    return fp.to_json() | {"hashed": 0, "hashed_bytes": 0}


class Server:
    """Answers clients for one :class:`Watcher` on its socket (one thread,
    requests one at a time: each is a few milliseconds).  Holds a lock file
    so that two watchers of one context refuse each other."""

    def __init__(self, watcher: "Watcher", root: str, *, timeout: float = 5.0, inputs: Inputs | None = None):
        self.watcher = watcher
        self.inputs = inputs
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
        self._walks: dict[bool, tuple[int, bytes]] = {}  # the listing, once per generation
        self._snap: tuple[object, list[tuple[str, str, int, int, str]], dict[str, int]] | None = None
        # Per command and output options: the last fast answer's bytes, and what they were made from.
        self._made: dict[tuple[str, tuple[str, ...]], tuple[object, object, object, int, bytes]] = {}
        self._thread = threading.Thread(target=self._run, name="ctxpack-watch-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering; remove the socket and the lock file."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept() now, not after its 0.5 s timeout
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
                    except Exception as e:  # noqa: BLE001 - a bug of ours must not end the serving thread:
                        # a listening socket nobody accepts on would make every client wait its timeout.
                        # This client gets no answer (it runs the command itself); say what happened.
                        self.watcher.on_note(f"error answering a client ({type(e).__name__}: {e}); it walks itself")
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
                added.append(Change.of(p, kind, size))
                continue
            _, k0, m0, _, v0 = then[j]
            if k0 != kind:
                modified.append(Change.of(p, kind, size, "type"))
            elif v0 != value:
                modified.append(Change.of(p, kind, size, "link" if kind == "l" else "content"))
            elif m0 != mode:
                modified.append(Change.of(p, kind, size, "mode"))
        removed = [Change.of(p, k, sz) for p, k, _, sz, _ in then if p not in now]
        fp = self._fp[1].fingerprint if self._fp is not None and self._fp[0] == state.generation else ""
        return state.generation, Delta(head.when, added, removed, modified, fp, head.fingerprint)  # type: ignore[attr-defined]

    @staticmethod
    def _same_user(conn: socket.socket) -> bool:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        return bool(uid == os.getuid())

    def _answer(self, conn: socket.socket, index: Index) -> None:
        with conn.makefile("rb") as f:
            line = f.readline()
            if line.startswith(b"F"):  # the console script's fast path (ctxpack.watchlink)
                n = int(line[1:])
                body = f.read(n)
                if len(body) != n:
                    raise ConnectionError("short request")
                self._answer_fast(conn, body, index)
                return
            req, _ = recv(f, line)
        op = req.get("op")
        state = self.watcher.sync(self.timeout)
        w = self.watcher
        if state is None:
            send(conn, {"ok": False, "why": w.problem or "the watcher is not ready"})
            return
        header: dict[str, object] = {
            "ok": True, "protocol": PROTOCOL, "pid": os.getpid(), "generation": state.generation,
            "checks": self._checks(state),
        }
        if "spec" in req:  # a client that has not opened the context
            why = self._quick(req, state.ctx, header)
            if why is not None:
                send(conn, {"ok": False, "why": why})
                return
        elif req.get("shape") != shape_key(state.ctx):
            send(conn, {"ok": False, "why": "the watcher watches with other options"})
            return
        if op == "fingerprint":
            fp = self.fingerprint(index)
            if fp is None:
                send(conn, {"ok": False, "why": w.problem or "changed meanwhile"})
                return
            header["fingerprint"] = _answered(fp)
            header["notes"] = fp.notes
            send(conn, header)
        elif op == "diff":
            ok, delta = self.delta(index, state.ctx)
            if not ok:
                send(conn, {"ok": False, "why": w.problem or "changed meanwhile"})
                return
            header["delta"] = _delta_header(delta)
            send(conn, header)
        elif op == "walk":
            excluded = bool(req.get("excluded"))
            cached = self._walks.get(excluded)
            if cached is not None and cached[0] == state.generation:
                payload = cached[1]
            else:
                payload = pack_entries(w.walked(excluded))
                if w.generation == state.generation:  # nothing applied meanwhile: it is that generation's
                    self._walks[excluded] = (state.generation, payload)
            send(conn, header, payload)
        else:
            send(conn, {"ok": False, "why": f"unknown request {op!r}"})

    def _answer_fast(self, conn: socket.socket, body: bytes, index: Index) -> None:
        """A fast request (:func:`ctxpack.watchlink.ask_fast`): what the
        command prints, rendered by :mod:`ctxpack.printing` from the same
        answer a JSON client would be sent, so that the text is the one the
        command prints with this watcher (:func:`ctxpack.cli.warm.quick`)."""
        def no(why: str) -> None:
            reply = pack_fields(["no", why])
            conn.sendall(b"%d\n" % len(reply) + reply)

        try:
            fields = unpack_fields(body)
            if len(fields) < 4 or fields[0] != FAST or fields[1] != str(PROTOCOL):
                no("another protocol")
                return
            command, n = fields[2], int(fields[3])
            flags, rest = set(fields[4:4 + n]), fields[4 + n:]
            cwd, s = rest[0], spec_of_fields(rest[1:])
        except (ValueError, IndexError):
            no("not a request")
            return
        if command not in _FAST_FLAGS or not flags <= _FAST_FLAGS[command]:
            no(f"no fast answer for {command} {sorted(flags)}")
            return
        state = self.watcher.sync(self.timeout)
        if state is None:
            no(self.watcher.problem or "the watcher is not ready")
            return
        header: dict[str, object] = {"checks": self._checks(state)}
        why = self._quick({"spec": s, "cwd": cwd}, state.ctx, header)
        if why is not None:
            no(why)
            return
        notes, warnings, inputs = header["ctx_notes"], header["ctx_warnings"], header["inputs"]
        if command == "fingerprint":
            answer: object = self.fingerprint(index)
            if answer is None:
                no(self.watcher.problem or "changed meanwhile")
                return
        else:
            ok, answer = self.delta(index, state.ctx)
            if not ok or answer is None:  # no snapshot: the command says so, with its hints
                no(self.watcher.problem or ("changed meanwhile" if not ok else "no snapshot"))
                return
        # The same answer to the same question (one generation, one snapshot): the bytes made
        # for the last one, so that an answer is the barrier, the checks and a send.
        question = (command, tuple(sorted(flags)))
        made = self._made.get(question)
        if made is not None and made[0] == (notes, warnings) and made[1] is answer and made[2] is inputs:
            code, tail = made[3], made[4]
        else:
            code, tail = self._render(flags, answer, notes, warnings, inputs)  # type: ignore[arg-type]
            self._made[question] = ((notes, warnings), answer, inputs, code, tail)
        checks = header["checks"]
        assert isinstance(checks, list)
        reply = pack_fields(["ok", str(PROTOCOL), str(code), "\0".join(f"{rel}\0{mtime}" for rel, mtime in checks)]) + tail
        conn.sendall(b"%d\n" % len(reply) + reply)

    @staticmethod
    def _render(flags: set[str], answer: "Fingerprint | Delta", notes: list[str], warnings: list[str],
                inputs: list[list[object]]) -> tuple[int, bytes]:
        """The exit code and the fields after the checks of a fast answer:
        the inputs' stat keys, then what the command prints, rendered by
        :mod:`ctxpack.printing` from the same answer a JSON client gets."""
        from ctxpack.index.results import Delta
        from ctxpack.printing import diff_chunks, diff_exit_code, fingerprint_chunks, notes_chunks

        as_json = "--json" in flags
        chunks = notes_chunks(notes, warnings)
        header: dict[str, object] = {}
        if not isinstance(answer, Delta):
            header.update(fingerprint=_answered(answer), notes=answer.notes)
            chunks += fingerprint_chunks(_fingerprint_of(header), as_json)
            code = 0
        else:
            header["delta"] = _delta_header(answer)
            delta = _delta_of(header)
            assert not isinstance(delta, NoSnapshot)
            chunks += diff_chunks(delta, as_json)
            code = diff_exit_code(delta, "--exit-code" in flags)
        out = ["\0".join(f"{path}\0{'' if key is None else ','.join(str(k) for k in key)}"  # type: ignore[attr-defined]
                          for path, key in inputs)]
        for stream, text in chunks:
            out.extend((str(stream), text))
        return code, pack_fields(out)

    def _quick(self, req: dict[str, object], ctx: BuildContext, header: dict[str, object]) -> str | None:
        """Add what a client without a context needs to ``header``; or why not."""
        from ctxpack.explainer import source_warnings

        recorded = self.inputs.of(ctx) if self.inputs is not None else None
        if self.inputs is None or recorded is None or req.get("spec") != self.inputs.spec:
            return "the watcher watches with other options"
        notes, warnings = list(ctx.notes), source_warnings(ctx)
        if (notes or warnings) and req.get("cwd") != os.getcwd():
            return "the context's notes name paths relative to the watcher's directory"
        header.update(inputs=recorded, ctx_notes=notes, ctx_warnings=warnings)
        return None

    def _checks(self, state: "WarmState") -> list[list[object]]:
        """The root and a rotating sample of watched directories, with the
        mtime the watcher believes they have."""
        picks, n = self.watcher.dir_sample(self._rotor, _CHECKS)
        self._rotor = (self._rotor + _CHECKS) % n if n else 0
        return [[rel, m] for rel, m in picks]


#: The output options a fast request may carry, per command (what the
#: console script's fast path passes on; anything else it leaves to click).
_FAST_FLAGS = {"diff": {"--json", "--exit-code"}, "fingerprint": {"--json"}}


def _delta_header(delta: "Delta | None") -> dict[str, object] | None:
    """A delta as the JSON answer carries it (``None``: no snapshot)."""
    if delta is None:
        return None
    return {
        "since": delta.since, "fingerprint": delta.fingerprint, "previous": delta.previous,
        "added": [[c.path, c.bytes, c.what, c.kind] for c in delta.added],
        "removed": [[c.path, c.bytes, c.what, c.kind] for c in delta.removed],
        "modified": [[c.path, c.bytes, c.what, c.kind] for c in delta.modified],
    }


@contextlib.contextmanager
def serving(watcher: "Watcher", root: str, *, inputs: Inputs | None = None) -> Iterator[Server]:
    """Run a :class:`Server` for ``watcher`` while the block runs."""
    server = Server(watcher, root, inputs=inputs)
    try:
        yield server
    finally:
        server.close()
