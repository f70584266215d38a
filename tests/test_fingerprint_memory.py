"""A cold fingerprint streams: bounded memory, and walk order put right.

The walk is depth-first by name, the fingerprint sorts by whole paths
(``x.txt`` before ``x/a``); :class:`ctxpack.index.sorter.Reorder` does that
in a bounded window.  These tests make the window tiny so that every way a
row can go (released, late, spilled to the sorter, merged back) is taken,
and check the result against the recipe recomputed independently.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest
import xxhash

import ctxpack
from ctxpack.index import snapshots, sorter
from ctxpack.index.store import Index
from ctxpack.tar import rows
from trees import make_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(d))
    return d


def expected(root: Path, skip: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """docs/fingerprint.md's recipe over every entry below ``root``."""
    rels: list[bytes] = []
    broot = os.fsencode(root)
    for d, dirs, files in os.walk(broot):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(d, name), broot)
            if os.fsdecode(rel) not in skip:
                rels.append(rel)
    records = []
    for rel in sorted(rels):
        p = os.path.join(broot, rel)
        st = os.lstat(p)
        if os.path.islink(p):
            kind, value = b"l", os.readlink(p)
        elif os.path.isdir(p):
            kind, value = b"d", b""
        else:
            with open(p, "rb") as f:
                kind, value = b"f", xxhash.xxh3_128_hexdigest(f.read()).encode()
        records.append(rel + b"\0" + kind + b"\0" + f"{st.st_mode & 0o7777:o}".encode() + b"\0" + value + b"\n")
    return hashlib.sha256(b"ctxpack-fp1\n" + b"".join(records)).hexdigest()


TRICKY = [
    "x/a", "x/b/c", "x.txt", "x-1/z", "x 2", "x,v", "x/b.d/q", "x/b-c", "xa/1",
    "lodash/index.js", "lodash/fp/a.js", "lodash.merge/index.js", "lodash.merge/x/y", "lodash-es/m.js",
    "n\u00e9/a", "n\u00e9.txt", "ne/b", "raw\udcff/f", "raw/f", "A/B", "a/b", "Dockerfile",
] + [f"deep/d{i}/f{j}" for i in range(12) for j in range(6)] + [f"deep/d{i}.log" for i in range(12)]


@pytest.mark.parametrize("hold", [1, 2, 3, 7, 4096])
def test_tricky_orders_give_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hold: int) -> None:
    root = make_tree(tmp_path / "t", {p: p.encode("utf-8", "surrogateescape") for p in TRICKY})
    os.symlink("x.txt", root / "x.lnk")
    monkeypatch.setattr(rows, "BATCH", 1)  # the walker's rows one at a time: the window is worked out after each
    monkeypatch.setattr(sorter, "SPILL", 1)  # more than one window waiting goes to the sorter
    monkeypatch.setattr(snapshots, "PART", 5)  # many parts, merged into
    monkeypatch.setattr(sorter.Reorder.__init__, "__defaults__", (hold,))
    sorted_late: list[int] = []
    real_add = sorter.Sorter.add
    monkeypatch.setattr(sorter.Sorter, "add", lambda self, rows: (sorted_late.append(len(rows)), real_add(self, rows)))
    ctx = ctxpack.open_context(root)
    with Index() as idx:
        got = snapshots.fingerprint(ctx, idx)
    assert got.fingerprint == expected(root) and got.entries == len(list(ctxpack.list_entries(ctx)))
    assert bool(sorted_late) or hold > 3, sorted_late  # tiny windows do send rows to the sorter


def test_dockerfile_added_after_the_walk_is_merged_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BuildKit with the Dockerfile excluded: the walker adds it at the end
    (out of order: a late row, merged back in)."""
    root = make_tree(tmp_path / "t", {p: b"x" for p in TRICKY}, dockerignore="Dockerfile\n.dockerignore\n")
    monkeypatch.setattr(snapshots, "PART", 4)
    ctx = ctxpack.open_context(root)
    with Index() as idx:
        got = snapshots.fingerprint(ctx, idx)
    assert got.fingerprint == expected(root, skip={".dockerignore"})


def _peak(root: Path) -> int:
    ctx = ctxpack.open_context(root)
    with Index() as idx:
        idx.clear()
        tracemalloc.start()
        try:
            snapshots.fingerprint(ctx, idx, workers=1)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def test_cold_memory_does_not_grow_with_the_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With small parts and window, 4x the entries costs (almost) no more
    memory; holding ~150 bytes per entry would add about 1.3 MB here."""
    monkeypatch.setenv("CTXPACK_PARALLEL", "0")  # one process: all of it is traced
    monkeypatch.setattr(snapshots, "PART", 128)
    monkeypatch.setattr(sorter.Reorder.__init__, "__defaults__", (64,))

    def tree(name: str, n: int) -> Path:
        return make_tree(tmp_path / name, {f"pkg{i // 100}/m{i % 5}/file-{i}.js": b"x" for i in range(n)}
                         | {"Dockerfile": b"FROM scratch\n"})

    small, large = tree("small", 1000), tree("large", 4000)
    _peak(small)  # caches and imports warmed
    grew = _peak(large) - _peak(small)
    assert grew < 200_000, grew
