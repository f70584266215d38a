"""Property: whatever happens to a tree under a running watcher, its warm
state equals a fresh walk and a fresh fingerprint (both dialects, rules
drawn from a pool including exceptions that reach into excluded
directories), and what ``diff``, ``ls``, ``size`` and ``pack`` make of
the watcher's answers equals what they make without it."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxpack.explainer import list_entries, size
from ctxpack.index.snapshots import Delta, diff, snapshot
from ctxpack.tar.sinks import CallbackSink
from ctxpack.tar.writer import PackOptions, pack
from ctxpack.watch import channel, client
from ctxpack.index.store import Index
from test_watch import Running

DIRS = ["a", "b", "a/c", "node_modules", "a/node_modules", "logs", "b/node_modules/p"]
NAMES = ["x", "y.log", "keep", "z z", "ü"]
RULES = ["**/node_modules", "*.log", "**/*.log", "logs", "!logs/keep", "a/*", "!a/x", "b", "!**/keep", "a/c"]

paths = st.builds(lambda d, n: f"{d}/{n}", st.sampled_from(DIRS + [""]), st.sampled_from(NAMES)).map(lambda p: p.lstrip("/"))
ops = st.one_of(
    st.tuples(st.just("write"), paths, st.binary(max_size=40)),
    st.tuples(st.just("mkdir"), st.sampled_from(DIRS), st.none()),
    st.tuples(st.just("rm"), st.sampled_from(DIRS + NAMES) | paths, st.none()),
    st.tuples(st.just("move"), st.sampled_from(DIRS) | paths, st.sampled_from(DIRS) | paths),
    st.tuples(st.just("chmod"), paths, st.sampled_from([0o644, 0o755, 0o600])),
    st.tuples(st.just("link"), paths, st.sampled_from(["x", "../x", "a"])),
    st.tuples(st.just("rules"), st.lists(st.sampled_from(RULES), max_size=5), st.none()),
)


def _apply(root: Path, op: tuple[str, object, object]) -> None:
    kind, a, b = op
    p = root / str(a)
    try:
        if kind == "write":
            p.parent.mkdir(parents=True, exist_ok=True)
            if p.is_dir() and not p.is_symlink():
                return
            p.write_bytes(b)  # type: ignore[arg-type]
        elif kind == "mkdir":
            p.mkdir(parents=True, exist_ok=True)
        elif kind == "rm":
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        elif kind == "move":
            q = root / str(b)
            if p.exists() and not q.exists() and not str(b).startswith(str(a) + "/"):
                q.parent.mkdir(parents=True, exist_ok=True)
                os.rename(p, q)
        elif kind == "chmod":
            if p.exists() and not p.is_symlink():
                os.chmod(p, b)  # type: ignore[arg-type]
        elif kind == "link":
            if not p.exists() and not p.is_symlink():
                p.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(str(b), p)
        elif kind == "rules":
            (root / ".dockerignore").write_text("".join(r + "\n" for r in a))  # type: ignore[union-attr]
    except (NotADirectoryError, FileExistsError, IsADirectoryError):
        pass  # a path through a file: the op does not apply
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise  # a write through a link to itself (b/x -> x) does not apply either


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dialect=st.sampled_from(["buildkit", "classic"]), batches=st.lists(st.lists(ops, min_size=1, max_size=8), min_size=1, max_size=4))
def test_warm_state_equals_a_fresh_walk(tmp_path_factory: pytest.TempPathFactory, dialect: str,
                                        batches: list[list[tuple[str, object, object]]]) -> None:
    base = tmp_path_factory.mktemp("prop")
    root = base / "ctx"
    for d in ("a/c", "logs", "node_modules/q"):
        (root / d).mkdir(parents=True)
    (root / "a/x").write_text("x")
    (root / "logs/keep").write_text("k")
    (root / "node_modules/q/i.js").write_text("i")
    (root / ".dockerignore").write_text("**/node_modules\nlogs\n!logs/keep\n")
    os.environ["CTXPACK_CACHE_DIR"] = str(base / "cache")
    r = Running(root, base / "cache", dialect=dialect)
    try:
        with Index(str(base / "cache")) as idx:
            snapshot(r.open(), idx)
        for batch in batches:
            for op in batch:
                _apply(root, op)
            r.check()
        r.sync()
        ctx = r.open()
        with Index(str(base / "cache")) as idx:
            got = r.w.delta(idx)  # the library's diff over the watcher's entries
            assert got is not None
            cold = diff(ctx, idx)
        with channel.serving(r.w, ctx.root):
            served = channel.warm_diff(ctx)  # the server's own comparison of records and snapshot
            walked = {x: client.warm_walk(ctx, excluded=x) for x in (False, True)}  # ls, ls --excluded
            entries = {x: client.warm_entries(ctx, excluded=x) for x in (False, True)}  # pack, size
        assert got[1] is not None and cold is not None and isinstance(served, Delta)
        assert got[1].to_json() == cold.to_json() == served.to_json()
        for x in (False, True):
            assert walked[x] is not None and entries[x] is not None
            assert _listing(list_entries(ctx, excluded=x, walked=walked[x])) == _listing(list_entries(ctx, excluded=x))
        assert size(ctx, walked=entries[True]).to_json() == size(ctx).to_json()
        assert _tar(ctx, entries[False]) == _tar(ctx, None)
    finally:
        r.stop()
        os.environ.pop("CTXPACK_CACHE_DIR", None)
        shutil.rmtree(base, ignore_errors=True)


def _listing(entries: object) -> list[tuple[str, bool, str]]:
    """What ``ls`` and ``ls --excluded`` print of each entry."""
    return [(e.name, e.included, str(e.rule)) for e in entries]  # type: ignore[attr-defined]


def _tar(ctx: object, walked: object) -> bytes:
    out: list[bytes] = []
    pack(ctx, CallbackSink(out.append), PackOptions(), walked=walked)  # type: ignore[arg-type]
    return b"".join(out)
