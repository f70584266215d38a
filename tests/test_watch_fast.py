"""The console script's fast path (issue 14): ``diff``/``fingerprint``
answered by a running watcher before click is imported.

* its argument reader takes only what click reads the same way (a
  property test against click's own parser, in process: milliseconds);
* the fields on the wire survive any name (undecodable bytes, newlines);
* with a watcher, the fast path prints what the click command prints with
  that watcher, byte for byte, stdout, stderr and exit status, and what
  it prints without any watcher (``fingerprint --json``'s ``hashed`` too:
  the files this command read to answer);
* as a process, an answered command loads no click; interleaved on one
  pipe (2>&1) the order is the click command's; a stopped (lagging) or
  killed watcher, or text click would print differently (a stream that
  cannot encode it), falls back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st


from ctxpack.cli.app import main as group
from ctxpack.cli.indexing import diff_command, fingerprint_command
from ctxpack import watchlink

from test_watch_cli import REPO, WatchProcess, _env

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="inotify tests need Linux")

# -- the argument reader against click's ---------------------------------------------------
_TOKENS = ["diff-dir", "other", "", "-", "--", "-f", "--file", "Dockerfile", "-fDockerfile", "--file=Dockerfile",
           "--dialect", "classic", "buildkit", "--dialect=classic", "--dialect=nope", "--ignore-file", "ign",
           "--ignore-file=ign", "--json", "--json=1", "--exit-code", "--minimal", "--target", "base", "--target=base",
           "--platform", "linux/arm64", "--build-arg", "A=1", "-h", "--help", "--jso", "-x"]


def _click_params(command: str, args: list[str]) -> dict[str, object] | None:
    cmd = diff_command if command == "diff" else fingerprint_command
    try:
        with cmd.make_context(command, list(args)) as ctx:
            return dict(ctx.params)
    except Exception:  # click's usage errors, --help's exit
        return None


@settings(max_examples=400, deadline=None)
@given(command=st.sampled_from(["diff", "fingerprint"]), args=st.lists(st.sampled_from(_TOKENS), max_size=6))
def test_fast_reader_takes_only_what_click_reads_the_same(command: str, args: list[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    old = os.getcwd()
    os.chdir(tmp_path_factory.getbasetemp())
    try:
        os.makedirs("diff-dir", exist_ok=True)
        got = watchlink.read(command, args)
        if got is None:
            return
        params = _click_params(command, args)
        assert params is not None, (command, args)  # the fast path never answers what click refuses
        directory, opts, flags = got
        assert params["directory"] == directory
        assert params["dockerfile"] == opts.get("dockerfile")
        assert params["dialect"] == opts.get("dialect", "buildkit")
        assert params["ignore_file"] == opts.get("ignore_file")
        assert params["as_json"] == ("--json" in flags)
        if command == "diff":
            assert params["exit_code"] == ("--exit-code" in flags)
        else:
            assert params["minimal"] == ("--minimal" in flags)
            assert params["target"] == opts.get("target") and params["platform"] == opts.get("platform")
            assert params["build_args"] == ()
    finally:
        os.chdir(old)


def test_fast_reader_leaves_click_its_cases() -> None:
    for args in (["--help"], ["a", "b"], ["-fDockerfile"], ["--build-arg", "A=1"], ["--json", "--json"], ["-f", "-"],
                 ["--dialect"], ["--", "dir"], ["--dialect", "--json"]):
        assert watchlink._parse("fingerprint", args) is None, args
    assert watchlink._parse("diff", ["--minimal"]) is None  # not diff's option
    from ctxpack.ignore.dialect import Dialect

    assert watchlink.DIALECTS == tuple(d.value for d in Dialect)
    assert watchlink.run(["ls"]) is None and watchlink.run([]) is None
    assert watchlink._parse("diff", ["d", "--file=x", "--dialect=classic", "--exit-code"]) == (
        "d", {"dockerfile": "x", "dialect": "classic"}, {"--exit-code"})


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=("Cs",)))
                | st.sampled_from(["", ":", "1:", "\n", "\udcff", "a\udc80b", "é"])))
def test_fields_survive_any_name(fields: list[str]) -> None:
    assert watchlink.unpack_fields(watchlink.pack_fields(fields)) == fields


def test_socket_names_are_fnv1a_128() -> None:
    # The published FNV-1a 128-bit vectors ("" is the offset basis), first 24 hex digits.
    assert watchlink.name_hash(b"") == "6c62272e07bb014262b82175"
    assert watchlink.name_hash(b"a") == "d228cb696f1a8caf78912b70"
    assert len({watchlink.socket_path(f"/src/app{i}") for i in range(1000)}) == 1000


def test_spec_fields_round_trip(tmp_path: Path) -> None:
    for kw in ({}, {"dockerfile": str(tmp_path / "D"), "ignore_file": "x", "minimal": True, "target": "t",
                    "platform": "linux/amd64", "build_args": {"A": "1", "B": ""}}):
        opts = {"dockerfile": None, "dialect": "classic", "ignore_file": None, "minimal": False, "target": None,
                "build_args": {}, "platform": None} | kw
        s = watchlink.spec(str(tmp_path), **opts)  # type: ignore[arg-type]
        assert s is not None and watchlink.spec_of_fields(watchlink.spec_fields(s)) == s
    with pytest.raises(ValueError):
        watchlink.unpack_fields(b"5:abc")


# -- with a running watcher -----------------------------------------------------------------
@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for d in ("src/app", "node_modules/a", "docs"):
        (root / d).mkdir(parents=True)
    (root / ".dockerignore").write_text("**/node_modules\n")
    (root / "other.ignore").write_text("docs\n")
    (root / "Dockerfile").write_text("FROM scratch AS base\nCOPY src /src\nFROM base\n")
    (root / "src/app/main.py").write_text("print('hi')\n")
    (root / "docs/readme.md").write_text("# docs\n")
    return root


@pytest.fixture
def watching(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WatchProcess]:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(cache))
    monkeypatch.delenv("CTXPACK_WATCH", raising=False)
    monkeypatch.chdir(tree)  # the watcher's and the clients' directory: notes may name paths relative to it
    r = CliRunner().invoke(group, ["snapshot", "."])
    assert r.exit_code == 0, r.output
    w = WatchProcess(["."], cache)
    (tree / "src/app/new.py").write_text("n" * 10)
    (tree / "src/app/main.py").write_text("changed\n")
    yield w
    w.stop()


def _click(args: list[str], **env: str) -> tuple[str, str, int]:
    r = CliRunner().invoke(group, args, env=env or None)
    return r.stdout, r.stderr, r.exit_code


def _fast(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str, int] | None:
    capsys.readouterr()
    code = watchlink.run(args)
    out, err = capsys.readouterr()
    if code is None:
        assert out == err == ""  # nothing printed before falling back
        return None
    return out, err, code


# fingerprint --json first: the watcher's first fingerprint of the generation hashes the files
# changed since the index's state (a diff first would have hashed them for it).
CASES = [["fingerprint", "--json", "."], ["diff"], ["diff", "--json"], ["diff", ".", "--exit-code"],
         ["diff", "--dialect=buildkit", "--exit-code"], ["fingerprint"], ["fingerprint", "--dialect", "buildkit", "."],
         # naming the default Dockerfile is the same context: the watcher answers (trial finding S22)
         ["diff", "-f", "Dockerfile"], ["fingerprint", "--file=./Dockerfile", "."]]


def test_fast_path_prints_what_the_command_prints(watching: WatchProcess, capsys: pytest.CaptureFixture[str]) -> None:
    for args in CASES:
        got = _fast(args, capsys)
        assert got is not None, args  # the watcher answered
        with_watcher, without = _click(args), _click(args, CTXPACK_WATCH="0")
        assert got == with_watcher, args
        # fingerprint --json too: `hashed` counts the files this command read to answer, none
        # when the watcher answers (it said the files the watcher hashed for this generation,
        # on every query of it: trial finding S21-4), none without it (the watcher's index state).
        assert got == without, args
    assert "+ src/app/new.py  10 B" in _fast(["diff"], capsys)[0]  # type: ignore[index]
    assert _fast(["diff", "--exit-code"], capsys)[2] == 1  # type: ignore[index]


def test_fast_path_declines_what_the_watcher_was_not_started_with(watching: WatchProcess, tree: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # Other options than the watcher's: no answer, and the command as always.
    for args in (["diff", "--dialect", "classic"], ["fingerprint", "--minimal"], ["diff", "--ignore-file", "other.ignore"],
                 ["fingerprint", "-f", "Dockerfile.other"]):  # another Dockerfile
        assert _fast(args, capsys) is None, args
    # A changed input: no answer until the watcher has re-read it, then the new one.
    before = _fast(["fingerprint"], capsys)
    (tree / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    got = _until(lambda: _fast(["fingerprint"], capsys), lambda g: g is not None and g != before)
    assert got == _click(["fingerprint"]) == _click(["fingerprint"], CTXPACK_WATCH="0")


def _until(get, done, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if done(got):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.1)


def test_notes_are_said_as_the_command_says_them(watching: WatchProcess, tree: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tree / "Dockerfile").unlink()  # a note: no Dockerfile (relative to the watcher's directory)
    got = _until(lambda: _fast(["fingerprint"], capsys), lambda g: g is not None and "no Dockerfile" in g[1])
    assert got == _click(["fingerprint"]) == _click(["fingerprint"], CTXPACK_WATCH="0")


def _script(args: list[str], cache: Path, cwd: Path, *, merged: bool = False, **extra: str) -> tuple[str, str, int, bool]:
    """``ctxpack ARGS`` as the console script runs it: (stdout, stderr, exit, click loaded)."""
    code = ("import atexit, sys\n"
            "atexit.register(lambda: sys.__stderr__.write('\\nCLICK=%s' % ('click' in sys.modules)))\n"
            "from ctxpack.cli import main\nsys.argv[0] = 'ctxpack'\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(cache, **extra), timeout=120,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merged else subprocess.PIPE)
    out = r.stdout.decode("utf-8", "surrogateescape")
    err = (r.stderr or b"").decode("utf-8", "surrogateescape")
    text, _, flag = (out if merged else err).rpartition("\nCLICK=")
    if merged:
        return text, "", r.returncode, flag == "True"
    return out, text, r.returncode, flag == "True"


def test_as_a_process_no_click_same_bytes_and_fallbacks(watching: WatchProcess, tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    slow = [sys.executable, "-c", "from ctxpack.cli.app import main; main()"]  # the click command, same watcher
    for args in (["diff"], ["fingerprint", "--json"], ["fingerprint"]):
        if args == ["fingerprint"]:  # a note on stderr before the output: the order on one pipe matters
            (tree / "Dockerfile").unlink()
            _until(lambda: _script(args, cache, tree), lambda got: not got[3] and "no Dockerfile" in got[1])
        out, err, rc, click_loaded = _script(args, cache, tree)
        r = subprocess.run([*slow, *args], cwd=tree, env=_env(cache), capture_output=True, text=True, timeout=120)
        assert not click_loaded and (out, err, rc) == (r.stdout, r.stderr, r.returncode), args
        merged, _, rc, click_loaded = _script(args, cache, tree, merged=True)
        r = subprocess.run([*slow, *args], cwd=tree, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=120)
        assert not click_loaded and merged == r.stdout, args
    assert "no Dockerfile" in merged
    (tree / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    _until(lambda: _script(["diff"], cache, tree), lambda got: not got[3])  # answered again
    # A name with an escape sequence: shown escaped by both (it was click.echo's to strip off a
    # pipe, so the fast path fell back), answered by the watcher.
    (tree / "src/app/\x1b[31mred").write_text("r")
    out, err, rc, click_loaded = _until(lambda: _script(["diff"], cache, tree), lambda got: "red" in got[0])
    cold = _script(["diff"], cache, tree, CTXPACK_WATCH="0")
    assert not click_loaded and (out, err, rc) == cold[:3] and "+ src/app/\\x1b[31mred  1 B\n" in out
    # Text the stream cannot encode as click would (an ASCII stdout re-wrapped by click): click prints it.
    (tree / "src/app/caf\u00e9").write_text("c")
    ascii_ = _until(lambda: _script(["diff"], cache, tree, PYTHONIOENCODING="ascii"), lambda got: "caf" in got[0])
    assert ascii_[3] and ascii_[2] == 0 and ascii_[:3] == _script(["diff"], cache, tree, CTXPACK_WATCH="0", PYTHONIOENCODING="ascii")[:3]
    cold = _script(["diff"], cache, tree, CTXPACK_WATCH="0")
    # Stopped (Ctrl-Z) watcher: seen stopped at once, not waited for (trial finding: each layer
    # waited its timeout, 3 x 5 s for a diff); a normal run.
    started = time.monotonic()
    _script(["diff"], cache, tree, CTXPACK_WATCH="0")
    alone = time.monotonic() - started  # the command without any watcher, at this load
    os.kill(watching.proc.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 10
        while _proc_state(watching.proc.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        lag = _script(["diff"], cache, tree, CTXPACK_WATCH_TIMEOUT="10")
        waited = time.monotonic() - started
    finally:
        os.kill(watching.proc.pid, signal.SIGCONT)
    assert lag[2:] == (0, True) and (lag[0], lag[2]) == (cold[0], cold[2])
    note = f"ctxpack: note: the `ctxpack watch` of {tree.resolve()} is stopped (Ctrl-Z or SIGSTOP); going on without it"
    assert lag[1].startswith(note) and lag[1].count("ctxpack watch") == 1  # said once, before the command's own
    assert lag[1].split("\n", 1)[1] == cold[1]
    assert waited < 1.5 * alone + 3, (waited, alone)  # not one 10 s wait, nor three
    # A killed watcher leaves its socket: refused, the command runs.
    watching.stop(signal.SIGKILL)
    assert os.path.exists(watchlink.socket_path(str(tree.resolve())))
    dead = _script(["diff"], cache, tree)
    assert dead[3] and dead[:3] == cold[:3]
    assert REPO.is_dir()


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_stuck_watcher_costs_the_console_script_one_wait(tree: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A watcher that accepts and never answers (running, not stopped): the
    fast path waits its timeout once and the command's own asks do not
    wait again (they did: 3 waits for `ctxpack diff`)."""
    import socket
    import threading

    cache = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(cache))
    assert CliRunner().invoke(group, ["snapshot", str(tree)]).exit_code == 0
    started = time.monotonic()
    cold = _script(["diff"], cache, tree, CTXPACK_WATCH="0")
    alone = time.monotonic() - started
    path = watchlink.socket_path(str(tree.resolve()))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    held: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(8)
        server.settimeout(0.2)
        done = threading.Event()

        def accept() -> None:
            while not done.is_set():
                try:
                    held.append(server.accept()[0])  # kept open, never answered
                except OSError:
                    continue

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            started = time.monotonic()
            got = _script(["diff"], cache, tree, CTXPACK_WATCH_TIMEOUT="2")
            waited = time.monotonic() - started
        finally:
            done.set()
            t.join(5)
            for c in held:
                c.close()
    assert (got[0], got[2]) == (cold[0], cold[2]) and got[3]  # click ran the command as without a watcher
    note = f"ctxpack: note: the `ctxpack watch` of {tree.resolve()} did not answer in 2 s; going on without it"
    assert got[1].startswith(note) and got[1].count("ctxpack watch") == 1  # said once, not per layer that asks
    assert got[1].split("\n", 1)[1] == cold[1]
    assert len(held) == 1, len(held)  # asked once
    assert 2 <= waited < 2 + 1.5 * alone + 1.5, (waited, alone)  # one 2 s wait, not three (>= 6 s)


def test_a_failing_answer_leaves_the_server_serving(tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxpack.context import open_context
    from ctxpack.watch.channel import Inputs, Server
    from ctxpack.watch.watcher import Watcher

    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CTXPACK_WATCH_TIMEOUT", "5")
    s = watchlink.spec(str(tree), dockerfile=None, dialect="buildkit", ignore_file=None, minimal=False, target=None,
                  build_args={}, platform=None)
    assert s is not None
    inputs = Inputs(s)
    notes: list[str] = []
    w = Watcher(lambda: inputs.opening(lambda: open_context(tree)), index_dir=str(tmp_path / "cache"),
                on_note=notes.append)
    import threading

    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    assert w.ready.wait(30)
    server = Server(w, str(tree), inputs=inputs)
    try:
        assert watchlink.ask_fast("fingerprint", [], s) is not None
        real = server.fingerprint
        server.fingerprint = lambda index: 1 / 0  # type: ignore[assignment,method-assign]
        started = time.monotonic()
        assert watchlink.ask_fast("fingerprint", [], s) is None
        assert time.monotonic() - started < 2  # closed at once, not left to time out
        assert any("ZeroDivisionError" in n for n in notes), notes
        server.fingerprint = real  # type: ignore[method-assign]
        assert watchlink.ask_fast("fingerprint", [], s) is not None  # still serving
    finally:
        server.close()
        w.stop()
        t.join(10)
        w.close()
