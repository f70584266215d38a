"""The watch loop: events in, settled deltas out, warm state always current.

Threads: the event source's reader queues raw events (:meth:`Watcher._sink`);
the loop (:meth:`Watcher.run`, the caller's thread) is the only one that
changes the model; clients (the socket server's threads) call
:meth:`Watcher.sync`, which waits until every change made before the call
has been applied.

Coalescing.  A burst settles when no event has come for a *quiet period*
that grows with the burst: ``min(QUIET_MAX, QUIET_MIN + burst/2)``, i.e.
20 ms after a single save (an editor's write-rename-chmod sequence lands
within a few ms), 120 ms 0.2 s into a ``git checkout``, and at most 300 ms
(a burst goes on across settles while events keep coming less than
``BURST_GAP``, 300 ms, apart: saves a second apart are each a lone save, and
pay 20 ms each, not the 300 ms a one-second rule gave the second one);
a burst that never pauses is cut every ``CAP`` (5 s) so the output keeps
moving.  Git writes in phases (objects, the index, refs, logs) with pauses
longer than a lone save's quiet period between them: while the context's
repository holds ``index.lock`` (git takes it for a commit, checkout,
merge, rebase, stash, add), a settle that is due waits, re-checked every
``QUIET_MIN``, so one ``git commit -am`` or branch switch is one delta (one
build under ``watch --build``, not four started and cancelled).  A new directory is read when it appears, so most of a checkout
arrives through a few listings rather than one event per file.  Tilt's fixed 200 ms, compose's 500 ms and Skaffold's
1 s all add their delay to every single edit; here a lone edit pays 20 ms,
and a client never waits for the quiet period at all: :meth:`sync` forces
the settle (a barrier through the same inotify queue, so nothing written
before the request can be missed).

Never silently stale: a queue overflow, a watch the kernel dropped while
its directory still exists, or an unmounted file system cause a rescan; a
hit inotify limit switches to polling rescans and says which sysctl to
raise; while any of this is pending, or a path is unreadable, the warm
state is refused and clients walk themselves.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ctxpack.audit import format_size
from ctxpack.context import BuildContext
from ctxpack.errors import ContextRemovedError, CtxpackError, WatchLimitError
from ctxpack import fs
from ctxpack.index.digest import hash_file, stat_key
from ctxpack.index.snapshots import Delta, Fingerprint, diff, fingerprint
from ctxpack.index.store import Index
from ctxpack.walker import Entry, EntryKind, entries_for_builder
from ctxpack.watch.channel import shape
from ctxpack.watch.model import ContextModel
from ctxpack.watch.source import (
    IN_CREATE, IN_DELETE_SELF, IN_MOVE_SELF, IN_Q_OVERFLOW, IN_UNMOUNT, LOST, EventSource, InotifySource, RawEvent,
)

__all__ = ["Watcher", "Settled", "WarmState", "QUIET_MIN", "QUIET_MAX", "BURST_GAP", "CAP", "burst_start", "git_lock"]

QUIET_MIN = 0.02
QUIET_MAX = 0.3
BURST_GAP = QUIET_MAX  # a pause longer than this ends a burst
CAP = 5.0
POLL = 2.0  # rescan period while an inotify limit keeps us from watching


def quiet_period(burst: float) -> float:
    """How long to wait for more events, ``burst`` seconds into a burst."""
    return min(QUIET_MAX, QUIET_MIN + burst / 2)


def git_lock(root: str) -> str | None:
    """The ``index.lock`` of the git repository ``root`` is in (found
    upwards, a ``.git`` file of a worktree or submodule followed), or
    ``None`` outside one."""
    d = os.path.abspath(root)
    while True:
        dot = os.path.join(d, ".git")
        if os.path.isdir(dot):
            return os.path.join(dot, "index.lock")
        if os.path.isfile(dot):
            try:
                with open(dot, encoding="utf-8", errors="surrogateescape") as fh:
                    line = fh.readline().strip()
            except OSError:
                return None
            if line.startswith("gitdir:"):
                return os.path.join(d, line[len("gitdir:"):].strip(), "index.lock")
            return None
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def burst_start(first: float, last: float, t: float) -> float:
    """When the burst of an event at ``t`` began, the previous event of the
    current burst (begun at ``first``) having come at ``last``: a pause of
    more than :data:`BURST_GAP` starts a new one."""
    return t if t - last > BURST_GAP else first


#: The JSON names of the record kinds.
KIND_NAMES = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "c": "char", "b": "block"}


@dataclass
class Settled:
    """One settled delta: what changed in the context since the last one.

    ``added``/``removed``/``modified`` hold every changed entry, directories
    included (``kinds``: path -> ``f``/``d``/``l``/``p``/``c``/``b``);
    ``bytes`` counts regular files only.  ``meta``: (path, what) of the
    files that decide the build without being entries of it — the
    Dockerfile, the ignore file in use — edited, created or removed."""

    generation: int
    added: list[tuple[str, int]]
    removed: list[tuple[str, int]]
    modified: list[tuple[str, int, str]]
    bytes: int
    events: int
    elapsed: float
    rescan: str | None = None
    instructions: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    meta: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Some entry of the context changed."""
        return bool(self.added or self.removed or self.modified)

    @property
    def rebuild(self) -> bool:
        """A build of the context would differ: an entry or the Dockerfile / rules changed."""
        return self.changed or bool(self.meta)

    def counts(self, dirs: bool) -> tuple[int, int, int]:
        """(added, modified, removed) of the directories (``dirs``) or of everything else."""
        def n(items: list[Any]) -> int:
            return sum(1 for it in items if (self.kinds.get(it[0]) == "d") == dirs)
        return n(self.added), n(self.modified), n(self.removed)

    def meta_text(self) -> str:
        return ", ".join(f"{p} {w}" for p, w in self.meta)

    def summary(self) -> str:
        """``+3 ~2 -1 files (+12 kB)``, then ``; +1 ~0 -0 dir`` when
        directories changed and the Dockerfile / ignore file edits (unless
        the rescan reason names them)."""
        parts = []
        if self.changed or not self.meta:
            sign = "+" if self.bytes >= 0 else "-"
            a, m, r = self.counts(False)
            parts.append(f"+{a} ~{m} -{r} files ({sign}{format_size(abs(self.bytes))})")
            a, m, r = self.counts(True)
            if a or m or r:
                parts.append(f"+{a} ~{m} -{r} dir{'' if a + m + r == 1 else 's'}")
        if self.meta and self.rescan != self.meta_text():
            parts.append(self.meta_text())
        return "; ".join(parts)

    def to_json(self) -> dict[str, object]:
        def item(p: str, b: int) -> dict[str, object]:
            kind = self.kinds.get(p, "f")
            return {"path": p, "kind": KIND_NAMES.get(kind, kind), "bytes": 0 if kind == "d" else b}

        files, dirs = self.counts(False), self.counts(True)
        return {
            "generation": self.generation, "bytes": self.bytes,
            "files": {"added": files[0], "modified": files[1], "removed": files[2]},
            "dirs": {"added": dirs[0], "modified": dirs[1], "removed": dirs[2]},
            "added": [item(p, b) for p, b in self.added],
            "removed": [item(p, b) for p, b in self.removed],
            "modified": [item(p, b) | {"change": w} for p, b, w in self.modified],
            "meta": [{"path": p, "change": w} for p, w in self.meta],
            "events": self.events, "elapsed": round(self.elapsed, 4), "rescan": self.rescan,
            "instructions": self.instructions,
        }


@dataclass(frozen=True)
class WarmState:
    """Which state an answer describes: the context as of ``generation``."""

    generation: int
    ctx: BuildContext


# A delta record: (kind letter, mode bits, size, digest / link target / "").
_Rec = tuple[str, int, int, str]
_KIND = {
    EntryKind.FILE: "f", EntryKind.HARDLINK: "f", EntryKind.DIR: "d", EntryKind.SYMLINK: "l",
    EntryKind.FIFO: "p", EntryKind.CHAR: "c", EntryKind.BLOCK: "b",
}


class Watcher:
    """Watch one context.  ``opener`` (re)opens it — called again whenever
    the ignore file or the Dockerfile changes (``extra_paths``: more such
    files, e.g. an ``--ignore-file``).  ``on_delta`` gets every settled
    delta, ``on_note`` warnings (limits, rescans, errors)."""

    def __init__(self, opener: Callable[[], BuildContext], *, source: EventSource | None = None,
                 index_dir: str | None = None, on_delta: Callable[[Settled], None] | None = None,
                 on_note: Callable[[str], None] | None = None, extra_paths: tuple[str, ...] = ()):
        self._opener = opener
        self._extra_paths = tuple(os.path.abspath(p) for p in extra_paths)
        self._source_arg = source
        self.index_dir = index_dir
        self.on_delta = on_delta or (lambda s: None)
        self.on_note = on_note or (lambda s: None)
        self._queue: deque[tuple[float, RawEvent]] = deque()
        self._cv = threading.Condition()
        self._lock = threading.RLock()  # held while the model changes
        self._stop = threading.Event()
        self.generation = 0
        self.problem: str | None = "starting"  # why the warm state cannot be trusted now
        self._barrier_seq = 0
        self._barrier_done = 0
        self._barrier_handle = -1
        self._dir_keys: tuple[object, list[str]] = ((), [])  # dir_sample's key list and its stamp
        # True while every event delivered so far is applied (the loop idle, nothing pending, no
        # rescan due): then a barrier needs no loop round (:meth:`_sink`).  Under ``_cv``.
        self._applied = False
        self._meta_handles: dict[int, str] = {}
        self._meta_names: dict[str, set[str]] = {}
        self._recs: dict[str, _Rec] = {}
        self._keys: dict[str, tuple[int, int, int, int, int]] = {}
        self._seed_fp: tuple[int, Fingerprint] | None = None
        self.settled_at = time.monotonic()
        self.rescans = 0
        self._broken = False
        self._dockerfile_text: bytes | None = None
        self._reopen_asked: str | None = None
        self._git_lock: str | None = None
        self.ready = threading.Event()
        self.failed: BaseException | None = None

    # -- life cycle ----------------------------------------------------------------------
    def _start(self) -> None:
        """Open the context, place the watches, read everything once."""
        self.source: EventSource = self._source_arg if self._source_arg is not None else InotifySource()
        _sweep_barriers()
        self._barrier_dir = tempfile.mkdtemp(prefix=f"ctxpack-barrier-{os.getpid()}-")
        self.source.start(self._sink)
        self._barrier_anchor = os.path.join(self._barrier_dir, "anchor")
        os.close(os.open(self._barrier_anchor, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        self._barrier_handle = self.source.add(self._barrier_dir)
        self.index = Index(self.index_dir)
        self.ctx = self._opener()
        self._git_lock = git_lock(self.ctx.root)
        self._dockerfile_text = _dockerfile_text(self.ctx)
        self.model = self._new_model(self.ctx)
        self._publish(self._settle_state(0, time.monotonic(), "initial scan"))

    def close(self) -> None:
        """Remove every watch and the barrier directory (the index closes with run)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        src = getattr(self, "source", None)
        if src is not None:
            src.close()
        bd = getattr(self, "_barrier_dir", None)
        if bd:
            shutil.rmtree(bd, ignore_errors=True)
        with self._cv:
            self._barrier_done = self._barrier_seq = max(self._barrier_seq, self._barrier_done)
            self._cv.notify_all()

    def stop(self) -> None:
        """Make :meth:`run` return (from any thread, or a signal handler)."""
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    def reopen(self, why: str) -> None:
        """Open the context again and rescan (from any thread): the opener's
        answer changed for a reason only the caller knows (``why``, said as
        the rescan's reason)."""
        with self._cv:
            self._reopen_asked = why
            self._cv.notify_all()

    @property
    def first(self) -> Fingerprint | None:
        """The fingerprint of the first scan (for a start-up line)."""
        return self._seed_fp[1] if self._seed_fp is not None else None

    @property
    def watches(self) -> int:
        """Watches on context directories (not counting the private barrier)."""
        return sum(1 for d in self.model.dirs.values() if d.handle is not None) + len(self._meta_handles)

    # -- events in ---------------------------------------------------------------------------
    def _sink(self, ev: RawEvent) -> None:
        barrier = ev.handle == self._barrier_handle and ev.handle != -1
        if barrier and not (ev.mask & IN_CREATE and ev.name.isdigit()):
            return  # the barrier's unlink, the anchor's link count: nothing for the loop (it skips them)
        with self._cv:
            if barrier and self._applied and not self._queue and self._reopen_asked is None:
                # A barrier with nothing before it left to apply (no event queued or pending, no
                # batch being applied): it is answered here, on the reader's thread, without
                # waking the loop for it (one thread switch less in every client's answer).
                self._barrier_done = max(self._barrier_done, int(ev.name))
                self._cv.notify_all()
                return
            self._queue.append((time.monotonic(), ev))
            self._cv.notify_all()

    def _new_model(self, ctx: BuildContext) -> ContextModel:
        model = ContextModel(ctx, self.source.add, self.source.remove)
        model.scan()
        self._watch_meta(ctx, model)
        if model.limit is not None:
            self.on_note(f"{model.limit}; polling every {POLL:g} s until then")
        return model

    def _watch_meta(self, ctx: BuildContext, model: ContextModel) -> None:
        """Watch the places of the files that decide the context's shape:
        the ignore files that may apply, and the Dockerfile."""
        names: dict[str, set[str]] = {}

        def add(path: str | None) -> None:
            if path:
                d, n = os.path.split(os.path.abspath(path))
                names.setdefault(d, set()).add(n)

        add(os.path.join(ctx.root, ".dockerignore"))
        add(os.path.join(ctx.root, "Dockerfile"))
        add(os.path.join(ctx.root, "dockerfile"))
        if ctx.dockerfile_path:
            add(ctx.dockerfile_path)
            add(ctx.dockerfile_path + ".dockerignore")
        for extra in self._extra_paths:
            add(extra)
        old = self._meta_handles
        self._meta_handles = {}
        self._meta_names = names
        inside = {os.path.join(ctx.root, r) if r else ctx.root for r, d in model.dirs.items() if d.handle is not None}
        for d in names:
            if d in inside:
                continue
            try:
                h = self.source.add(d)
            except (OSError, WatchLimitError):
                continue
            self._meta_handles[h] = d
        for h in old:
            if h not in self._meta_handles and h not in model.handles:
                self.source.remove(h)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Scan, then process events until :meth:`stop` (in one thread: the
        index's SQLite connection belongs to it).  ``ready`` is set once the
        initial scan is done; an error there, or one that ends the loop
        (:class:`~ctxpack.errors.ContextRemovedError`), is raised (and kept
        in ``failed``)."""
        try:
            self._start()
        except BaseException as e:
            self.failed = e
            self.ready.set()
            raise
        self.ready.set()
        try:
            self._loop()
        except BaseException as e:  # the context directory removed: kept for the caller too
            self.failed = e
            raise
        finally:
            self.index.close()

    def _loop(self) -> None:
        # first: when the current burst began (a burst goes on across settles
        # while events keep coming within a second); since: when the oldest
        # pending event came (for the cap); last: the newest event.
        first = last = since = 0.0
        hold = 0.0  # a due settle waits until then: git holds index.lock (see the module docstring)
        pending: list[RawEvent] = []
        next_poll = time.monotonic() + POLL
        while not self._stop.is_set():
            with self._cv:
                # Idle: nothing pending and no polling rescans (an inotify limit: the barrier
                # says nothing about the unwatched directories then; let the loop answer it).
                self._applied = not pending and self.model.limit is None
                if not self._queue and self._reopen_asked is None:
                    timeout = None
                    if pending:
                        settle_at = max(last + quiet_period(last - first), hold)
                        timeout = max(0.0, min(settle_at, since + CAP) - time.monotonic())
                    wake = []
                    if self.model.limit is not None:
                        wake.append(next_poll)
                    if wake:
                        t = max(0.0, min(wake) - time.monotonic())
                        timeout = t if timeout is None else min(timeout, t)
                    self._cv.wait(timeout)
                batch = list(self._queue)
                self._queue.clear()
                asked_reopen, self._reopen_asked = self._reopen_asked, None
                barrier = self._barrier_seq
                self._applied = False  # this batch is being applied
            if self._stop.is_set():
                break
            forced = False
            for t, ev in batch:
                if ev.handle == self._barrier_handle and ev.handle != -1:
                    if ev.mask & IN_CREATE and ev.name.isdigit():
                        forced = True
                    continue
                if not pending:
                    since = t
                    first = burst_start(first, last, t)
                last = t
                pending.append(ev)
            release = barrier if forced else 0  # the barriers answered after this round
            now = time.monotonic()
            polling = self.model.limit is not None and now >= next_poll
            due = pending and (now >= max(last + quiet_period(last - first), hold) or now >= since + CAP)
            if due and not forced and now < since + CAP and self._git_busy():
                hold, due = now + QUIET_MIN, False
            if (forced and pending) or due or polling or asked_reopen:
                with self._cv:
                    # A full rescan reads everything changed before it began,
                    # so it also answers the barriers asked for by then —
                    # whose own events an overflowing queue may have dropped.
                    asked = self._barrier_seq
                try:
                    why = asked_reopen or ("polling (inotify limit)" if polling else None)
                    if self._settle(pending, why, reopen=asked_reopen is not None):
                        release = max(release, asked)
                except ContextRemovedError:
                    raise  # nothing left to watch: run() ends with it
                except (CtxpackError, OSError) as e:
                    # A broken .dockerignore, a file that kept changing while
                    # hashed: refuse the warm state and start over with the
                    # next change.
                    with self._lock:
                        self.problem = str(e)
                        self._broken = True
                    self.on_note(f"error: {e}")
                pending = []
                hold = 0.0
                self.settled_at = time.monotonic()
                if polling:
                    next_poll = time.monotonic() + POLL
            if release:
                with self._cv:
                    self._barrier_done = max(self._barrier_done, release)
                    self._cv.notify_all()

    def sync(self, timeout: float = 5.0) -> WarmState | None:
        """Wait until every change made before this call is applied; the
        warm state then, or ``None`` when it cannot be trusted (or on
        timeout: a watcher that lags this much is no help)."""
        drained = getattr(self.source, "drained", None)
        if drained is not None and not self._stop.is_set() and drained():
            # Nothing on its way from the kernel (InotifySource.drained): when nothing queued
            # or pending is left to apply either, every change made before this call is in
            # the state now, and no barrier is needed.
            with self._cv:
                applied = self._applied and not self._queue and self._reopen_asked is None
            if applied:
                with self._lock:
                    return None if self.problem else WarmState(self.generation, self.ctx)
        with self._cv:
            self._barrier_seq += 1
            n = self._barrier_seq
        # A new name each time: the kernel merges identical consecutive events.
        p = os.path.join(self._barrier_dir, str(n))
        try:
            # A hard link to one file of the directory: no inode to allocate (on ext4 this is
            # 18 us; a new file's open/close/unlink 70 us, a symlink 100 us).
            os.link(self._barrier_anchor, p)
            os.unlink(p)
        except OSError:
            return None
        if getattr(self.source, "synthetic", False):
            self._sink(RawEvent(self._barrier_handle, str(n), IN_CREATE))
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._barrier_done < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cv.wait(left)
        with self._lock:
            if self.problem:
                return None
            return WarmState(self.generation, self.ctx)

    def walked(self, excluded: bool) -> list[Entry]:
        """:func:`~ctxpack.walker.walk_all` of the model now."""
        with self._lock:
            return self.model.walk_all(excluded=excluded)

    def entries(self) -> tuple[WarmState, list[Entry]] | None:
        """The entries a builder gets (``entries_for_builder``) as of now,
        with the state they belong to; ``None`` when they cannot be trusted."""
        with self._lock:
            if self.problem:
                return None
            st = WarmState(self.generation, self.ctx)
            return st, list(entries_for_builder(st.ctx, walked=self.model.walk_all()))

    def fingerprint(self, index: Index) -> tuple[WarmState, Fingerprint] | None:
        """The library's fingerprint of the context now (``index``: one the
        calling thread opened)."""
        got = self.entries()
        if got is None:
            return None
        seed = self._seed_fp
        if seed is not None and seed[0] == got[0].generation:
            return got[0], seed[1]
        return got[0], fingerprint(got[0].ctx, index, entries=got[1])

    def records(self) -> tuple[WarmState, dict[str, _Rec]] | None:
        """The fingerprint's records now — path -> (kind, mode, size,
        value), as the library makes them — when they are all the model's:
        ``None`` when the state cannot be trusted, or when the library adds
        entries of its own (a Dockerfile the rules exclude, or from outside
        the context, travels too)."""
        with self._lock:
            ctx = self.ctx
            if self.problem or ctx.dockerfile_data is not None:
                return None
            if ctx.dockerfile and ctx.dockerfile_path and self.model.current(ctx.dockerfile) is None:
                return None
            return WarmState(self.generation, ctx), dict(self._recs)

    def delta(self, index: Index) -> tuple[WarmState, Delta | None] | None:
        """What ``diff`` says now (``Delta | None``: no snapshot)."""
        got = self.entries()
        if got is None:
            return None
        return got[0], diff(got[0].ctx, index, entries=got[1])

    @property
    def idle(self) -> float:
        """Seconds since the last settle, when nothing is pending (else 0)."""
        with self._cv:
            if self._queue:
                return 0.0
        return max(0.0, time.monotonic() - self.settled_at)

    def _git_busy(self) -> bool:
        """Whether a git command is writing in the context's repository now
        (a lock older than ``CAP`` is one a killed git left: not a reason)."""
        if self._git_lock is None:
            return False
        try:
            return time.time() - os.lstat(self._git_lock).st_mtime < CAP
        except OSError:
            return False

    def dir_times(self) -> list[tuple[str, int]]:
        """Every watched directory with the mtime the model has seen."""
        with self._lock:
            return [(d.rel, d.mtime) for d in self.model.dirs.values() if d.handle is not None]

    def dir_sample(self, start: int, n: int) -> tuple[list[tuple[str, int]], int]:
        """The root and the ``n`` directories from ``start`` on in the
        model's order (round and round), the watched ones, with the mtime
        the model has seen; and how many directories there are to go
        round.  Cheaper than :meth:`dir_times` on a big tree (a list of the
        keys, then ``n`` lookups: 3,000 directories' records cost 1.3 ms
        per answer), for the clients' sample (:mod:`ctxpack.watch.channel`)."""
        with self._lock:
            dirs = self.model.dirs
            # The list of keys once per generation (it only chooses which directories are
            # looked at: the mtimes are read from the model each time).
            stamp = (self.generation, id(dirs), len(dirs))
            if self._dir_keys[0] != stamp:
                self._dir_keys = (stamp, list(dirs))
            keys = self._dir_keys[1]
            total = len(keys)
            if not total:
                return [], 0
            out = []
            for rel in [keys[0]] + [keys[(start + i) % total] for i in range(min(n, total))]:
                d = dirs.get(rel)
                if d is not None and d.handle is not None:
                    out.append((d.rel, d.mtime))
            return out, total

    # -- applying a batch ------------------------------------------------------------------------
    def _settle(self, events: list[RawEvent], rescan: str | None, reopen: bool = False) -> bool:
        """Apply a batch; True when it took a full rescan (``reopen``: open the context again first)."""
        started = time.monotonic()
        with self._lock:
            if not os.path.isdir(self.model.root):
                raise ContextRemovedError(f"{self.model.root}: the context directory was removed (deleted or moved away)")
            reason = rescan
            reopen = reopen or self._broken
            if self._broken:
                reason = "retrying after an error"
                self._broken = False
            symlinks = False
            dirty: dict[tuple[str, str], None] = {}
            lost: list[str] = []
            model = self.model
            for ev in events:
                h, name, mask = ev.handle, ev.name, ev.mask
                if mask & IN_Q_OVERFLOW:
                    reason = "the inotify queue overflowed (IN_Q_OVERFLOW)"
                    continue
                if mask & IN_UNMOUNT:
                    reason = "a file system was unmounted"
                    continue
                if mask & LOST:
                    forget = getattr(self.source, "forget", None)
                    if forget is not None:
                        forget(h)
                    rel = model.lost(h)
                    if rel is not None:
                        lost.append(rel)
                    elif h in self._meta_handles:
                        del self._meta_handles[h]
                        reopen = True
                    continue
                rel = model.handles.get(h)
                if rel is None:
                    d = self._meta_handles.get(h)
                    if d is not None and name in self._meta_names.get(d, ()):
                        reopen = True
                    continue
                absd = os.path.join(model.root, rel) if rel else model.root
                if not name:
                    if rel == "":
                        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
                            reason = "the context directory itself was moved or deleted"
                        continue
                    parent, _, base = rel.rpartition("/")
                    dirty[(parent, base)] = None
                    continue
                if name in self._meta_names.get(absd, ()):
                    reopen = True
                dirty[(rel, name)] = None
            ctx = self.ctx
            meta: list[tuple[str, str]] = []
            if reopen:
                ctx = self._opener()
                meta = _meta_changes(self.ctx, self._dockerfile_text, ctx, df := _dockerfile_text(ctx))
                self._dockerfile_text = df
                if shape(ctx) != shape(self.ctx) or ctx.analysis != self.ctx.analysis:
                    reason = reason or (", ".join(f"{p} {w}" for p, w in meta) or "the ignore file or the Dockerfile changed")
                else:
                    # The same rules: keep the model, but answer with the context just opened (its notes,
                    # and the inputs' stat keys it was opened with: clients check those against the disk).
                    self.ctx = ctx
            if reason is None:
                for rel in lost:
                    wd = model.dirs.get(rel)
                    if wd is None:
                        continue
                    try:
                        alive = os.lstat(os.path.join(model.root, rel)).st_ino == wd.ino
                    except OSError:
                        alive = False
                    if alive:  # dropped by the kernel, not deleted: read it again
                        self.on_note(f"the watch on {rel or '.'} was lost; re-reading it")
                        model.rescan_dir(rel)
                todo = []
                minimal = ctx.selection is not None
                for parent in {p for p, _ in dirty}:
                    model.touch(parent)
                for parent, name in dirty:
                    rel = parent + "/" + name if parent else name
                    if minimal and _is_link(model, rel):
                        symlinks = True
                    todo.extend(model.refresh(parent, name))
                    if minimal and _is_link(model, rel):
                        symlinks = True
                model.scan_new(todo)
                model.fix_links()
                if symlinks and shape(self._opener()) != shape(self.ctx):
                    reason = "a symlink a --minimal source goes through changed"
                    ctx = self._opener()
            if reason is not None:
                self.rescans += 1
                self._rescan(ctx)
            state = self._settle_state(len(events), started=started, rescan=reason)
            if state is not None:
                state.meta = meta
        self._publish(state)
        return reason is not None

    def _rescan(self, ctx: BuildContext) -> None:
        old = self.model
        self.model = self._new_model(ctx)
        self.ctx = ctx
        for h in list(old.handles):
            if h not in self.model.handles and h not in self._meta_handles:
                self.source.remove(h)

    def _settle_state(self, events: int, started: float, rescan: str | None = None) -> Settled | None:
        """The delta of this batch, from the paths it touched alone: only
        changed files are hashed, nothing else is looked at."""
        ctx, model = self.ctx, self.model
        touched = model.take_touched()
        self.generation += 1
        self.problem = str(model.limit) if model.limit is not None else (
            next(iter(model.errors.values())) if model.errors else None)
        if rescan == "initial scan":
            self._seed()
            return None
        if rescan is not None:
            touched |= set(self._recs) | set(model.entries) | {h for h in model.held if model.current(h)}
        old = self._records_for(touched)
        added, removed, modified = [], [], []
        delta_bytes = 0
        for p in sorted(old, key=fs.bytes_key):
            o, r = old[p], self._recs.get(p)
            if o == r:
                continue
            # Bytes: regular files only (a directory's size says nothing the build sends).
            if o is None:
                assert r is not None
                added.append((p, r[2]))
                delta_bytes += r[2] if r[0] == "f" else 0
            elif r is None:
                removed.append((p, o[2]))
                delta_bytes -= o[2] if o[0] == "f" else 0
            else:
                delta_bytes += (r[2] if r[0] == "f" else 0) - (o[2] if o[0] == "f" else 0)
                if o[0] != r[0]:
                    modified.append((p, r[2], "type"))
                elif o[3] != r[3]:
                    modified.append((p, r[2], "link" if r[0] == "l" else "content"))
                elif o[1] != r[1]:
                    modified.append((p, r[2], "mode"))
        kinds = {p: (self._recs.get(p) or old[p] or ("f",))[0] for p, *_ in added + removed + modified}
        st = Settled(self.generation, added, removed, modified, delta_bytes, events,
                     time.monotonic() - started, rescan, kinds=kinds)
        # With a whole-context fallback (COPY . .) too: what is sent is
        # everything, and which instructions read a path is still known.
        if ctx.analysis is not None and st.changed:
            st.instructions = _affected(ctx, [p for p, *_ in st.added + st.removed + st.modified])
        return st

    def _records_for(self, touched: set[str], old: dict[str, _Rec | None] | None = None) -> dict[str, _Rec | None]:
        """Re-record the touched paths (hashing a file only when its stat key
        changed); return what each was before."""
        old = {} if old is None else old
        model = self.model
        root = model.root
        for p in touched:
            old[p] = self._recs.get(p)
            e = model.current(p)
            rec = None
            if e is not None and e.stat is not None:
                s = e.stat
                kind = _KIND[e.kind]
                mode = s.st_mode & 0o7777
                if kind == "f":
                    key = stat_key(s)
                    prev = self._recs.get(p)
                    if prev is not None and prev[0] == "f" and self._keys.get(p) == key:
                        rec = (kind, mode, s.st_size, prev[3])
                    else:
                        d = hash_file(os.path.join(root, p), p)
                        if d is not None:  # None: vanished meanwhile (its event follows)
                            rec = (kind, d.key[4] & 0o7777, d.size, d.digest)
                            self._keys[p] = d.key
                elif kind == "l":
                    rec = (kind, mode, s.st_size, e.link or "")
                elif kind in "cb":
                    rec = (kind, mode, s.st_size, f"{os.major(s.st_rdev)},{os.minor(s.st_rdev)}")
                else:
                    rec = (kind, mode, s.st_size, "")
            if rec is None:
                self._recs.pop(p, None)
                self._keys.pop(p, None)
            else:
                self._recs[p] = rec
        return old

    def _seed(self) -> None:
        """Records of the first scan.  The library fingerprints the model's
        entries (digests from the index where stat keys prove them: a warm
        tree is not read again) and stores them as the context's state; the
        records are read back from there.  A file the state does not vouch
        for (or an index that cannot be read) is hashed here."""
        self._fingerprint()
        stored: dict[str, tuple[_Rec, tuple[int, ...]]] = {}
        try:
            from ctxpack.index.snapshots import _variant  # the state's key, as the library stores it
            from ctxpack.index.state import Columns

            for part in self.index.state_parts(self.ctx.root, _variant(self.ctx)):
                cols = Columns.decode(*part)
                for i, (p, k, m, size, v) in enumerate(cols.records()):
                    stored[p] = ((k, m, size, v), cols.key(i))
        except Exception:  # an index that cannot be read: hash instead (never wrong, only slower)
            stored = {}
        self._recs = {}
        self._keys = {}
        model = self.model
        for p in model.entries.keys() | {h for h in model.held if model.current(h) is not None}:
            e = model.current(p)
            hit = stored.get(p)
            if e is None or e.stat is None:
                continue
            if hit is not None and (_KIND[e.kind] != "f" or hit[1] == stat_key(e.stat)):
                self._recs[p] = hit[0]
                if hit[0][0] == "f":
                    self._keys[p] = stat_key(e.stat)
            else:
                model.touched.add(p)
        self._records_for(model.take_touched())  # what the state did not vouch for

    def _fingerprint(self) -> Fingerprint:
        """The library's fingerprint of the model now, kept for the first client."""
        ctx = self.ctx
        entries = list(entries_for_builder(ctx, walked=self.model.walk_all()))
        fp = fingerprint(ctx, self.index, entries=entries)
        self._seed_fp = (self.generation, fp)
        return fp

    def _publish(self, s: Settled | None) -> None:
        if s is None:
            return
        if s.rebuild:
            self.on_delta(s)
        elif s.rescan:  # a rescan that found nothing new: no zero delta line
            self.on_note(f"rescanned ({s.rescan}): nothing changed")


def _sweep_barriers() -> None:
    """Remove the barrier directories of watchers that died without
    cleaning up (killed with SIGKILL): their names carry the pid."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if len(parts) < 4 or parts[0] != "ctxpack" or parts[1] != "barrier" or not parts[2].isdigit():
            continue
        pid = int(parts[2])
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to judge)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            continue


def _dockerfile_text(ctx: BuildContext) -> bytes | None:
    """The Dockerfile's content now (``None``: none, or unreadable)."""
    try:
        return ctx.dockerfile_bytes()
    except (CtxpackError, OSError):
        return None


def _meta_changes(old: BuildContext, old_df: bytes | None, new: BuildContext,
                  new_df: bytes | None) -> list[tuple[str, str]]:
    """Which of the files that decide the build (not entries of it) changed
    between two openings: the Dockerfile's content, the ignore rules."""
    def name(path: str | None) -> str:
        if not path:
            return "the ignore file"
        rel = os.path.relpath(path, new.root)
        return path if rel.startswith("..") else rel

    out: list[tuple[str, str]] = []
    if old_df != new_df or old.dockerfile_path != new.dockerfile_path:
        what = "created" if old_df is None else "removed" if new_df is None else "edited"
        out.append((name(new.dockerfile_path or old.dockerfile_path), what))
    old_rules = tuple((r.source, r.line, r.text) for r in old.matcher.rules)
    new_rules = tuple((r.source, r.line, r.text) for r in new.matcher.rules)
    if old.ignore_source != new.ignore_source:
        if old.ignore_source and not new.ignore_source:
            out.append((name(old.ignore_source), "removed"))
        elif new.ignore_source and not old.ignore_source:
            out.append((name(new.ignore_source), "created"))
        else:
            out.append((name(new.ignore_source), f"in use instead of {name(old.ignore_source)}"))
    elif old_rules != new_rules:
        out.append((name(new.ignore_source), "edited"))
    return out


def _is_link(model: ContextModel, rel: str) -> bool:
    e = model.entries.get(rel)
    return e is not None and e.kind == "symlink"


def _affected(ctx: BuildContext, paths: list[str]) -> list[str]:
    """The Dockerfile instructions (``COPY src (line 4)``) that read any of ``paths``."""
    from ctxpack.dockerfile.analysis import Selection

    assert ctx.analysis is not None
    out: list[str] = []
    for src in ctx.analysis.readers:
        sel = None if src.pattern == "." else Selection([src.pattern])  # ".": the whole context
        if sel is None or any(sel.wants(p) for p in paths):
            label = f"{src.instruction} {src.pattern} (line {src.line}, stage {src.stage})"
            if label not in out:
                out.append(label)
    return out
