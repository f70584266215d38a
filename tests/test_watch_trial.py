"""The watch defects a real-user trial found (issue 14; /work/trial-findings.md
numbers in each test's name or docstring): a real watcher (inotify) on its
own thread, or ``ctxpack watch`` in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxpack.errors import ContextRemovedError
from relays import Relay
from tests.test_watch import Running
from tests.test_watch_cli import WatchProcess, ctxpack

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="inotify tests need Linux")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tree(root: Path, dockerignore: str, dockerfile: str) -> Path:
    (root / "src").mkdir(parents=True)
    (root / ".dockerignore").write_text(dockerignore)
    (root / "Dockerfile").write_text(dockerfile)
    (root / "src/main.py").write_text("print(1)\n")
    (root / "go.mod").write_text("module x\n")
    return root


@pytest.fixture
def running(tmp_path: Path, cache: Path) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        r.stop()


def test_10_dockerfile_edit_is_a_delta_when_the_rules_exclude_it(tmp_path: Path, cache: Path,
                                                                 running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "Dockerfile\n", "FROM scratch\nCOPY src /src\n")  # as docker's tutorial
    r = Running(root, cache)
    running.append(r)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\nLABEL edited=1\n")
    d = r.last()
    assert not d.changed and d.rebuild and d.meta == [("Dockerfile", "edited")]
    assert d.summary() == "Dockerfile edited"
    (root / "Dockerfile.dockerignore").write_text("Dockerfile\nsrc/other\n")  # BuildKit: takes over .dockerignore
    d = r.last()
    assert d.meta == [("Dockerfile.dockerignore", "in use instead of .dockerignore")]


def test_10_dockerfile_edit_is_a_delta_under_minimal(tmp_path: Path, cache: Path, running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\nCOPY src /src\n")
    r = Running(root, cache, minimal=True)
    running.append(r)
    n = len(r.deltas)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\nRUN test -f /src/missing.py\n")
    d = r.last()
    assert len(r.deltas) == n + 1 and d.rebuild and ("Dockerfile", "edited") in d.meta
    os.utime(root / "Dockerfile")  # no edit: no delta
    r.sync()
    assert len(r.deltas) == n + 1


def test_2_directories_are_not_counted_as_files(tmp_path: Path, cache: Path, running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\n")
    r = Running(root, cache)
    running.append(r)
    (root / "src/newdir").mkdir()
    (root / "src/newdir/a.js").write_text("a\n")
    (root / "src/newdir/b.js").write_text("b\n")
    d = r.last()
    while len(d.added) < 3:  # the directory and its files may settle apart
        time.sleep(0.05)
        d = r.last()
    assert d.summary() == "+2 ~0 -0 files (+4 B); +1 ~0 -0 dir"
    j = d.to_json()
    assert j["files"] == {"added": 2, "modified": 0, "removed": 0} and j["dirs"]["added"] == 1
    assert j["added"][0] == {"path": "src/newdir", "kind": "dir", "bytes": 0}
    assert j["added"][1] == {"path": "src/newdir/a.js", "kind": "file", "bytes": 2}
    assert j["bytes"] == 4


def test_22_no_zero_delta_after_a_rescan_that_changed_nothing(tmp_path: Path, cache: Path,
                                                            running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "*.log\n", "FROM scratch\n")
    r = Running(root, cache)
    running.append(r)
    n = len(r.deltas)
    (root / ".dockerignore").write_text("[\n")
    assert r.w.sync(10) is None
    (root / ".dockerignore").write_text("*.log\n")  # fixed, as it was
    r.sync()
    assert len(r.deltas) == n, r.deltas[n:]  # no `+0 ~0 -0 files` line
    assert any(x.startswith("rescanned (retrying after an error): nothing changed") for x in r.notes), r.notes


def test_26_affected_instructions_with_a_whole_context_copy(tmp_path: Path, cache: Path,
                                                            running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch AS builder\nCOPY go.mod ./\nRUN true\nCOPY . .\n")
    r = Running(root, cache, minimal=True)
    running.append(r)
    assert r.w.ctx.analysis is not None and r.w.ctx.analysis.whole_context
    (root / "go.mod").write_text("module y\n")
    assert r.last().instructions == ["COPY go.mod (line 2, stage builder)", "COPY . (line 4, stage builder)"]
    (root / "src/main.py").write_text("print(2)\n")
    assert r.last().instructions == ["COPY . (line 4, stage builder)"]


def test_17_context_directory_removed_stops_the_watcher(tmp_path: Path, cache: Path) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\n")
    r = Running(root, cache)
    try:
        shutil.rmtree(root)
        r.thread.join(10)
        assert not r.thread.is_alive()
        assert isinstance(r.w.failed, ContextRemovedError), r.w.failed
        assert str(root) in str(r.w.failed) and r.w.failed.exit_code == 6
    finally:
        r.stop()


def test_17_cli_names_the_removed_directory_and_exits_6(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "a").write_text("a")
    w = WatchProcess([str(root)], tmp_path / "cache")
    assert any(": 1 entry, 1 B; 1 directory watched" in e for e in w.err), w.err
    shutil.rmtree(root)
    rc = w.proc.wait(20)
    w.stop()
    assert rc == 6, w.err
    assert f"ctxpack: error: {root}: the context directory was removed" in "".join(w.err)


def test_22_sigterm_stops_promptly(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\n")
    w = WatchProcess([str(root)], tmp_path / "cache")
    t = time.monotonic()
    assert w.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t < 1.0


def test_11_build_options_only_with_build(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\n")
    p = ctxpack(["watch", str(root), "--no-cache", "--label", "a=b"], tmp_path / "cache")
    assert p.returncode == 2 and "--label, --no-cache: only with --build" in p.stderr, p.stderr


# -- watch --build on the real engine (tests/dockerd.py: 20.10, classic by default) ---------------------------
def _builds(w: WatchProcess) -> list[dict[str, object]]:
    return [json.loads(x)["build"] for x in w.lines if x.startswith('{"build"')]


def _deltas(w: WatchProcess) -> list[dict[str, object]]:
    return [json.loads(x) for x in w.lines if x.startswith('{"generation"')]


def _wait(w: WatchProcess, pred, timeout: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        assert w.proc.poll() is None, "".join(w.err)
        time.sleep(0.1)
    raise AssertionError((w.lines, "".join(w.err)))


def _images(w: WatchProcess) -> list[str]:
    return [str(b["image"]) for b in _builds(w) if "image" in b]


def test_23_watch_build_watches_the_builders_own_rules(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The engine's default builder is classic: ``.dockerignore`` applies,
    not ``Dockerfile.dockerignore`` (BuildKit's); an edit the classic build
    sends rebuilds, one it does not send does not."""
    root = tmp_path / "ctx"
    for d in ("src/u", "docs"):
        (root / d).mkdir(parents=True)
    (root / ".dockerignore").write_text("docs\n")
    (root / "Dockerfile.dockerignore").write_text("src/u\n")
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx\n")
    (root / "src/u/c.txt").write_text("a\n")
    (root / "docs/d.txt").write_text("a\n")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    try:
        assert any("the classic builder's context" in e for e in w.err), w.err
        _wait(w, lambda: len(_images(w)) == 1)
        (root / "docs/d.txt").write_text("not sent by the classic build\n")
        (root / "src/u/c.txt").write_text("sent by the classic build\n")
        _wait(w, lambda: len(_images(w)) == 2)
        paths = [str(a["path"]) for d in _deltas(w) for a in d["modified"]]  # type: ignore[union-attr]
        assert paths == ["src/u/c.txt"], w.lines
        assert _images(w)[1] != _images(w)[0]
    finally:
        assert w.stop() == 0


def test_10_11_dockerfile_edit_rebuilds_with_build_options(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Dockerfile excluded by .dockerignore (docker's tutorial): its edit
    alone rebuilds; --build-arg and --label are build options (no --minimal
    needed)."""
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / ".dockerignore").write_text("Dockerfile\n")
    (root / "Dockerfile").write_text("FROM bb:latest\nARG A\nLABEL a=$A\nCOPY src /src\n")
    (root / "src/a.txt").write_text("a\n")
    iid = tmp_path / "iid"
    w = WatchProcess([str(root), "--json", "--build", "--build-arg", "A=one", "--label", "trial=11",
                      "--iidfile", str(iid), "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    try:
        _wait(w, lambda: len(_images(w)) == 1)
        labels = dockerd.client.inspect_image(_images(w)[0])["Config"]["Labels"]
        assert labels["a"] == "one" and labels["trial"] == "11"
        with open(root / "Dockerfile", "a") as f:
            f.write("LABEL edited=1\n")
        _wait(w, lambda: len(_images(w)) == 2)
        assert _deltas(w)[-1]["meta"] == [{"path": "Dockerfile", "change": "edited"}]
        assert dockerd.client.inspect_image(_images(w)[1])["Config"]["Labels"]["edited"] == "1"
        assert iid.read_text() == _images(w)[1]  # --iidfile: the latest build's
    finally:
        assert w.stop() == 0


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_12_failed_build_shows_the_failing_steps_lines(dockerd, tmp_path: Path, builder: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nRUN echo fine\nRUN echo npm-ERR-the-cause && false\n")
    w = WatchProcess([str(root), "--build", "--builder", builder, "--network", "none", "-H", f"unix://{dockerd.socket}"],
                     tmp_path / "cache")
    try:
        _wait(w, lambda: any("build failed" in e for e in w.err))
        err = "".join(w.err)
        shown = [x.rstrip("\n") for x in w.err if x.startswith("  | ")]
        assert any(x.endswith(" npm-ERR-the-cause") or x == "  | npm-ERR-the-cause" for x in shown), err
        assert not any(x.endswith("fine") for x in shown), err  # the earlier step's output is not the failing step's
    finally:
        assert w.stop() == 0


def test_build_takes_walked_entries_from_the_hook(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``build(walked=)``: the entries it returns are what is packed (here
    one file left out on purpose: another image), ``None`` walks."""
    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine
    from ctxpack.walker import walk_all

    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx\n")
    (root / "a.txt").write_text("a\n")
    (root / "b.txt").write_text("b\n")
    seen: list[object] = []

    def walked(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx)
        return None

    def without_b(ctx):  # type: ignore[no-untyped-def]
        entries = [e for e in walk_all(ctx) if e.path != "b.txt"]
        for e in entries:
            e.stat = os.lstat(os.path.join(ctx.root, e.path))
        return entries

    opts = BuildOptions(builder="classic", minimal=False, record_snapshot=False)
    engine = Engine.connect(f"unix://{dockerd.socket}")
    try:
        walked_image = build(str(root), engine, opts, walked=walked).image_id
        plain_image = build(str(root), engine, opts).image_id
        hooked_image = build(str(root), engine, opts, walked=without_b).image_id
    finally:
        engine.close()
    assert len(seen) == 1 and getattr(seen[0], "root") == str(root.resolve())
    assert walked_image == plain_image != hooked_image


def test_23_watch_build_watches_the_minimal_context_the_build_sends(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "ctx"
    for d in ("src", "other"):
        (root / d).mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /src\n")
    (root / "src/a.txt").write_text("a\n")
    (root / "other/x.txt").write_text("x\n")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    try:
        assert any("the classic builder's context, minimal" in e for e in w.err), w.err
        _wait(w, lambda: len(_images(w)) == 1)
        (root / "other/x.txt").write_text("not sent: no build\n")
        (root / "src/a.txt").write_text("sent\n")
        _wait(w, lambda: len(_images(w)) == 2)
        assert [str(m["path"]) for d in _deltas(w) for m in d["modified"]] == ["src/a.txt"]  # type: ignore[union-attr]
        assert _deltas(w)[-1]["instructions"] == ["COPY src (line 2, stage 0)"]
    finally:
        assert w.stop() == 0


def test_23_watch_build_widens_to_what_a_later_build_sends(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A Dockerfile edit moves to a base image with ONBUILD triggers (only
    the engine knows them): the build sends more than the watcher's minimal
    set, and the watcher then watches the whole context."""
    from ctxpack.engine.builder import BuildOptions, build
    from ctxpack.engine.client import Engine

    base = tmp_path / "base"
    base.mkdir()
    (base / "Dockerfile").write_text("FROM bb:latest\nONBUILD COPY other /other\n")
    engine = Engine.connect(f"unix://{dockerd.socket}")
    try:
        build(str(base), engine, BuildOptions(tags=["onb:trial"], builder="classic", record_snapshot=False))
    finally:
        engine.close()
    root = tmp_path / "ctx"
    for d in ("src", "other"):
        (root / d).mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /src\n")
    (root / "src/a.txt").write_text("a\n")
    (root / "other/x.txt").write_text("x\n")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    try:
        assert any("minimal" in e for e in w.err if "watching" in e), w.err
        _wait(w, lambda: len(_images(w)) == 1)
        (root / "Dockerfile").write_text("FROM onb:trial\nCOPY src /src\n")
        _wait(w, lambda: len(_images(w)) == 2)
        _wait(w, lambda: any("ONBUILD" in str(d["rescan"]) for d in _deltas(w)) or
              any("ONBUILD" in e for e in w.err))
        def idle() -> bool:
            b = _builds(w)
            return sum("started" in x for x in b) == sum(("image" in x or "error" in x or "cancelled" in x) for x in b)

        _wait(w, idle)
        time.sleep(0.5)
        _wait(w, idle)
        n = len(_images(w))
        (root / "other/x.txt").write_text("read by the ONBUILD COPY\n")
        _wait(w, lambda: len(_images(w)) == n + 1)
        assert [str(m["path"]) for m in _deltas(w)[-1]["modified"]] == ["other/x.txt"]  # type: ignore[union-attr]
    finally:
        assert w.stop() == 0


def test_22_a_write_in_phases_is_one_build(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Three writes 0.15 s apart (a tool writing in phases, as git does)
    settle as separate deltas; ``watch --build`` starts one build for them,
    not one per delta that the next cancels."""
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /src\n")
    (root / "src/a.txt").write_text("a\n")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    try:
        _wait(w, lambda: len(_images(w)) == 1)
        for i in range(3):
            (root / f"src/{i}.txt").write_text(f"{i}\n")
            time.sleep(0.15)
        _wait(w, lambda: len(_images(w)) == 2)
        time.sleep(1)
        assert len(_deltas(w)) >= 2  # the watcher's deltas stay as they settle
        b = _builds(w)
        assert sum("started" in x for x in b) == 2 and not any(x.get("cancelled") for x in b), b
    finally:
        assert w.stop() == 0


def test_22_minimal_without_a_dockerfile_names_the_directory(tmp_path: Path, cache: Path,
                                                             running: list[Running]) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\nCOPY src /src\n")
    r = Running(root, cache, minimal=True)
    running.append(r)
    (root / "Dockerfile").unlink()  # a branch switch
    assert r.w.sync(10) is None
    assert any(f"--minimal needs a Dockerfile: there is none in {root}" in n for n in r.notes), r.notes
    (root / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")  # back as it was
    r.sync()
    assert not any("+0 ~0 -0" in d.summary() for d in r.deltas)


def test_23_engine_answering_late_decides_the_rules_then(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No engine at the start: the watcher runs, the build fails (exit 5 in
    its line); once the engine answers, the build asks it which builder
    runs and the watcher switches to that builder's rules (classic here)."""
    root = tmp_path / "ctx"
    (root / "src/u").mkdir(parents=True)
    (root / ".dockerignore").write_text("docs\n")
    (root / "Dockerfile.dockerignore").write_text("src/u\n")  # BuildKit's rules: the watcher's until then
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY . /ctx\n")
    (root / "src/a.txt").write_text("a\n")
    path = str(tmp_path / "late.sock")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{path}"], tmp_path / "cache")
    proxy = None
    try:
        assert any("did not answer" in e for e in w.err), w.err
        _wait(w, lambda: any(b.get("exit_code") == 5 for b in _builds(w)))
        proxy = Relay(path, dockerd.socket)
        (root / "src/a.txt").write_text("b\n")
        _wait(w, lambda: len(_images(w)) == 1)
        _wait(w, lambda: any("the engine answered" in str(d["rescan"]) for d in _deltas(w)) or
              any("the engine answered" in e for e in w.err))
        n = len(_images(w))
        (root / "src/u/c.txt").write_text("sent by the classic build\n")  # excluded by BuildKit's rules
        _wait(w, lambda: any(str(a["path"]) == "src/u/c.txt" for d in _deltas(w) for a in d["added"]))  # type: ignore[union-attr]
        _wait(w, lambda: len(_images(w)) > n)
    finally:
        assert w.stop() == 0
        if proxy is not None:
            proxy.close()


def test_12_failing_step_picks_the_failing_steps_lines() -> None:
    from ctxpack.cli.watching import FAILING_LINES, failing_step

    classic = "Step 1/3 : FROM bb\n ---> abc\nStep 2/3 : RUN echo fine\nfine\nStep 3/3 : RUN x\nboom\n"
    assert failing_step(classic) == ["Step 3/3 : RUN x", "boom"]
    buildkit = ("#4 [2/3] RUN echo fine\n#4 0.2 fine\n#4 DONE 0.3s\n\n#5 [3/3] RUN x\n#5 0.1 boom\n"
                "#5 ERROR: process did not complete successfully\nctxpack: a note\n")
    assert failing_step(buildkit) == ["#5 [3/3] RUN x", "#5 0.1 boom", "#5 ERROR: process did not complete successfully"]
    assert len(failing_step("Step 1/1 : RUN y\n" + "line\n" * 100)) == FAILING_LINES


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_22_watch_build_stops_promptly_between_builds(dockerd, tmp_path: Path, sig: int) -> None:  # type: ignore[no-untyped-def]
    root = _tree(tmp_path / "ctx", "", "FROM bb:latest\nCOPY src /src\n")
    w = WatchProcess([str(root), "--json", "--build", "-H", f"unix://{dockerd.socket}"], tmp_path / "cache")
    _wait(w, lambda: len(_images(w)) == 1)
    time.sleep(1)  # idle: the server has made its fingerprint ahead
    t = time.monotonic()
    assert w.stop(sig) == 0, w.err
    took = time.monotonic() - t
    print(f"stopped {took:.3f} s after signal {sig}")
    assert took < 1.0, took


def test_23_dialect_that_disagrees_with_the_builder_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ctx", "", "FROM scratch\n")
    p = ctxpack(["watch", str(root), "--build", "--builder", "classic", "--dialect", "buildkit"], tmp_path / "cache")
    assert p.returncode == 2 and "--dialect buildkit and --builder classic disagree" in p.stderr, p.stderr


def test_11_watch_has_every_build_option_with_the_same_definition() -> None:
    from ctxpack.cli.building import build_command
    from ctxpack.cli.watching import watch_command

    def options(cmd) -> dict[str, tuple[object, ...]]:  # type: ignore[no-untyped-def]
        return {p.name: (tuple(p.opts), getattr(p, "help", None), repr(p.type), p.default, p.multiple)
                for p in cmd.params if p.name}

    build, watch = options(build_command), options(watch_command)
    own = {"directory", "dockerfile", "target", "build_args", "platform", "minimal", "ignore_file", "quiet",
           "print_endpoint"}  # the context's options (watch has its own, shared with ls/size) and build's alone
    assert set(build) - own <= set(watch)
    for name in set(build) - own:
        assert watch[name] == build[name], name
    assert {"no_cache", "labels", "secrets", "ssh", "no_session", "full", "compress", "progress", "iidfile",
            "network", "platform", "timeout", "docker_context", "pull"} <= set(watch)
