"""lint keeps per entry only what its checks read (issue 16).

The view holds every entry of the walk (the checks look at all of them),
so lint's memory grows with the entries; what must not grow is the cost of
one entry.  The walker's ``Entry`` with its ``lstat`` cost ~900 bytes an
entry; the compact columns of :class:`ctxpack.linter.view.Walked` ~90 plus
the path.  The test lints N and 4N generated entries (100 to a directory,
so that no directory listing dominates) and bounds the difference.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import ctxpack
from ctxpack.linter.view import Walked, walk_entries
from ctxpack.walker import walk_all
from test_permissions import world_tmp  # noqa: F401  (a fixture: a directory nobody can read)
from trees import make_tree

IGNORE = b"node_modules\n*.log\n**/*.tmp\n!pkg0/keep.tmp\nmissing-dir\n"


def _tree(root: Path, n: int) -> Path:
    files = {f"pkg{i // 100}/m{i % 5}/file-{i}.js": b"x" for i in range(n)}
    files |= {"Dockerfile": b"FROM scratch\nCOPY . /app\n", ".dockerignore": IGNORE, "pkg0/keep.tmp": b"t",
              "pkg1/a.tmp": b"t", "x.log": b"l", "node_modules/p/i.js": b"j"}
    return make_tree(root, files)


def _peak(root: Path) -> tuple[int, int]:
    """lint's peak traced memory over ``root``, and the entries it walked."""
    tracemalloc.start()
    try:
        report = ctxpack.lint(root)
        assert report.view is not None and len(report.view.entries) > 0
        return tracemalloc.get_traced_memory()[1], len(report.view.entries)
    finally:
        tracemalloc.stop()


def test_lint_memory_per_entry_stays_small(tmp_path: Path) -> None:
    """4x the entries may cost at most 200 bytes more per added entry (the
    paths are ~25 characters: ~75 bytes of them are the path itself)."""
    n = 1500
    small, large = _tree(tmp_path / "small", n), _tree(tmp_path / "large", 4 * n)
    _peak(small)  # caches and imports warmed
    (peak_small, entries_small), (peak_large, entries_large) = _peak(small), _peak(large)
    per_entry = (peak_large - peak_small) / (entries_large - entries_small)
    assert per_entry < 200, f"lint holds {per_entry:.0f} bytes per entry (the walker's entries: ~900)"


def test_walked_keeps_what_the_checks_read(tmp_path: Path) -> None:
    """The compact rows say what the walker's entries said, and look-ups by
    path agree before and after the index of paths is made."""
    root = _tree(tmp_path / "t", 300)
    ctx = ctxpack.open_context(root)
    walked, errors = walk_entries(ctx)
    assert isinstance(walked, Walked) and not errors
    full = [(e.path, e.kind, e.included, e.rule, e.stat.st_size if e.stat is not None else -1)
            for e in walk_all(ctx, excluded=True)]
    rows = list(walked)
    assert [tuple(r) for r in rows] == full and len(walked) == len(full)
    assert any(not r.included for r in rows) and any(r.rule is not None and r.included for r in rows)
    for i in (0, 7, len(rows) - 1) * 10:  # past the scanned look-ups: then from the dict
        assert walked.get(rows[i].path) == rows[i] == walked[i]
    assert walked.get("no/such") is None
    assert walked.sent() == {r.path for r in rows if r.included}
    assert walked.dirs() == {r.path for r in rows if r.kind == "dir"}


@pytest.mark.parametrize("dialect", ["classic", "buildkit"])
@pytest.mark.parametrize("chunk", [1, 4])
def test_forked_walk_gives_the_in_process_view(world_tmp: Path, monkeypatch: pytest.MonkeyPatch, dialect: str,
                                               chunk: int) -> None:
    """lint walks in a forked process where it can (view.walk_entries): the
    entries (every column), the census and the errors are those of the walk
    in this process -- in chunks of 1 and 4 entries, so that the census and
    the installed-package skip run across chunk boundaries -- and, run as
    nobody, an unreadable directory and file are the same errors naming
    the same paths; an unreadable context root is its error, in both."""
    from ctxpack.linter import view
    from privileges import as_nobody

    files = {f"src/m{i}/f{j}.py": b"x" * (i + j) for i in range(5) for j in range(3)}
    files |= {"Dockerfile": b"FROM scratch\nCOPY . /\n", ".env": b"A=1\n", "src/id_rsa": b"k",
              "node_modules/p/.env": b"B=2\n", "node_modules/p/x.js": b"j", ".git/HEAD": b"ref",
              "a.log": b"l", "priv/secret.pem": b"s", "zz-opaque": b"q", "app/app.csproj": b"<Project/>",
              "app/bin/x.dll": b"d" * 9, "config/secrets.yml": b"password: hunter2-but-longer\n",
              ".dockerignore": b"*.log\nsrc/m3\n!src/m3/f1.py\n"}
    root = make_tree(world_tmp / "ctx", files)
    os.symlink("m1", root / "src" / "link")
    os.chmod(root / "priv", 0)
    os.chmod(root / "zz-opaque", 0)
    monkeypatch.setattr(view, "CHUNK", chunk)

    def walked(ctx: ctxpack.BuildContext, fork: bool) -> Any:
        census = view.Census()
        entries, errors = view.walk_entries(ctx, census, fork=fork)
        rows = [(r.path, r.kind, r.included, r.rule and (r.rule.index, str(r.rule)), r.size) for r in entries]
        return rows, census, [(type(e).__name__, str(e), e.path) for e in errors]

    def both() -> list[Any]:
        ctx = ctxpack.open_context(root, dialect=dialect)
        return [walked(ctx, True), walked(ctx, False)]

    status, runs = as_nobody(both)
    assert status == "ok", runs
    forked, here = runs
    gone = ctxpack.open_context(root, dialect=dialect)
    os.rename(root, f"{root}.away")  # the root itself cannot be walked
    try:
        away_forked, away_here = walked(gone, True), walked(gone, False)
    finally:
        os.rename(f"{root}.away", root)
    assert forked == here
    assert away_forked == away_here and away_here[2] and not away_here[0], away_here
    rows, census, errors = forked
    assert {e[2] for e in errors} == {f"{root}/priv", f"{root}/zz-opaque"}, errors
    paths = [r[0] for r in rows]
    assert "src/m3/f1.py" in paths and "node_modules/p/x.js" in paths
    assert [paths[i] for i in census.secret] == [".env", "config/secrets.yml", "src/id_rsa"]  # not node_modules/p/.env
    assert [paths[i] for i in census.heavy] == [".git", "app/bin", "node_modules"]
    assert census.sent_bytes == sum(r[4] for r in rows if r[1] == "file" and r[2])
    # What the checks after the walk read from the census, made during it:
    sent = [r[4] if r[1] == "file" and r[2] and r[4] >= 0 else 0 for r in rows]
    assert list(census.sent_before) == [sum(sent[:i]) for i in range(len(rows) + 1)]
    assert census.projects == {"app"}
    assert sorted(census.scans) == census.secret
    assert census.scans[paths.index("src/id_rsa")][0] is not None  # worth reading, and read
    reason, hits = census.scans[paths.index("config/secrets.yml")]
    assert reason is not None and hits, (reason, hits)
