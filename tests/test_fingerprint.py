"""fingerprint / snapshot / diff and the index behind them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ctxpack
from ctxpack.index import store
from ctxpack.index.store import DB_NAME, LEGACY_NAME, PRUNE_AFTER, Index
from ctxpack.cli import main
from ctxpack.index.snapshots import _variant, fingerprint
from trees import make_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(d))
    return d


def fp(root: Path, **kw: Any) -> dict[str, Any]:
    args = ["fingerprint", "--json", str(root)]
    for k, v in kw.items():
        args[1:1] = [f"--{k.replace('_', '-')}", v]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\nCOPY . /\n", "src/a.py": b"print(1)\n",
                                         "src/b.py": b"print(2)\n", "README": b"hi\n"}, dockerignore="*.log\n")


def test_stdout_is_only_the_digest(ctx: Path) -> None:
    res = CliRunner().invoke(main, ["fingerprint", str(ctx)])
    assert res.exit_code == 0 and len(res.stdout.strip()) == 64 and res.stdout.count("\n") == 1


def test_cold_then_warm(ctx: Path) -> None:
    cold = fp(ctx)
    assert cold["hashed"] == cold["files"] == 5 and cold["hashed_bytes"] == cold["bytes"]
    warm = fp(ctx)
    assert warm["hashed"] == 0 and warm["fingerprint"] == cold["fingerprint"]


def test_same_size_restored_mtime_is_detected(ctx: Path) -> None:
    before = fp(ctx)
    f = ctx / "src/a.py"
    st = f.stat()
    time.sleep(0.01)
    f.write_bytes(b"print(9)\n")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moved
    after = fp(ctx)
    assert after["hashed"] == 1 and after["fingerprint"] != before["fingerprint"]


def test_touch_does_not_change_fingerprint(ctx: Path) -> None:
    before = fp(ctx)
    os.utime(ctx / "README", (1, 1))
    after = fp(ctx)
    assert after["fingerprint"] == before["fingerprint"] and after["hashed"] == 1


def test_fresh_clone_same_fingerprint(ctx: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ctx, clone)  # new inodes, new mtimes
    for p in clone.rglob("*"):
        os.utime(p, (12345, 12345))
    assert fp(ctx)["fingerprint"] == fp(clone)["fingerprint"]


@pytest.mark.parametrize("change", ["rename", "mode", "symlink", "new-excluded", "unexclude", "dockerfile"])
def test_changes_that_count(ctx: Path, change: str) -> None:
    os.symlink("src/a.py", ctx / "link")
    (ctx / "debug.log").write_text("log")
    before = fp(ctx)["fingerprint"]
    if change == "rename":
        (ctx / "src/b.py").rename(ctx / "src/c.py")
    elif change == "mode":
        os.chmod(ctx / "src/a.py", 0o755)
    elif change == "symlink":
        os.unlink(ctx / "link")
        os.symlink("src/b.py", ctx / "link")
    elif change == "new-excluded":
        (ctx / "other.log").write_text("x")
        assert fp(ctx)["fingerprint"] == before  # excluded: does not count
        return
    elif change == "unexclude":
        (ctx / ".dockerignore").write_text("# nothing\n")
    elif change == "dockerfile":
        (ctx / "Dockerfile").write_text("FROM scratch\n")
    assert fp(ctx)["fingerprint"] != before


def test_dockerignore_counts_only_while_sent(ctx: Path) -> None:
    a = fp(ctx)["fingerprint"]
    (ctx / ".dockerignore").write_text("*.log\n# a comment\n")
    b = fp(ctx)["fingerprint"]
    assert a != b  # .dockerignore is in the context: COPY . copies it
    (ctx / ".dockerignore").write_text("*.log\n.dockerignore\n")
    c = fp(ctx)["fingerprint"]
    (ctx / ".dockerignore").write_text("*.log\n.dockerignore\n# comment\n")
    assert fp(ctx)["fingerprint"] == c  # excluded: only what it selects counts


def test_excluded_dockerfile_still_counts(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("Dockerfile\n")
    a = fp(ctx)["fingerprint"]
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN true\n")
    assert fp(ctx)["fingerprint"] != a


def test_dialects_have_their_own_fingerprint(ctx: Path) -> None:
    (ctx / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    assert fp(ctx, dialect="classic")["entries"] == fp(ctx, dialect="buildkit")["entries"] + 1


def test_corrupt_index_is_rebuilt(ctx: Path, cache: Path) -> None:
    first = fp(ctx)
    db = cache / DB_NAME
    with open(db, "r+b") as f:
        f.seek(0)
        f.write(b"this is not a database at all" * 10)
    res = CliRunner().invoke(main, ["fingerprint", "--json", str(ctx)])
    assert res.exit_code == 0
    assert json.loads(res.stdout)["fingerprint"] == first["fingerprint"]
    assert "unusable" in res.stderr and "rebuilt" in res.stderr
    assert any(p.name.startswith(f"{DB_NAME}.broken-") for p in cache.iterdir())
    assert fp(ctx)["hashed"] == 0  # the rebuilt index works


def test_damaged_page_is_moved_aside_and_rebuilt(ctx: Path, cache: Path) -> None:
    """A page damaged in the middle of the file (no integrity scan at open:
    it would read every page on every run) fails when read: the run still
    answers right, moves the file aside, and the next run rebuilds it."""
    big = make_tree(ctx.parent / "big", {f"d{i}/f{j}.txt": b"x" * 10 for i in range(40) for j in range(50)}
                    | {"Dockerfile": b"FROM scratch\n"})
    first = fp(big)
    db = cache / DB_NAME
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    assert pages > 8
    with open(db, "r+b") as f:
        for n in range(pages // 3, pages - 1):  # the parts' pages, not the header's
            f.seek(n * page)
            f.write(bytes(page))
    res = CliRunner().invoke(main, ["fingerprint", "--json", str(big)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fingerprint"] == first["fingerprint"]
    # one warning, naming the copy; not "cannot use the index"
    assert "unusable" in res.stderr and res.stderr.count("warning") == 1 and "cannot use" not in res.stderr
    assert any(p.name.startswith(f"{DB_NAME}.broken-") for p in cache.iterdir())
    again = fp(big)
    assert again["fingerprint"] == first["fingerprint"] and again["hashed"] == again["files"]
    assert fp(big)["hashed"] == 0  # the rebuilt index works


def test_foreign_database_is_not_trusted(ctx: Path, cache: Path) -> None:
    cache.mkdir()
    for name in (DB_NAME, LEGACY_NAME):
        con = sqlite3.connect(cache / name)
        con.execute("CREATE TABLE files (x)")
        con.commit()
        con.close()
    legacy = (cache / LEGACY_NAME).read_bytes()
    res = CliRunner().invoke(main, ["fingerprint", str(ctx)])
    assert res.exit_code == 0 and "not a ctxpack index" in res.stderr
    assert any(p.name.startswith(f"{DB_NAME}.broken-") for p in cache.iterdir())
    assert (cache / LEGACY_NAME).read_bytes() == legacy  # not this version's file: not touched


def test_killed_writer_leaves_a_usable_index(ctx: Path, cache: Path) -> None:
    fp(ctx)
    code = (
        "import os, sys, time\n"
        "from ctxpack.index.store import Index\n"
        "idx = Index()\n"
        "idx.db.execute('BEGIN IMMEDIATE')\n"
        "for i in range(200000):\n"
        "    idx.db.execute('INSERT INTO state_parts VALUES (1, ?, 0, ?, ?, ?)', (str(i), b'', b'', b''))\n"
        "print('writing', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=os.environ.copy())
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = fp(ctx)
    assert after["hashed"] == 0  # the committed state survived, the half-written one is gone
    with Index() as idx:
        assert idx.info().files == 5


def test_concurrent_processes(ctx: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "fingerprint", str(ctx)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=os.environ.copy())
        for _ in range(6)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert len({o[0] for o in outs}) == 1


def test_stale_contexts_are_pruned(ctx: Path, tmp_path: Path, cache: Path) -> None:
    other = make_tree(tmp_path / "other", ["Dockerfile", "x"])
    with Index(now=time.time() - PRUNE_AFTER - 10) as idx:
        fingerprint(ctxpack.open_context(other), idx)
    with Index() as idx:
        fingerprint(ctxpack.open_context(ctx), idx)
        info = idx.info()
    assert info.contexts == 1 and info.files == 5


def test_snapshot_and_diff(ctx: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["diff", str(ctx)])
    assert res.exit_code == 2 and "no snapshot" in res.output
    assert runner.invoke(main, ["snapshot", str(ctx)]).exit_code == 0
    assert runner.invoke(main, ["diff", "--exit-code", str(ctx)]).exit_code == 0
    (ctx / "src/new.py").write_text("new\n")
    (ctx / "README").unlink()
    (ctx / "src/a.py").write_text("print('changed')\n")
    os.chmod(ctx / "src/b.py", 0o700)
    res = runner.invoke(main, ["diff", "--json", "--exit-code", str(ctx)])
    assert res.exit_code == 1
    d = json.loads(res.stdout)
    assert d["added"] == [{"path": "src/new.py", "bytes": 4, "kind": "file"}]
    assert d["removed"] == [{"path": "README", "bytes": 3, "kind": "file"}]
    assert {(m["path"], m["change"]) for m in d["modified"]} == {("src/a.py", "content"), ("src/b.py", "mode")}
    assert d["since"].endswith("Z")


def test_pack_snapshot(ctx: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["pack", "--snapshot", "-o", str(tmp_path / "c.tar"), str(ctx)]).exit_code == 0
    (ctx / "src/a.py").write_text("x")
    res = runner.invoke(main, ["diff", str(ctx)])
    assert res.exit_code == 0 and "M src/a.py (content)" in res.output


def test_cache_info_and_clear(ctx: Path) -> None:
    fp(ctx)
    runner = CliRunner()
    info = json.loads(runner.invoke(main, ["cache", "info", "--json"]).stdout)
    assert info["contexts"] == 1 and info["files"] == 5
    assert runner.invoke(main, ["cache", "clear", str(ctx)]).exit_code == 0
    assert fp(ctx)["hashed"] == 5


def test_recipe_as_documented(tmp_path: Path) -> None:
    """Recompute the fingerprint from docs/fingerprint.md, independently."""
    import hashlib

    import xxhash

    root = make_tree(tmp_path / "r", {"Dockerfile": b"FROM scratch\n", "b/x.txt": b"hello", "a.txt": b"A"})
    os.symlink("a.txt", root / "link")
    os.chmod(root / "a.txt", 0o600)
    records = []
    for rel in sorted(["Dockerfile", "a.txt", "b", "b/x.txt", "link"], key=lambda p: p.encode()):
        p = root / rel
        st = os.lstat(p)
        if os.path.islink(p):
            kind, value = "l", os.readlink(p)
        elif p.is_dir():
            kind, value = "d", ""
        else:
            kind, value = "f", xxhash.xxh3_128_hexdigest(p.read_bytes())
        records.append(f"{rel}\0{kind}\0{st.st_mode & 0o7777:o}\0{value}\n")
    expected = hashlib.sha256(b"ctxpack-fp1\n" + "".join(records).encode()).hexdigest()
    assert fp(root)["fingerprint"] == expected


def _api_fp(root: Path, **kw: Any) -> Any:
    with Index() as idx:
        return fingerprint(ctxpack.open_context(root, **kw), idx)


def _age_dirs(root: Path) -> None:
    """Let the directories' times fall outside the racy window."""
    time.sleep(0.1)


def test_warm_run_stats_only_and_sees_every_kind_of_change(ctx: Path) -> None:
    first = _api_fp(ctx)
    assert first.how == "walk"
    _age_dirs(ctx)
    again = _api_fp(ctx)  # the walk re-saves the state as checkable once dirs are old enough
    warm = _api_fp(ctx)
    assert warm.how == "warm" and warm.hashed == 0 and warm.fingerprint == first.fingerprint
    # content edited in place: only that file is read again
    (ctx / "src/a.py").write_bytes(b"print(3)\n")
    edited = _api_fp(ctx)
    assert edited.how == "files" and edited.hashed == 1 and edited.fingerprint != first.fingerprint
    # a new file changes its directory: walk
    (ctx / "src/c.py").write_bytes(b"new\n")
    added = _api_fp(ctx)
    assert added.how == "walk" and added.hashed == 1 and added.entries == first.entries + 1
    # back to the original content: the original fingerprint
    (ctx / "src/c.py").unlink()
    (ctx / "src/a.py").write_bytes(b"print(1)\n")
    assert _api_fp(ctx).fingerprint == first.fingerprint == again.fingerprint
    # the rules changed (same .dockerignore size and mtime put back): config differs, walk
    st = (ctx / ".dockerignore").stat()
    (ctx / ".dockerignore").write_text("src\n")
    os.utime(ctx / ".dockerignore", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _api_fp(ctx).entries < first.entries


def test_warm_run_sees_a_file_below_an_excluded_directory_read_for_an_exception(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "x", {"Dockerfile": b"FROM scratch\n", "vendor/a/x.txt": b"x"},
                     dockerignore="vendor\n!vendor/a/keep.txt\n")
    first = _api_fp(root)
    _age_dirs(root)
    _api_fp(root)
    assert _api_fp(root).how == "warm"
    (root / "vendor/a/keep.txt").write_text("kept")
    after = _api_fp(root)
    assert after.entries == first.entries + 3 and after.how == "walk"  # vendor/, vendor/a/, keep.txt


def test_recently_changed_directories_are_not_trusted(ctx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "A moment ago" made deterministic: a window of an hour puts the
    # directories just made inside it however slow this machine is.
    from ctxpack.index import state

    monkeypatch.setattr(state, "FINE_WINDOW_NS", 3600 * 10**9)
    monkeypatch.setattr(state, "COARSE_WINDOW_NS", 3600 * 10**9)
    _api_fp(ctx)
    assert _api_fp(ctx).how == "walk"
    monkeypatch.setattr(state, "FINE_WINDOW_NS", 0)  # and with no window, the next run is warm
    monkeypatch.setattr(state, "COARSE_WINDOW_NS", 0)
    _api_fp(ctx)
    assert _api_fp(ctx).how == "warm"


def test_unusable_cache_dir_warns_once_and_still_answers(ctx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = fp(ctx)["fingerprint"]
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(blocker / "cache"))
    for args in (["fingerprint", str(ctx)], ["snapshot", str(ctx)]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        assert res.stdout.strip() == expected
        assert res.stderr.count("warning: cannot use the index") == 1
        assert f"({blocker / 'cache'}: Not a directory)" in res.stderr  # which path is in the way
    res = CliRunner().invoke(main, ["diff", str(ctx)])
    assert res.exit_code == 2 and "no snapshot" in res.output
    # The cache directory itself a file (makedirs: "File exists"): the warning says which file.
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(blocker))
    res = CliRunner().invoke(main, ["fingerprint", str(ctx)])
    assert res.exit_code == 0 and res.stdout.strip() == expected, res.output
    assert f"({blocker} exists and is not a directory)" in res.stderr, res.stderr


def test_full_disk_degrades_to_no_cache_without_corrupting(ctx: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fp(ctx)
    big = make_tree(ctx.parent / "big", {f"d{i}/f{j}.txt": b"x" * 10 for i in range(40) for j in range(50)} | {"Dockerfile": b"FROM scratch\n"})
    real = Index._connect

    def tiny(self: Index) -> sqlite3.Connection:
        db = real(self)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages + 2}")  # "database or disk is full" on the next big write
        return db

    monkeypatch.setattr(Index, "_connect", tiny)
    res = CliRunner().invoke(main, ["fingerprint", "--json", str(big)])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("warning: cannot use the index") == 1 and "full" in res.stderr
    monkeypatch.setattr(Index, "_connect", real)
    assert fp(ctx)["hashed"] == 0  # the earlier state survived intact
    with Index() as idx:
        assert idx.db is not None and idx.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_concurrent_writers_lose_nothing(ctx: Path, tmp_path: Path) -> None:
    other = make_tree(tmp_path / "other", {"Dockerfile": b"FROM scratch\n", "y": b"y"})
    cmds = [["fingerprint", str(ctx)], ["snapshot", str(ctx)], ["fingerprint", "--dialect", "classic", str(ctx)],
            ["snapshot", str(other)], ["fingerprint", str(other)], ["snapshot", "--dialect", "classic", str(ctx)]]
    procs = [subprocess.Popen([sys.executable, "-m", "ctxpack.cli", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=os.environ.copy()) for c in cmds * 2]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert all(b"warning" not in o[1] for o in outs)
    with Index() as idx:
        for root, dialect in ((ctx, "buildkit"), (ctx, "classic"), (other, "buildkit")):
            c = ctxpack.open_context(root, dialect=dialect)
            assert idx.load_snapshot(c.root, _variant(c)) is not None, (root, dialect)
    for c in (["fingerprint", "--json", str(ctx)], ["fingerprint", "--json", "--dialect", "classic", str(ctx)],
              ["fingerprint", "--json", str(other)]):
        res = CliRunner().invoke(main, c)
        assert json.loads(res.stdout)["hashed"] == 0
    for root in (ctx, other):
        assert CliRunner().invoke(main, ["diff", "--exit-code", str(root)]).exit_code == 0


class _HeldAfterAppId:
    """An index connection that, in one thread, pauses right after reading
    ``PRAGMA application_id`` (the statement finished, no lock held): the
    moment a busy machine may preempt a run opening a new index."""

    def __init__(self, db: sqlite3.Connection, held: threading.Event, go_on: threading.Event,
                 thread: threading.Thread) -> None:
        self.db, self.held, self.go_on, self.thread = db, held, go_on, thread

    def execute(self, sql: str, *args: Any) -> Any:
        if sql != "PRAGMA application_id" or threading.current_thread() is not self.thread:
            return self.db.execute(sql, *args)
        rows = self.db.execute(sql, *args).fetchall()
        self.held.set()
        self.go_on.wait(10)
        return _Rows(rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None


def test_runs_opening_a_new_index_together_lose_nothing(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One run is held between reading the new file's application id (0) and
    # its table list while another opens the index and writes. Without the
    # opening lock the held run then saw tables but no id, took the file for
    # a foreign one and moved it aside with the other run's write.
    held, go_on = threading.Event(), threading.Event()
    results: dict[str, tuple[str | None, str | None]] = {}

    def run(name: str) -> None:
        idx = Index(str(cache))
        results[name] = (idx.recovered, idx.warning)
        idx.touch(f"/{name}")
        idx.close()

    first = threading.Thread(target=run, args=("first",))
    second = threading.Thread(target=run, args=("second",))
    real_connect = Index._connect
    monkeypatch.setattr(Index, "_connect", lambda self: _HeldAfterAppId(real_connect(self), held, go_on, first))
    first.start()
    try:
        assert held.wait(10)
        second.start()
        second.join(0.5)  # long enough to open and write, were it not made to wait
    finally:
        go_on.set()
        first.join(20)
    second.join(20)
    assert results == {"first": (None, None), "second": (None, None)}
    assert not [p.name for p in cache.iterdir() if ".broken-" in p.name]
    with Index(str(cache)) as idx:
        assert idx.context_id("/first") is not None and idx.context_id("/second") is not None


_HOLD = ("import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n")


def test_a_held_opening_lock_is_said_at_once_and_not_waited_for_long(ctx: Path, cache: Path) -> None:
    # Trial finding S21-8: a process stopped (Ctrl-Z) or stuck while it held the
    # opening lock made every other command wait 30 s, silently.
    expected = fp(ctx)["fingerprint"]  # the index exists: only the lock is in the way
    lock = f"{cache / DB_NAME}.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, lock], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with open(f"/proc/{holder.pid}/comm") as f:
            who = f"process {holder.pid} ({f.read().strip()}"
        env = dict(os.environ, CTXPACK_CACHE_DIR=str(cache), CTXPACK_WATCH="0",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        started = time.monotonic()
        run = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "fingerprint", str(ctx)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert run.stderr is not None
        first = run.stderr.readline()
        noted = time.monotonic() - started
        out, rest = run.communicate(timeout=60)
        took = time.monotonic() - started
        # A note after OPEN_LOCK_NOTE (1 s) naming the lock file and its holder, then the answer
        # without the index after OPEN_LOCK_TIMEOUT (5 s), with the unusable-cache warning.
        assert first == (f"ctxpack: note: waiting for {who}) to finish opening the index ({lock}); "
                         f"going on without the index after 5 s\n"), first
        assert noted < store.OPEN_LOCK_NOTE + 4, noted  # interpreter start-up at this load aside
        assert run.returncode == 0 and out.strip() == expected
        assert rest == (f"ctxpack: warning: cannot use the index at {cache / DB_NAME} ({who}) has held {lock} "
                        f"for 5 s); working without it (every file is read)\n"), rest
        assert store.OPEN_LOCK_TIMEOUT <= took < store.OPEN_LOCK_TIMEOUT + 6, took  # was 30 s
        # A stopped holder will not let go: no waiting past the note's time, the warning says why.
        holder.send_signal(signal.SIGSTOP)
        res = subprocess.run([sys.executable, "-m", "ctxpack.cli", "fingerprint", str(ctx)], env=env, text=True,
                             capture_output=True, timeout=60)
        assert res.returncode == 0 and res.stdout.strip() == expected
        assert res.stderr == (f"ctxpack: warning: cannot use the index at {cache / DB_NAME} ({who}, stopped) holds "
                              f"{lock}); working without it (every file is read)\n"), res.stderr
        # In one process, a second open soon after does not wait again (pack --snapshot, build open twice).
        started = time.monotonic()
        first_idx = Index(str(cache))
        between = time.monotonic()
        second_idx = Index(str(cache))
        done = time.monotonic()
        assert not first_idx.usable and not second_idx.usable
        assert between - started >= store.OPEN_LOCK_NOTE and done - between < 0.5, (between - started, done - between)
        assert second_idx.warning == (f"cannot use the index at {cache / DB_NAME} ({who}, stopped) still holds "
                                      f"{lock}); working without it (every file is read)")
    finally:
        holder.send_signal(signal.SIGCONT)
        holder.kill()
        holder.wait(10)
    store._gave_up.clear()
    with Index(str(cache)) as idx:  # the lock free again: used again
        assert idx.usable


def test_entries_seam_gives_the_same_fingerprint(ctx: Path) -> None:
    from ctxpack.walker import entries_for_builder

    c = ctxpack.open_context(ctx)
    walked = _api_fp(ctx)
    with Index() as idx:
        given = fingerprint(c, idx, entries=list(entries_for_builder(c)))
    assert given.fingerprint == walked.fingerprint and given.hashed == 0
