"""``ctxpack watch`` as a process: its output, its inotify watches counted
from ``/proc/PID/fdinfo``, sharing its state with ``fingerprint``/``diff``/
``ls``, falling back when it is dead, lagging or differently configured,
a clean shutdown, and a bounded soak (memory and idle CPU flat)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxpack.watch.source import watched_inodes

from ctxpack.context import open_context
from ctxpack.watch import channel

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="inotify tests need Linux")
REPO = Path(__file__).resolve().parent.parent


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, CTXPACK_CACHE_DIR=str(cache), PYTHONPATH=str(REPO))
    env.pop("CTXPACK_WATCH", None)  # the caller's CTXPACK_WATCH=0 (a run without the watcher) stays
    return env | extra


def ctxpack(args: list[str], cache: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", *args], capture_output=True, text=True,
                          env=_env(cache, **extra), timeout=120)


class WatchProcess:
    """``ctxpack watch`` in the background; its stdout lines collected."""

    def __init__(self, args: list[str], cache: Path, **extra: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "watch", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=_env(cache, **extra))
        self.lines: list[str] = []
        self.err: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._e = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)  # type: ignore[arg-type]
        self._e.start()
        deadline = time.monotonic() + 60
        while not any(e.startswith("ctxpack: watching ") for e in self.err):
            assert self.proc.poll() is None, "".join(self.err)
            assert time.monotonic() < deadline, "watch did not start"
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_lines(self, n: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lines

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(30)
        self._t.join(5)
        self._e.join(5)
        return rc


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for d in ("src/app", "node_modules/a/b/c", "web/node_modules/d", "web/src", ".git/objects"):
        (root / d).mkdir(parents=True)
    (root / ".dockerignore").write_text("**/node_modules\n.git\n")
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (root / "src/app/main.py").write_text("print('hi')\n")
    (root / "web/src/index.ts").write_text("export {}\n")
    (root / "node_modules/a/b/c/x.js").write_text("x")
    return root


@pytest.fixture
def watch(ctx_dir: Path, tmp_path: Path) -> Iterator[WatchProcess]:
    w = WatchProcess([str(ctx_dir), "--json"], tmp_path / "cache")
    yield w
    w.stop()


def test_watches_counted_from_proc_equal_the_watchable_directories(watch: WatchProcess, ctx_dir: Path) -> None:
    watchable = ["", "src", "src/app", "web", "web/src"]  # not .git, not any node_modules
    inodes = set(watched_inodes(watch.proc.pid))
    want = {os.stat(ctx_dir / d).st_ino for d in watchable}
    assert want <= inodes and len(inodes) == len(want) + 1  # + the private barrier directory
    for dirpath, _, _ in os.walk(ctx_dir):
        if "node_modules" in Path(dirpath).parts or ".git" in Path(dirpath).parts:
            assert os.stat(dirpath).st_ino not in inodes
    (ctx_dir / "web/src/new").mkdir()
    watch.wait_lines(1)
    assert os.stat(ctx_dir / "web/src/new").st_ino in set(watched_inodes(watch.proc.pid))


def test_json_deltas_and_shared_state(watch: WatchProcess, ctx_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert ctxpack(["snapshot", str(ctx_dir)], cache).returncode == 0
    (ctx_dir / "src/app/new.py").write_text("n" * 100)
    (ctx_dir / "node_modules/a/ignored.js").write_text("i")
    lines = watch.wait_lines(1)
    d = json.loads(lines[0])
    assert [a["path"] for a in d["added"]] == ["src/app/new.py"] and d["bytes"] == 100
    # diff, fingerprint, ls, size and pack answer from the watcher, and say the same as without it.
    for args in (["diff", "--json"], ["fingerprint", "--json"], ["ls"], ["ls", "--excluded"], ["size", "--json"]):
        warm = ctxpack([*args, str(ctx_dir)], cache)
        cold = ctxpack([*args, str(ctx_dir)], cache, CTXPACK_WATCH="0")
        assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
        assert warm.stdout == cold.stdout  # fingerprint's `hashed` too: what this command read, none
        if args[0] == "fingerprint":
            assert json.loads(warm.stdout)["hashed"] == json.loads(warm.stdout)["hashed_bytes"] == 0
    assert "src/app/new.py" in ctxpack(["diff", str(ctx_dir)], cache).stdout
    tars = []
    for extra in ({}, {"CTXPACK_WATCH": "0"}):
        out = tmp_path / f"ctx{len(tars)}.tar"
        r = ctxpack(["pack", "-o", str(out), str(ctx_dir)], cache, **extra)
        assert r.returncode == 0, r.stderr
        tars.append(out.read_bytes())
    assert tars[0] == tars[1] and b"src/app/new.py" in tars[0]


def test_write_is_visible_to_diff_at_once(watch: WatchProcess, ctx_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ctxpack(["snapshot", str(ctx_dir)], cache)
    for i in range(3):  # no sleep between the write and the diff: the barrier covers it
        (ctx_dir / f"src/app/f{i}.py").write_text(str(i))
        out = ctxpack(["diff", str(ctx_dir)], cache).stdout
        assert f"src/app/f{i}.py" in out


def test_clients_fall_back_when_the_watcher_is_no_help(watch: WatchProcess, ctx_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    ctx = open_context(ctx_dir)
    assert channel.warm_fingerprint(ctx) is not None
    assert channel.warm_fingerprint(open_context(ctx_dir, dialect="classic")) is None  # other options
    monkeypatch.setenv("CTXPACK_WATCH", "0")
    assert channel.warm_fingerprint(ctx) is None
    monkeypatch.delenv("CTXPACK_WATCH")
    # Lagging: the watcher is stopped (SIGSTOP) and cannot answer in time.
    os.kill(watch.proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not all(_state(watch.proc.pid, t) == "T" for t in os.listdir(f"/proc/{watch.proc.pid}/task")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        monkeypatch.setenv("CTXPACK_WATCH_TIMEOUT", "0.5")
        started = time.monotonic()
        assert channel.warm_fingerprint(ctx) is None
        assert time.monotonic() - started < 3
    finally:
        os.kill(watch.proc.pid, signal.SIGCONT)
    assert channel.warm_fingerprint(ctx) is not None


def _state(pid: int, tid: str) -> str:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_mtime_check_catches_a_watcher_that_missed_something(watch: WatchProcess, ctx_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    ctx = open_context(ctx_dir)
    real = os.lstat

    def lying(path: str, *a: object, **k: object) -> os.stat_result:
        s = real(path, *a, **k)  # type: ignore[arg-type]
        if path == str(ctx_dir):  # the root changed behind the watcher's back
            return os.stat_result((*s[:8], s.st_mtime + 1, s.st_ctime))
        return s

    monkeypatch.setattr(os, "lstat", lying)
    assert channel.warm_fingerprint(ctx) is None


def test_dead_watcher_leaves_a_socket_clients_ignore(ctx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    # A private temporary directory: any other watcher starting on this
    # machine (another test run) sweeps dead watchers' barrier directories
    # from the shared /tmp, and would remove the one this test looks for.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    w = WatchProcess([str(ctx_dir)], cache, TMPDIR=str(tmp))
    w.stop(signal.SIGKILL)  # no chance to clean up
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(cache))
    path = channel.socket_path(str(ctx_dir.resolve()))
    assert os.path.exists(path)
    with pytest.raises(ConnectionRefusedError):
        socket.socket(socket.AF_UNIX).connect(path)
    assert channel.warm_fingerprint(open_context(ctx_dir)) is None
    r = ctxpack(["fingerprint", str(ctx_dir)], cache, TMPDIR=str(tmp))
    assert r.returncode == 0 and len(r.stdout.strip()) == 64
    dead = f"ctxpack-barrier-{w.proc.pid}-"
    assert any(p.startswith(dead) for p in os.listdir(tmp))
    w2 = WatchProcess([str(ctx_dir)], cache, TMPDIR=str(tmp))  # a new watcher takes the place over
    try:
        assert channel.warm_fingerprint(open_context(ctx_dir)) is not None
        assert not any(p.startswith(dead) for p in os.listdir(tmp))  # swept
    finally:
        w2.stop()


def test_second_watcher_is_refused(watch: WatchProcess, ctx_dir: Path, tmp_path: Path) -> None:
    r = ctxpack(["watch", str(ctx_dir)], tmp_path / "cache")
    assert r.returncode == 6 and "already being watched" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_clean_shutdown_leaves_no_state(ctx_dir: Path, tmp_path: Path, sig: int) -> None:
    cache = tmp_path / "cache"
    w = WatchProcess([str(ctx_dir)], cache)
    env = dict(os.environ)
    os.environ["CTXPACK_CACHE_DIR"] = str(cache)
    try:
        path = channel.socket_path(str(ctx_dir.resolve()))
    finally:
        os.environ.clear()
        os.environ.update(env)
    mine = f"ctxpack-barrier-{w.proc.pid}-"  # other processes on the machine may have their own
    assert any(p.startswith(mine) for p in os.listdir(tempfile.gettempdir()))
    assert os.path.exists(path)
    assert w.stop(sig) == 0, "".join(w.err)
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")
    assert not any(p.startswith(mine) for p in os.listdir(tempfile.gettempdir()))


def test_minimal_prints_affected_instructions(ctx_dir: Path, tmp_path: Path) -> None:
    w = WatchProcess([str(ctx_dir), "--minimal"], tmp_path / "cache")
    try:
        (ctx_dir / "web/src/index.ts").write_text("not read by the build\n")
        (ctx_dir / "src/app/main.py").write_text("print('bye')\n")
        lines = w.wait_lines(2)
        assert lines[0].endswith("+0 ~1 -0 files (+1 B)")
        assert lines[1] == "  affects COPY src (line 2, stage 0)"
    finally:
        w.stop()


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return cpu, rss


def test_soak_memory_and_idle_cpu_stay_flat(ctx_dir: Path, tmp_path: Path) -> None:
    """Bounded soak (~10 s): 140 edit/create/delete cycles, then idle;
    bench/bench_watch.py runs the long one."""
    cache = tmp_path / "cache"
    w = WatchProcess([str(ctx_dir)], cache)
    try:
        def cycles(n: int) -> None:
            for i in range(n):
                p = ctx_dir / f"src/app/s{i % 7}.py"
                p.write_text(str(i))
                if i % 3 == 0:
                    p.unlink()
                if i % 10 == 0:
                    (ctx_dir / f"src/app/d{i}").mkdir()
                    (ctx_dir / f"src/app/d{i}/f").write_text("f")
                    (ctx_dir / f"src/app/d{i}/f").unlink()
                    (ctx_dir / f"src/app/d{i}").rmdir()
                time.sleep(0.35 if i % 10 == 9 else 0.005)  # let every tenth settle

        cycles(40)
        time.sleep(1)
        _, rss1 = _cpu_and_rss(w.proc.pid)
        cycles(100)
        time.sleep(1)
        cpu2, rss2 = _cpu_and_rss(w.proc.pid)
        time.sleep(3)  # idle
        cpu3, rss3 = _cpu_and_rss(w.proc.pid)
        assert rss3 - rss1 < 4 * 1024, (rss1, rss2, rss3)  # kB
        assert (cpu3 - cpu2) / 3 < 0.02, cpu3 - cpu2  # < 2% of a core idle
        assert len(w.lines) >= 10
    finally:
        assert w.stop() == 0


def test_build_on_each_change_cancels_the_build_in_flight(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``watch --build`` on the session's real engine (tests/dockerd.py): a
    build at start, a rebuild per settled change, and a change during a
    (slow) build cancels it and builds again."""
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /src\nRUN sleep 2\n")
    (root / "src/a.txt").write_text("a\n")
    w = WatchProcess([str(root), "--json", "--build", "--builder", "classic", "-H", f"unix://{dockerd.socket}"],
                     tmp_path / "cache")
    try:
        def builds() -> list[dict]:
            return [json.loads(x)["build"] for x in w.lines if x.startswith('{"build"')]

        def wait_for(pred, timeout: float = 90) -> list[dict]:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                b = builds()
                if pred(b):
                    return b
                time.sleep(0.1)
            raise AssertionError((builds(), "".join(w.err)))

        b = wait_for(lambda b: any("image" in x for x in b))
        first = next(x["image"] for x in b if "image" in x)
        assert first.startswith("sha256:")
        (root / "src/b.txt").write_text("b\n")
        wait_for(lambda b: sum("started" in x for x in b) >= 2)
        time.sleep(0.5)  # inside the RUN sleep
        (root / "src/c.txt").write_text("c\n")
        b = wait_for(lambda b: any(x.get("cancelled") for x in b) and sum("image" in x for x in b) >= 2)
        images = [x["image"] for x in b if "image" in x]
        assert images[-1] != first
        assert dockerd.client.inspect_image(images[-1])["Id"] == images[-1]
    finally:
        assert w.stop() == 0


def test_sigterm_during_a_build_cancels_it_and_leaves_no_state(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while ``watch --build`` has a build in flight: the build is
    cancelled on the engine (no container left running), the watcher exits
    0, and its socket, lock file and barrier directory are gone."""
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /src\nRUN sleep 30\n")
    (root / "src/a.txt").write_text(f"{time.time()}\n")  # no cached layer: the RUN runs
    cache = tmp_path / "cache"
    w = WatchProcess([str(root), "--json", "--build", "--builder", "classic", "-H", f"unix://{dockerd.socket}"], cache)
    env = dict(os.environ)
    os.environ["CTXPACK_CACHE_DIR"] = str(cache)
    try:
        path = channel.socket_path(str(root.resolve()))
    finally:
        os.environ.clear()
        os.environ.update(env)
    barrier = [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(f"ctxpack-barrier-{w.proc.pid}-")]
    assert barrier and os.path.exists(path)
    deadline = time.monotonic() + 60
    while not dockerd.client._json("GET", "/containers/json"):  # the RUN's container is running
        assert time.monotonic() < deadline, ("no build container", w.lines, "".join(w.err))
        time.sleep(0.1)
    assert w.stop(signal.SIGTERM) == 0, "".join(w.err)
    assert any('"cancelled": true' in x for x in w.lines), w.lines
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")
    assert not os.path.exists(os.path.join(tempfile.gettempdir(), barrier[0]))
    deadline = time.monotonic() + 30
    while dockerd.client._json("GET", "/containers/json"):  # the engine stops the cancelled build's container
        assert time.monotonic() < deadline, dockerd.client._json("GET", "/containers/json")
        time.sleep(0.2)


# Modules an answered command must not load: the walker, matcher, index and
# what they pull in, the build's client, the compressors, the watcher itself.
HEAVY = ("ctxpack.walker", "ctxpack.ignore.matcher", "ctxpack.context", "ctxpack.index.store",
         "ctxpack.index.snapshots", "ctxpack.audit", "ctxpack.explainer", "ctxpack.tar.writer", "ctxpack.engine",
         "ctxpack.watch.watcher", "ctxpack.watch.channel", "sqlite3", "xxhash", "zstandard", "pathspec",
         "watchdog", "ssl", "http.client")
_DUMP = ("import atexit, sys\nout = sys.argv.pop()\n"
         "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
         "from ctxpack.cli import main\nsys.argv[0] = 'ctxpack'\nmain()\n")


def _modules_of(args: list[str], cache: Path, tmp_path: Path, **extra: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.txt"
    out.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "-c", _DUMP, *args, str(out)], capture_output=True, text=True,
                       env=_env(cache, **extra), timeout=120)
    return r, set(out.read_text().split())


def test_answered_diff_and_fingerprint_load_nothing_heavy(watch: WatchProcess, ctx_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ctxpack(["snapshot", str(ctx_dir)], cache)
    (ctx_dir / "src/app/changed.py").write_text("new\n")
    for args in (["diff", str(ctx_dir)], ["diff", "--json", str(ctx_dir)], ["fingerprint", "--json", str(ctx_dir)]):
        warm, mods = _modules_of(args, cache, tmp_path)
        cold, cold_mods = _modules_of(args, cache, tmp_path, CTXPACK_WATCH="0")
        assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
        assert "ctxpack.watchlink" in mods and "click" not in mods  # the console script's fast path answered
        assert not [m for m in mods for h in HEAVY if m == h or m.startswith(h + ".")], args
        assert {"ctxpack.walker", "ctxpack.index.snapshots"} <= cold_mods  # the test can see a walk
        assert warm.stdout == cold.stdout  # fingerprint's `hashed` too: what this command read, none
        if args[0] == "diff":
            assert "src/app/changed.py" in warm.stdout
        assert warm.stderr == cold.stderr


def test_answer_before_opening_is_refused_when_its_inputs_differ(watch: WatchProcess, ctx_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxpack.watch import client

    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    opts = dict(dockerfile=None, dialect="buildkit", ignore_file=None, minimal=False, target=None, build_args={},
                platform=None)
    s = client.spec(str(ctx_dir), **opts)  # type: ignore[arg-type]
    assert s is not None and client.quick_fingerprint(s) is not None
    assert client.quick_fingerprint(client.spec(str(ctx_dir), **{**opts, "dialect": "classic"})) is None  # type: ignore[arg-type]
    assert client.quick_fingerprint(client.spec(str(ctx_dir), **{**opts, "minimal": True})) is None  # type: ignore[arg-type]
    # A Dockerfile or ignore file that is not the one the watcher read: the
    # stat keys it sends disagree with the disk (here: faked, as if the
    # watcher had not seen the write yet).
    real = client._stat_key
    monkeypatch.setattr(client, "_stat_key", lambda p: [0] if p.endswith(".dockerignore") else real(p))
    assert client.quick_fingerprint(s) is None
    monkeypatch.setattr(client, "_stat_key", real)
    # The context's notes name paths relative to the watcher's directory:
    # another directory gets no answer when there are any.
    (ctx_dir / "Dockerfile").unlink()
    r = ctxpack(["fingerprint", str(ctx_dir)], tmp_path / "cache")
    assert r.returncode == 0 and "no Dockerfile in" in r.stderr
    got = client.quick_fingerprint(s)
    assert got is not None and any(n.startswith("no Dockerfile in") for n in got[1])
    monkeypatch.chdir(tmp_path)
    assert client.quick_fingerprint(s) is None
