"""``ctxpack watch``: real file changes under a running watcher (inotify).

Every test checks the watcher's state against a fresh walk of the same tree
(``walk_all`` and ``fingerprint``), so "the deltas are right" and "warm
results equal cold ones" are the same assertion.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxpack.watch.source import watched_inodes

from ctxpack.context import open_context
from ctxpack.index.snapshots import _variant, fingerprint
from ctxpack.index.state import Columns
from ctxpack.index.store import Index
from ctxpack.walker import walk_all
from ctxpack.watch.source import IN_Q_OVERFLOW, LOST, InotifySource, RawEvent, ScriptedSource
from ctxpack.watch.watcher import BURST_GAP, CAP, Settled, Watcher, burst_start, git_lock, quiet_period

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="inotify tests need Linux")


def _view(entries: object) -> list[tuple[object, ...]]:
    return [(e.path, e.kind, e.link, str(e.rule), e.included, e.forced,  # type: ignore[attr-defined]
             None if e.stat is None else (e.stat.st_mode, e.stat.st_size))  # type: ignore[attr-defined]
            for e in entries]  # type: ignore[attr-defined]


class Running:
    """A watcher on its own thread, with the deltas it printed."""

    def __init__(self, root: Path, cache: Path, *, source: object = None, **opts: object):
        self.root = root
        self.opts = opts
        self.cache = cache
        self.deltas: list[Settled] = []
        self.notes: list[str] = []
        self.w = Watcher(self.open, source=source, index_dir=str(cache),  # type: ignore[arg-type]
                         on_delta=self.deltas.append, on_note=self.notes.append)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.w.ready.wait(30)
        assert self.w.failed is None, self.w.failed

    def _run(self) -> None:
        try:
            self.w.run()
        except Exception:
            pass  # run() keeps what ended it in .failed: the tests look there (not a stray thread traceback)

    def open(self):  # type: ignore[no-untyped-def]
        return open_context(self.root, **self.opts)  # type: ignore[arg-type]

    def sync(self):  # type: ignore[no-untyped-def]
        st = self.w.sync(10)
        assert st is not None, self.w.problem
        return st

    def check(self) -> None:
        """The warm state equals a fresh walk and a fresh fingerprint."""
        self.sync()
        ctx = self.open()
        with Index(str(self.cache)) as idx:
            got = self.w.fingerprint(idx)
        assert got is not None
        assert _view(self.w.walked(True)) == _view(walk_all(ctx, excluded=True))
        with Index(tempfile.mkdtemp(dir=self.cache)) as idx:  # a fresh index: a real walk, all records
            cold = fingerprint(ctx, idx)
            records = [r for part in idx.state_parts(ctx.root, _variant(ctx))
                       for r in Columns.decode(*part).records()]
        assert got[1].fingerprint == cold.fingerprint
        # The records the deltas are computed from agree with the library's.
        mine = {p: r for p, r in self.w._recs.items()}
        assert mine == {p: (k, m, s, v) for p, k, m, s, v in records if p in mine}
        assert set(mine) == {e.path for e in walk_all(ctx)}

    def last(self) -> Settled:
        self.sync()
        assert self.deltas
        return self.deltas[-1]

    def stop(self) -> None:
        self.w.stop()
        self.thread.join(10)
        self.w.close()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for d in ("src/pkg", "node_modules/left-pad/lib", "packages/a/node_modules/x", "packages/a/src", "logs"):
        (root / d).mkdir(parents=True)
    (root / ".dockerignore").write_text("**/node_modules\n*.log\nlogs\n!logs/keep.txt\n")
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\nCOPY packages /packages\n")
    (root / "src/main.py").write_text("print(1)\n")
    (root / "src/pkg/mod.py").write_text("x = 1\n")
    (root / "node_modules/left-pad/lib/index.js").write_text("module.exports = 1\n")
    (root / "packages/a/src/a.ts").write_text("export {}\n")
    (root / "logs/keep.txt").write_text("keep\n")
    (root / "logs/other.txt").write_text("other\n")
    return root


@pytest.fixture
def watching(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Running]:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    r = Running(tree, tmp_path / "cache")
    yield r
    r.stop()


# -- edits, creates, deletes, modes, symlinks --------------------------------------------------
def test_edit_create_delete_mode_symlink(watching: Running, tree: Path) -> None:
    watching.check()
    (tree / "src/main.py").write_text("print(2)\n")
    d = watching.last()
    assert [m[0] for m in d.modified] == ["src/main.py"] and d.summary().startswith("+0 ~1 -0")
    (tree / "src/new.py").write_text("y" * 2000)
    d = watching.last()
    assert d.added == [("src/new.py", 2000)] and d.summary() == "+1 ~0 -0 files (+2.0 kB)"
    (tree / "src/pkg/mod.py").unlink()
    assert watching.last().removed == [("src/pkg/mod.py", 6)]
    os.chmod(tree / "src/main.py", 0o755)
    assert watching.last().modified == [("src/main.py", 9, "mode")]
    os.symlink("main.py", tree / "src/link")
    assert watching.last().added == [("src/link", 7)]  # a symlink's size: its target's length
    os.unlink(tree / "src/link")
    os.symlink("new.py", tree / "src/link")
    assert watching.last().modified[-1] == ("src/link", 6, "link")
    watching.check()


def test_hard_links_follow_the_walker(watching: Running, tree: Path) -> None:
    os.link(tree / "src/main.py", tree / "src/pkg/again.py")  # the first name's link count changes too
    watching.check()
    os.unlink(tree / "src/main.py")  # the second name is a file again
    watching.check()


def test_watches_only_watchable_directories(watching: Running, tree: Path) -> None:
    ours = [ino for ino in watched_inodes() if ino != os.stat(watching.w._barrier_dir).st_ino]
    watched = set(ours)
    expected = {os.stat(tree / r if r else tree).st_ino for r in watching.w.model.dirs}
    assert watched == expected
    assert sorted(watching.w.model.dirs) == ["", "logs", "packages", "packages/a", "packages/a/src", "src", "src/pkg"]
    assert len(ours) == watching.w.model.watchable  # logs/: an exception reaches into it
    for dirpath, dirnames, _ in os.walk(tree):
        if "node_modules" in Path(dirpath).parts:
            assert os.stat(dirpath).st_ino not in watched


# -- renames across the ignore boundary ----------------------------------------------------------
def test_renames_across_the_ignore_boundary(watching: Running, tree: Path) -> None:
    os.rename(tree / "src/main.py", tree / "node_modules/main.py")
    assert watching.last().removed == [("src/main.py", 9)]
    os.rename(tree / "node_modules/left-pad", tree / "src/left-pad")
    d = watching.last()
    assert [p for p, _ in d.added] == ["src/left-pad", "src/left-pad/lib", "src/left-pad/lib/index.js"]
    assert "src/left-pad/lib" in watching.w.model.dirs  # now watched
    (tree / "src/left-pad/lib/more.js").write_text("1")
    assert watching.last().added == [("src/left-pad/lib/more.js", 1)]
    os.rename(tree / "src/left-pad", tree / "packages/a/node_modules/left-pad")
    assert len(watching.last().removed) == 4
    assert "src/left-pad/lib" not in watching.w.model.dirs
    os.rename(tree / "src/pkg", tree / "packages/pkg")  # a directory moved within the context
    d = watching.last()
    assert [p for p, _ in d.removed] == ["src/pkg", "src/pkg/mod.py"]
    assert [p for p, _ in d.added] == ["packages/pkg", "packages/pkg/mod.py"] and d.bytes == 0
    (tree / "packages/pkg/x").write_text("x")
    assert watching.last().added == [("packages/pkg/x", 1)]
    os.rename(tree / "logs/other.txt", tree / "logs/keep.txt")  # into the exception's name
    assert watching.last().modified == [("logs/keep.txt", 6, "content")]
    watching.check()


def test_directory_moved_in_from_outside_and_out(watching: Running, tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep/er").mkdir(parents=True)
    (outside / "deep/er/f.txt").write_text("f")
    os.rename(outside, tree / "src/moved")
    assert len(watching.last().added) == 4
    os.rename(tree / "src/moved", tmp_path / "gone")
    assert len(watching.last().removed) == 4
    (tmp_path / "gone/deep/er/g.txt").write_text("g")  # outside now: no delta
    watching.check()
    assert not any(d.rel.startswith("src/moved") for d in watching.w.model.dirs.values())


# -- new directories filled before their watch lands -----------------------------------------------
def test_new_directories_with_files_written_before_the_watch(watching: Running, tree: Path) -> None:
    with watching.w._lock:  # the loop cannot apply anything: no watch can be placed meanwhile
        (tree / "src/a/b/c").mkdir(parents=True)
        for i in range(20):
            (tree / f"src/a/b/c/f{i}").write_text(str(i))
        (tree / "src/a/b/top").write_text("t")
    d = watching.last()
    assert len(d.added) == 3 + 21
    (tree / "src/a/b/c/late").write_text("late")  # the watch is there now
    assert watching.last().added == [("src/a/b/c/late", 4)]
    watching.check()


# -- the rules change ------------------------------------------------------------------------------------
def test_dockerignore_edit_rebuilds_the_matcher(watching: Running, tree: Path) -> None:
    before = watching.w.model.watchable
    (tree / ".dockerignore").write_text("*.log\nlogs\n!logs/keep.txt\n")  # node_modules back in
    d = watching.last()
    assert d.rescan == ".dockerignore edited"  # names the file that caused the rescan (trial 22)
    assert d.meta == [(".dockerignore", "edited")]
    assert ("node_modules/left-pad/lib/index.js", 19) in d.added
    assert watching.w.model.watchable == before + 5
    assert len(watched_inodes()) == watching.w.model.watchable + 1  # + the barrier directory
    (tree / "node_modules/left-pad/lib/new.js").write_text("n")
    assert watching.last().added == [("node_modules/left-pad/lib/new.js", 1)]
    (tree / ".dockerignore").write_text("**/node_modules\n*.log\nlogs\n!logs/keep.txt\n")
    watching.sync()
    assert watching.w.model.watchable == before
    watching.check()


def test_broken_dockerignore_refuses_warm_state_until_fixed(watching: Running, tree: Path) -> None:
    (tree / ".dockerignore").write_text("[\n")
    assert watching.w.sync(10) is None and "syntax error" in (watching.w.problem or "")
    assert any("syntax error" in n for n in watching.notes)
    (tree / ".dockerignore").write_text("**/node_modules\n")
    watching.check()


def test_dockerfile_edit_under_minimal_reports_instructions(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    r = Running(tree, tmp_path / "cache", minimal=True)
    try:
        assert "src" in r.w.model.dirs and "node_modules" not in r.w.model.dirs
        (tree / "src/pkg/mod.py").write_text("x = 2\n")
        d = r.last()
        assert d.instructions == ["COPY src (line 2, stage 0)"]
        (tree / "logs/keep.txt").write_text("not read by the build")
        r.sync()
        assert r.deltas[-1] is d  # nothing the build reads changed
        (tree / "Dockerfile").write_text("FROM scratch\nCOPY logs /logs\n")
        d = r.last()
        assert d.rescan and "src/main.py" in [p for p, _ in d.removed]
        assert "logs/keep.txt" in [p for p, _ in d.added]
        r.check()
    finally:
        r.stop()


# -- bursts and overflow -----------------------------------------------------------------------------------
def test_burst_of_10k_files_is_one_delta(watching: Running, tree: Path, tmp_path: Path) -> None:
    # Like a `git checkout`: another process writes 10,000 files as fast as it can.
    archive = tmp_path / "burst.tar"
    with tarfile.open(archive, "w") as tf:
        for name in ["burst"] + [f"burst/d{i:02d}" for i in range(100)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
            if name == "burst":
                continue
            for j in range(100):
                info = tarfile.TarInfo(f"{name}/f{j:02d}.txt")
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
    watching.sync()
    n = len(watching.deltas)
    started = time.monotonic()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(tree / "src")], check=True)
    took = time.monotonic() - started
    # Let it settle by itself (no client forcing it): coalesced, not 10k deltas.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(len(d.added) for d in watching.deltas[n:]) < 10_101:
        time.sleep(0.2)
    got = watching.deltas[n:]
    assert sum(len(d.added) for d in got) == 10_101
    # One delta per pause longer than the quiet period: a few on a quiet
    # machine (tar takes ~0.3 s), more where tar itself stalls for longer.
    assert len(got) <= min(100, 3 + took / 0.1), (took, [d.summary() for d in got])
    assert got[-1].bytes == 10_000 or sum(d.bytes for d in got) == 10_000
    watching.check()


def test_real_queue_overflow_causes_a_rescan(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    src = InotifySource()
    hold = threading.Event()
    r = Running(tree, tmp_path / "cache", source=src)
    try:
        src.hold = hold  # the reader stops: the kernel queue (max_queued_events) fills up
        a, b = tree / "src/main.py", tree / "src/pkg/mod.py"
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        for i in range(limit + 4096):  # alternating names: the kernel cannot merge them
            os.utime(a if i % 2 else b, ns=(i, i))
        (tree / "src/after-overflow.txt").write_text("!")
        hold.set()
        src.hold = None
        d = r.last()
        assert any(x.rescan and "IN_Q_OVERFLOW" in x.rescan for x in r.deltas)
        assert ("src/after-overflow.txt", 1) in [a for x in r.deltas for a in x.added]
        assert d.generation == r.w.generation
        r.check()
    finally:
        hold.set()
        r.stop()


def test_scripted_overflow_and_lost_watch(watching: Running, tree: Path) -> None:
    src = watching.w.source
    (tree / "src/x").write_text("x")  # seen only through the rescan if events are lost
    src.inject(RawEvent(-1, "", IN_Q_OVERFLOW))  # type: ignore[attr-defined]
    d = watching.last()
    assert d.rescan and "overflow" in d.rescan
    h = watching.w.model.dirs["src/pkg"].handle
    src.remove(h)  # type: ignore[attr-defined]  # the kernel drops it; the directory is still there
    src.inject(RawEvent(h, "", LOST))  # type: ignore[attr-defined]
    watching.sync()
    assert any("lost" in n for n in watching.notes)
    assert watching.w.model.dirs["src/pkg"].handle is not None
    (tree / "src/pkg/after").write_text("a")
    assert watching.last().added == [("src/pkg/after", 1)]
    watching.check()


def test_watch_limit_names_the_sysctl_and_polls(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("ctxpack.watch.watcher.POLL", 0.2)
    r = Running(tree, tmp_path / "cache", source=InotifySource(max_watches=3))
    try:
        assert any("fs.inotify.max_user_watches" in n for n in r.notes)
        assert r.w.sync(5) is None  # never a silently stale answer
        (tree / "src/pkg/deep.txt").write_text("d")  # in a directory without a watch
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(("src/pkg/deep.txt", 1) in d.added for d in r.deltas):
            time.sleep(0.1)
        assert any(("src/pkg/deep.txt", 1) in d.added for d in r.deltas)
    finally:
        r.stop()


# -- the seam ---------------------------------------------------------------------------------------------------
def test_scripted_source_drives_the_watcher(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    src = ScriptedSource()
    r = Running(tree, tmp_path / "cache", source=src)
    try:
        assert str(tree) in src.watched.values() and str(tree / "node_modules") not in src.watched.values()
        (tree / "src/s.txt").write_text("s")  # nothing delivers it ...
        r.sync()
        assert not r.deltas
        h = r.w.model.dirs["src"].handle
        src.inject(RawEvent(h, "s.txt", 0x100))  # ... until the test does
        assert r.last().added == [("src/s.txt", 1)]
    finally:
        r.stop()
    assert src.closed


def test_quiet_period_adapts_to_the_burst() -> None:
    assert quiet_period(0) == pytest.approx(0.02)
    assert quiet_period(0.2) == pytest.approx(0.12)
    assert quiet_period(60) == pytest.approx(0.3)
    # A burst goes on across a settle only while events keep coming.
    assert burst_start(10.0, 10.2, 10.2 + BURST_GAP / 2) == 10.0
    assert burst_start(10.0, 10.2, 10.2 + BURST_GAP + 0.05) == pytest.approx(10.25 + BURST_GAP)
    assert BURST_GAP <= 0.3


def test_saves_half_a_second_apart_each_settle_after_the_short_quiet_period(watching: Running, tree: Path) -> None:
    # An edit loop: save, look, save again.  Each save is a lone one and
    # settles after ~20 ms, not after the 300 ms of a long burst.
    took = []
    for i in range(4):
        n = len(watching.deltas)
        t0 = time.monotonic()
        (tree / f"src/save{i}.py").write_text(str(i))
        while len(watching.deltas) == n:
            assert time.monotonic() - t0 < 10
            time.sleep(0.002)
        took.append(time.monotonic() - t0)
        time.sleep(0.5)
    assert sorted(took)[len(took) // 2] < 0.2, took  # the 1 s rule: 0.3 s from the second save on


def _new_deltas(r: Running, since: int, want: str, settle: float = 0.6) -> list[Settled]:
    """The deltas after the first ``since``, once one names ``want`` and nothing more came for ``settle`` s."""
    deadline = time.monotonic() + 20
    while not any(want in {a[0] for a in d.added} for d in r.deltas[since:]):
        assert time.monotonic() < deadline, r.deltas[since:]
        time.sleep(0.01)
    time.sleep(settle)
    return r.deltas[since:]


def test_git_phases_under_index_lock_are_one_delta(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # git writes a commit or a checkout in phases with pauses between them,
    # longer than a lone save's quiet period: while it holds index.lock, a
    # due settle waits.  (Trial finding: one `git commit -am` printed 4 deltas.)
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    (tree / ".git").mkdir()
    assert git_lock(str(tree / "src")) == str(tree / ".git" / "index.lock")  # found upwards
    r = Running(tree, tmp_path / "cache")
    try:
        n = len(r.deltas)
        lock = tree / ".git" / "index.lock"
        lock.write_text("")
        for i in range(3):  # phases 0.15 s apart: each would settle alone
            (tree / f"src/phase{i}.py").write_text(str(i))
            time.sleep(0.15)
        os.rename(lock, tree / ".git" / "index")
        got = _new_deltas(r, n, "src/phase2.py")
        assert len(got) == 1, [d.summary() for d in got]
        assert {"src/phase0.py", "src/phase1.py", "src/phase2.py"} <= {a[0] for a in got[0].added}
        # A lock a killed git left (older than CAP) holds nothing: a save settles at once.
        lock.write_text("")
        old = time.time() - CAP - 1
        os.utime(lock, (old, old))
        n = len(r.deltas)
        t0 = time.monotonic()
        (tree / "src/after.py").write_text("x")
        _new_deltas(r, n, "src/after.py", settle=0)
        assert time.monotonic() - t0 < CAP / 2
    finally:
        r.stop()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_real_git_commit_is_one_delta(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "add", "-A"], check=True, timeout=60)
    subprocess.run([*git, "commit", "-qm", "one"], check=True, timeout=60)
    # A pause inside the commit, as a hook or a slow disk makes one: the blobs
    # of `-a` are written before the pre-commit hook, the tree and commit after.
    hook = tree / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\nsleep 0.3\n")
    hook.chmod(0o755)
    r = Running(tree, tmp_path / "cache")  # .git is in the context (no rule sends it away), as in the trial
    try:
        time.sleep(0.5)
        for name in ("src/main.py", "src/pkg/mod.py", "packages/a/src/a.ts"):
            (tree / name).write_text("changed\n")
        time.sleep(0.5)
        n = len(r.deltas)
        subprocess.run([*git, "commit", "-qam", "two"], check=True, timeout=60)
        (tree / "src/marker.py").write_text("m")  # after git is done: the delta that names it ends the wait
        got = _new_deltas(r, n, "src/marker.py")
        assert len(got) <= 2, [d.summary() for d in got]  # git's own delta (one), then the marker's
        assert sum(1 for d in got if any(a[0].startswith(".git/objects/") for a in d.added)) == 1
    finally:
        r.stop()


def test_close_leaves_nothing(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    before = set(os.listdir("/proc/self/fd"))
    threads = threading.active_count()
    r = Running(tree, tmp_path / "cache")
    bd = r.w._barrier_dir
    r.stop()
    time.sleep(0.1)
    assert not os.path.exists(bd)
    assert set(os.listdir("/proc/self/fd")) <= before
    assert threading.active_count() <= threads
    shutil.rmtree(tree)


def test_instance_limit_names_its_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import watchdog.observers.inotify_c as inotify_c

    from ctxpack.errors import WatchLimitError

    def refuse() -> None:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(inotify_c, "InotifyFD", refuse)
    with pytest.raises(WatchLimitError) as e:
        InotifySource()
    assert e.value.sysctl == "fs.inotify.max_user_instances" and e.value.exit_code == 6
    assert "fs.inotify.max_user_instances" in str(e.value)


def test_a_request_skips_the_barrier_only_when_nothing_is_on_its_way(watching: Running, tree: Path) -> None:
    """sync() answers without a barrier file when the kernel's queue is empty,
    the reader waits in its poll and nothing is left to apply
    (InotifySource.drained); a write just before it is always in the answer."""
    w = watching.w
    deadline = time.monotonic() + 10
    while not w.source.drained():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the reader never waited with an empty queue"
        time.sleep(0.01)
    time.sleep(0.1)
    seq = w._barrier_seq
    assert watching.sync() is not None and w._barrier_seq == seq  # idle: no barrier
    took = 0
    for i in range(30):
        (tree / f"src/new{i}.py").write_text(f"{i}\n")
        before = w._barrier_seq
        watching.sync()
        took += w._barrier_seq > before
        assert f"src/new{i}.py" in {e.path for e in w.walked(False)}, i  # never stale
    assert took  # the writes' events were on their way: the barrier
    held = threading.Event()
    w.source.hold = held  # type: ignore[attr-defined]
    try:
        assert not w.source.drained()  # type: ignore[attr-defined]  # a held delivery: never "drained"
    finally:
        w.source.hold = None  # type: ignore[attr-defined]
        held.set()
    watching.check()
    watching.stop()
    assert not w.source.drained() and w.sync(1) is None  # type: ignore[attr-defined]  # a closed watcher vouches for nothing


def test_a_buffer_read_but_not_yet_delivered_is_on_its_way() -> None:
    """watchdog >= 7.1 reads on one thread into a queue and delivers on
    another: a buffer put but still being delivered (or not yet taken)
    keeps InotifySource.drained() False, which a request then pays with
    the barrier; once the dispatcher waits for more, everything put was
    delivered (source._TappedQueue counts it)."""
    import queue as queues

    from ctxpack.watch.source import _TappedQueue

    q = _TappedQueue(queues.SimpleQueue())
    delivering, release, handled = threading.Event(), threading.Event(), []

    def dispatcher() -> None:  # watchdog's loop: a blocking get, then what it can take at once
        while True:
            item = q.get()
            while True:
                if not item:
                    return
                delivering.set()
                release.wait(10)
                handled.append(item)
                try:
                    item = q.get_nowait()
                except queues.Empty:
                    break

    t = threading.Thread(target=dispatcher, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while q.delivered != q.puts and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q.puts == q.delivered == 0
    q.put(b"events")
    assert q.puts == 1 and q.delivered == 0  # not taken yet, or being delivered
    assert delivering.wait(10)
    q.put(b"more")  # taken at once after the first, before the dispatcher waits again
    assert q.delivered != q.puts
    release.set()
    while q.delivered != q.puts and time.monotonic() < deadline:
        time.sleep(0.001)
    assert q.delivered == q.puts == 2 and handled == [b"events", b"more"]
    q.put(b"")
    t.join(10)
