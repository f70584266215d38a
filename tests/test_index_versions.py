"""Index files of several ctxpack versions in one cache, copies moved aside,
and what `diff` says about sizes and lost snapshots (trial findings 13, 9)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from ctxpack.cli import main
from ctxpack.index.store import APPLICATION_ID, DB_NAME, KEEP_ASIDE, LEGACY_NAME, SCHEMA_VERSION
from trees import make_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(d))
    return d


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "ctx", {"Dockerfile": b"FROM scratch\nCOPY . /\n", "src/a.py": b"print(1)\n"})


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def aside_copies(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if ".broken-" in p.name and not p.name.endswith(("-wal", "-shm")))


def old_release_index(path: Path, root: Path, schema: int) -> None:
    """An index as an earlier ctxpack release leaves it (its own schema,
    closed, no WAL left), holding a snapshot of ``root``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE contexts (id INTEGER PRIMARY KEY, root TEXT NOT NULL UNIQUE, last_used REAL NOT NULL)")
    con.execute("CREATE TABLE snapshots (ctx INTEGER, variant TEXT, taken_at REAL, fingerprint TEXT, "
                "entries INTEGER, files INTEGER, bytes INTEGER, paths BLOB, records BLOB)")
    con.execute("INSERT INTO contexts VALUES (1, ?, ?)", (str(root), time.time()))
    con.execute("INSERT INTO snapshots VALUES (1, 'buildkit|Dockerfile|-', 0, 'x', 0, 0, 0, x'', x'')")
    con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    con.execute(f"PRAGMA user_version = {schema}")
    con.commit()
    con.close()


def test_an_other_versions_index_is_kept_and_left_alone(ctx: Path, cache: Path) -> None:
    """Finding 13: two versions sharing a cache used to move each other's
    index aside on every run.  Now each has its own file: an earlier
    release's index.sqlite3 and a newer version's file are not touched,
    and this version's snapshots survive runs of the others."""
    legacy, newer = cache / LEGACY_NAME, cache / f"index-v{SCHEMA_VERSION + 1}.sqlite3"
    old_release_index(legacy, ctx, SCHEMA_VERSION - 1)
    old_release_index(newer, ctx, SCHEMA_VERSION + 1)
    before = digest(legacy), digest(newer)
    assert run("snapshot", str(ctx)).exit_code == 0
    (ctx / "src/a.py").write_text("print(2)\n")
    res = run("diff", str(ctx))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("M src/a.py (content)")
    assert (digest(legacy), digest(newer)) == before
    assert aside_copies(cache) == [] and (cache / DB_NAME).exists()
    info = json.loads(run("cache", "info", "--json").stdout)
    assert info["snapshots"] == 1 and info["aside"] == 0
    assert {(Path(o["path"]).name, o["schema"], o["newer"]) for o in info["other_versions"]} == {
        (LEGACY_NAME, SCHEMA_VERSION - 1, False), (newer.name, SCHEMA_VERSION + 1, True)}
    # cache clear --all empties this version's index only.
    res = run("cache", "clear", "--all")
    assert res.exit_code == 0 and f"kept {newer}" in res.stdout
    assert (digest(legacy), digest(newer)) == before


def test_the_earlier_releases_index_of_this_schema_is_copied(ctx: Path, cache: Path) -> None:
    """An upgrade keeps the snapshots: the unversioned index.sqlite3 of the
    same schema is copied to this version's file (and stays for the old
    release)."""
    assert run("snapshot", str(ctx)).exit_code == 0
    (cache / DB_NAME).rename(cache / LEGACY_NAME)  # as the release before the per-version names left it
    kept = digest(cache / LEGACY_NAME)
    for i in range(KEEP_ASIDE + 2):  # what that release's runs had piled up
        (cache / f"{LEGACY_NAME}.broken-2026010{i}-000000-1").write_bytes(b"x")
    (ctx / "README").write_text("hi\n")
    res = run("diff", "--json", str(ctx))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == [{"path": "README", "bytes": 3, "kind": "file"}]
    assert (cache / DB_NAME).exists() and digest(cache / LEGACY_NAME) == kept
    assert not [p for p in cache.iterdir() if ".adopt-" in p.name]
    assert len(aside_copies(cache)) == KEEP_ASIDE


def test_an_unreadable_index_loses_its_snapshot_loudly(ctx: Path, cache: Path) -> None:
    """The trial's repro: this version's file with another schema inside is
    not ours; it is moved aside and `diff` says the snapshot was in it,
    naming the copy, instead of "no snapshot yet"."""
    assert run("snapshot", str(ctx)).exit_code == 0
    con = sqlite3.connect(cache / DB_NAME)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 7}")
    con.commit()
    con.close()
    res = run("diff", str(ctx))
    assert res.exit_code == 2
    [copy] = aside_copies(cache)
    assert "no snapshot of" in res.stderr and "moved aside" in res.stderr and "held a snapshot" in res.stderr
    assert str(cache / copy) in res.stderr and "yet" not in res.stderr


def test_a_corrupt_index_gives_one_warning_naming_the_copy(ctx: Path, cache: Path) -> None:
    assert run("fingerprint", str(ctx)).exit_code == 0
    with open(cache / DB_NAME, "r+b") as f:
        f.write(b"garbage!" * 64)
    res = run("fingerprint", str(ctx))
    assert res.exit_code == 0
    [copy] = aside_copies(cache)
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(cache / copy) in warnings[0], res.stderr
    with open(cache / DB_NAME, "r+b") as f:  # again, through pack --snapshot
        f.write(b"garbage!" * 64)
    res = run("pack", "--snapshot", "-o", str(ctx.parent / "c.tar"), str(ctx))
    assert res.exit_code == 0, res.output
    new = [c for c in aside_copies(cache) if c != copy]
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(new) == 1 and len(warnings) == 1 and str(cache / new[0]) in warnings[0], res.stderr


def test_copies_moved_aside_are_bounded_counted_and_cleared(ctx: Path, cache: Path) -> None:
    """35 copies (101 MB) had piled up in the trial's cache: only the newest
    few are kept, `cache info` counts them, `cache clear --all` removes them."""
    assert run("fingerprint", str(ctx)).exit_code == 0
    old = [cache / f"{LEGACY_NAME}.broken-2026010{i}-000000-1" for i in range(6)]
    for p in old:
        p.write_bytes(b"x" * 1000)
        Path(f"{p}-wal").write_bytes(b"w")
    time.sleep(0.01)
    with open(cache / DB_NAME, "r+b") as f:
        f.write(b"garbage!" * 64)
    assert run("fingerprint", str(ctx)).exit_code == 0
    left = aside_copies(cache)
    assert len(left) == KEEP_ASIDE and any(n.startswith(DB_NAME) for n in left), left
    assert not [p for p in old[:6 - KEEP_ASIDE + 1] if p.exists() or Path(f"{p}-wal").exists()]
    info = json.loads(run("cache", "info", "--json").stdout)
    assert info["aside"] == KEEP_ASIDE and info["aside_bytes"] > 2000
    assert f"moved aside as unusable: {KEEP_ASIDE} copies" in run("cache", "info").stdout
    res = run("cache", "clear", "--all")
    assert res.exit_code == 0 and f"removed {KEEP_ASIDE} copies" in res.stdout
    assert aside_copies(cache) == [] and not [p for p in cache.iterdir() if "-wal" in p.name and "broken" in p.name]
    assert json.loads(run("cache", "info", "--json").stdout)["aside"] == 0


def test_diff_shows_no_size_for_directories(ctx: Path) -> None:
    """Finding 9: a new directory was shown with its st_size (4.1 kB)."""
    assert run("snapshot", str(ctx)).exit_code == 0
    make_tree(ctx, {"newdir/x": b"ab", "newdir/y": b"cd"}, symlinks={"link": "src/a.py"})
    res = run("diff", str(ctx))
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert lines == ["+ link", "+ newdir", "+ newdir/x  2 B", "+ newdir/y  2 B"], lines
    d = json.loads(run("diff", "--json", str(ctx)).stdout)
    assert d["added"] == [{"path": "link", "bytes": 0, "kind": "symlink"}, {"path": "newdir", "bytes": 0, "kind": "dir"},
                          {"path": "newdir/x", "bytes": 2, "kind": "file"}, {"path": "newdir/y", "bytes": 2, "kind": "file"}]
    os.chmod(ctx / "newdir", 0o700)
    assert run("snapshot", str(ctx)).exit_code == 0
    os.chmod(ctx / "newdir", 0o755)
    assert run("diff", str(ctx)).stdout.splitlines() == ["M newdir (mode)"]


def test_diff_names_the_other_versions_index_that_holds_a_snapshot(ctx: Path, cache: Path) -> None:
    """A snapshot taken by another version is in that version's file: diff
    says so (an older file is read to check, opened read-only and leaving
    nothing beside it; a newer one is only named)."""
    legacy = cache / LEGACY_NAME
    old_release_index(legacy, ctx, SCHEMA_VERSION - 1)
    res = run("diff", str(ctx))
    assert res.exit_code == 2
    assert f"{legacy} (schema {SCHEMA_VERSION - 1}, an older ctxpack's) holds a snapshot of it" in res.stderr, res.stderr
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(LEGACY_NAME)) == [LEGACY_NAME]
    legacy.unlink()
    newer = cache / f"index-v{SCHEMA_VERSION + 1}.sqlite3"
    newer.write_bytes(b"whatever a newer version writes")
    res = run("diff", str(ctx))
    assert res.exit_code == 2 and f"{newer} (schema {SCHEMA_VERSION + 1}, a newer" in res.stderr, res.stderr
    assert newer.read_bytes() == b"whatever a newer version writes"
    other = make_tree(ctx.parent / "other", {"Dockerfile": b"FROM scratch\n"})
    old_release_index(legacy, other, SCHEMA_VERSION - 1)
    newer.unlink()
    res = run("diff", str(ctx))  # the older index holds nothing of this context: the plain message
    assert res.exit_code == 2 and "yet: run 'ctxpack snapshot'" in res.stderr, res.stderr
