"""The forked walker (ctxpack.rows): same rows, same errors, same warnings
as walking in-process, and no process left behind whatever happens."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import built, dockerignores, trees
from trees import make_tree

import ctxpack
from ctxpack import rows
from ctxpack.context import Dialect
from ctxpack.errors import ContextError, CtxpackError, OutputError, PatternError
from ctxpack.packer import CallbackSink, PackOptions, Sink, pack
from ctxpack.rows import Row, WalkerDiedError, can_fork, row_batches

EXAMPLES = int(os.environ.get("CTXPACK_HYPOTHESIS_EXAMPLES", "150"))

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the forked walker needs os.fork")


def _children() -> set[int]:
    """Live (unreaped) children of this process, from /proc."""
    out: set[int] = set()
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
            out.update(int(p) for p in f.read().split())
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
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", **{f"f{i}": b"1" for i in range(1000)}})
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
    assert not out or len(b"".join(out)) < 600 * 1024  # no end-of-archive was written


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
    monkeypatch.setenv("CTXPACK_PARALLEL", "0")
    assert not can_fork()
    monkeypatch.delenv("CTXPACK_PARALLEL")
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not can_fork()  # another thread: a fork could inherit its locks
    finally:
        stop.set()
        t.join()
