"""The forked walker (ctxpack.tar.rows): same rows, same errors, same warnings
as walking in-process, and no process left behind whatever happens."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import built, dockerignores, trees
from trees import make_tree

import ctxpack
from ctxpack.tar import rows, writer as packer
from ctxpack.context import Dialect
from ctxpack.errors import ContextError, CtxpackError, OutputError, PatternError
from ctxpack.tar.writer import PackOptions, iter_tar, pack
from ctxpack.tar.sinks import CallbackSink, Sink
from ctxpack.tar.rows import Row, can_fork, entry_row, row_batches
from ctxpack.errors import WalkerDiedError
from ctxpack.tar.header import END_OF_ARCHIVE

EXAMPLES = int(os.environ.get("CTXPACK_HYPOTHESIS_EXAMPLES", "150"))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the forked walker needs os.fork")


def _children() -> set[int]:
    """Live (unreaped) children of this process, from /proc."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                out.update(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return out


def _all_rows(ctx: ctxpack.BuildContext, fork: bool) -> list[Row] | tuple[type, str]:
    try:
        return list(chain.from_iterable(row_batches(ctx, fork=fork, headers=True)))
    except CtxpackError as e:
        return (type(e), str(e))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), dialect=st.sampled_from(list(Dialect)))
def test_forked_rows_equal_in_process_rows(data: st.DataObject, dialect: Dialect) -> None:
    nodes = data.draw(trees())
    ignore = data.draw(dockerignores(nodes))
    with built(nodes, ignore) as root:
        try:
            ctx = ctxpack.open_context(root, dialect=dialect.value)
        except CtxpackError:
            return
        assert _all_rows(ctx, fork=True) == _all_rows(ctx, fork=False)


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc to list child processes")
def test_more_batches_than_the_pipe_holds_and_nothing_left_behind(tmp_path: Path) -> None:
    files = {f"d{i // 100}/f{i:05d}": b"x" * (i % 7) for i in range(3000)}
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **files})
    ctx = ctxpack.open_context(root, dialect="classic")
    before = _children()
    forked = _all_rows(ctx, fork=True)
    assert isinstance(forked, list) and len(forked) == 3000 + 30 + 1
    assert forked == _all_rows(ctx, fork=False)
    assert _children() == before


def test_lazy_pattern_error_comes_from_the_child_with_file_and_line(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "abc": b"1", ".dockerignore": b"# x\na*[\n"})
    ctx = ctxpack.open_context(root, dialect="buildkit")
    with pytest.raises(PatternError) as err:
        list(chain.from_iterable(row_batches(ctx, fork=True)))
    assert err.value.line == 2 and err.value.source.endswith(".dockerignore")
    assert str(err.value) == _all_rows(ctx, fork=False)[1]  # type: ignore[index]


def test_a_walker_that_dies_is_an_error_not_a_short_tar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **{f"f{i:04d}": b"z" * 3000 for i in range(1000)}})
    real = rows.builder_rows

    def dying(ctx: ctxpack.BuildContext, *, headers: bool = False) -> Iterator[Row]:
        for n, row in enumerate(real(ctx, headers=headers)):
            if n == 600:
                os.kill(os.getpid(), signal.SIGKILL)  # runs in the forked child
            yield row

    monkeypatch.setattr(rows, "builder_rows", dying)
    out: list[bytes] = []
    with pytest.raises(WalkerDiedError, match="killed by SIGKILL"):
        pack(ctxpack.open_context(root), CallbackSink(out.append), PackOptions(parallel=True))
    data = b"".join(out)
    assert len(data) >= 1 << 20  # what came before was streamed ...
    assert not data.endswith(END_OF_ARCHIVE)  # ... and the archive was not closed as if complete


def test_unpicklable_error_still_arrives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n"})

    class Odd(Exception):
        def __init__(self) -> None:
            super().__init__("odd failure")
            self.fn = lambda: None  # pickle cannot carry this

    def failing(ctx: ctxpack.BuildContext, *, headers: bool = False) -> Iterator[Row]:
        raise Odd()
        yield  # pragma: no cover

    monkeypatch.setattr(rows, "builder_rows", failing)
    with pytest.raises(ContextError, match="walking the context failed: Odd: odd failure"):
        list(chain.from_iterable(row_batches(ctxpack.open_context(root), fork=True)))


class _FailingSink(Sink):
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        raise OutputError("no space left on device while writing the tar")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc to list child processes")
def test_output_error_stops_and_reaps_the_walker(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n",
                                      **{f"d{i % 50}/f{i}": b"y" * 5000 for i in range(4000)}})
    before = _children()
    with pytest.raises(OutputError):
        pack(ctxpack.open_context(root), _FailingSink(), PackOptions(parallel=True))
    assert _children() == before


def test_warnings_arrive_in_place(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "a": b"1", ".dockerignore": b"Dockerfile\n"})
    got: dict[bool, list[str]] = {}
    for parallel in (False, True):
        got[parallel] = []
        pack(ctxpack.open_context(root, dialect="buildkit"), CallbackSink(lambda b: None),
             PackOptions(parallel=parallel), warn=got[parallel].append)
    assert got[True] == got[False] and "Dockerfile is excluded by the ignore rules" in got[True][0]


def test_can_fork_only_when_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    monkeypatch.delenv("CTXPACK_PARALLEL", raising=False)
    assert can_fork()
    monkeypatch.setenv("CTXPACK_PARALLEL", "0")
    assert not can_fork()
    monkeypatch.delenv("CTXPACK_PARALLEL")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert not can_fork()  # one CPU: nothing to run in parallel
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threading, "active_count", lambda: 2)
    assert not can_fork()  # another thread: a fork could inherit its locks


def _tar(root: Path, dialect: str, **kw: Any) -> bytes:
    out: list[bytes] = []
    pack(ctxpack.open_context(root, dialect=dialect), CallbackSink(out.append), PackOptions(**kw))
    return b"".join(out)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), dialect=st.sampled_from(["classic", "buildkit"]), reproducible=st.booleans())
def test_forked_and_in_process_tars_are_the_same_bytes(data: st.DataObject, dialect: str, reproducible: bool) -> None:
    nodes = data.draw(trees())
    ignore = data.draw(dockerignores(nodes))
    with built(nodes, ignore) as root:
        got = []
        for parallel in (False, True):
            try:
                got.append(_tar(root, dialect, parallel=parallel, reproducible=reproducible))
            except CtxpackError as e:
                got.append((type(e), str(e)))  # type: ignore[arg-type]
        assert got[0] == got[1]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fast_path_and_slow_path_write_the_same_bytes(data: st.DataObject) -> None:
    """Rows with the walker's pre-encoded headers (the packer's inline path)
    and rows without (every entry through _Writer.row) give the same tar."""
    nodes = data.draw(trees())
    with built(nodes, None) as root:
        ctx = ctxpack.open_context(root, dialect="classic")
        try:
            entries = list(ctxpack.list_entries(ctx))
        except CtxpackError:
            return
        got = []
        for header in (True, False):
            out: list[bytes] = []
            w = packer._Writer(ctx.root, CallbackSink(out.append), PackOptions(), lambda m: None, None)
            try:
                w.rows([entry_row(e, header=header) for e in entries])
            except CtxpackError as e:
                got.append(repr(e).encode())
                continue
            finally:
                w.close_dir()
            w.flush()
            got.append(b"".join(out))
        assert got[0] == got[1]


def test_only_directories_still_stream(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n"})
    for i in range(4000):
        os.makedirs(root / f"d{i:04d}")
    sizes: list[int] = []
    pack(ctxpack.open_context(root), CallbackSink(lambda b: sizes.append(len(b))), PackOptions(parallel=True))
    assert len(sizes) >= 2 and max(sizes) <= (1 << 20) + 512 * 1024  # flushed as it goes, not at the end


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc to list child processes")
def test_no_process_to_be_had_walks_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "a/b": b"1"})
    expected = _tar(root, "classic", parallel=False)
    fds_before = len(os.listdir("/proc/self/fd"))

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # EAGAIN: a pids limit

    monkeypatch.setattr(os, "fork", no_fork)
    assert _tar(root, "classic", parallel=True) == expected
    assert len(os.listdir("/proc/self/fd")) == fds_before  # the pipe was closed


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc to list child processes")
def test_iter_tar_closed_early_leaves_no_walker(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **{f"d{i % 40}/f{i}": b"q" * 4000 for i in range(3000)}})
    before = _children()
    gen = iter_tar(ctxpack.open_context(root), PackOptions(parallel=True))
    next(gen)
    gen.close()
    assert _children() == before


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc to list child processes")
def test_iter_tar_walks_in_a_forked_child(tmp_path: Path) -> None:
    # The streaming API gets pack's speed: in a process with one thread the
    # walker is forked by default, before the producer thread starts (issue
    # 11), and the bytes are pack's.  A fresh interpreter has one thread.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs: with one, no walker is forked by design")
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **{f"d{i % 40}/f{i}": b"q" * 4000 for i in range(3000)}})
    code = (
        "import hashlib, os, sys, ctxpack\n"
        "from ctxpack.tar.writer import iter_tar\n"
        "me = os.getpid()\n"
        "kids = lambda: open(f'/proc/{me}/task/{me}/children').read().split()\n"
        "gen = iter_tar(ctxpack.open_context(sys.argv[1]))\n"
        "h = hashlib.sha256(next(gen))\n"
        "during = len(kids())\n"
        "for chunk in gen: h.update(chunk)\n"
        "print(during, len(kids()), h.hexdigest())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CTXPACK_PARALLEL"}
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    during, after, digest = proc.stdout.split()
    assert (during, after) == ("1", "0"), "iter_tar did not walk in a forked child (or left it behind)"
    out: list[bytes] = []
    pack(ctxpack.open_context(root), CallbackSink(out.append), PackOptions(parallel=False))
    assert digest == hashlib.sha256(b"".join(out)).hexdigest()


@pytest.mark.parametrize("fork", [False, True])
def test_rows_before_an_error_are_delivered_first(tmp_path: Path, fork: bool) -> None:
    # The broken exception is first evaluated for "b", the first path "b"
    # excludes (semantics vector 109): everything sorted before it is sent.
    files = {f"{i}": b"1" for i in range(10)}
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "b": b"1", ".dockerignore": b"b\n!b*[\n", **files})
    got: list[str] = []
    with pytest.raises(PatternError):
        with row_batches(ctxpack.open_context(root, dialect="buildkit"), fork=fork) as batches:
            for batch in batches:
                got.extend(r[0] for r in batch)
    assert got == [".dockerignore", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "Dockerfile"]
