"""lint keeps per entry only what its checks read (issue 16).

The view holds every entry of the walk (the checks look at all of them),
so lint's memory grows with the entries; what must not grow is the cost of
one entry.  The walker's ``Entry`` with its ``lstat`` cost ~900 bytes an
entry; the compact columns of :class:`ctxpack.linter.view.Walked` ~90 plus
the path.  The test lints N and 4N generated entries (100 to a directory,
so that no directory listing dominates) and bounds the difference.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import ctxpack
from ctxpack.linter.view import Walked, walk_entries
from ctxpack.walker import walk_all
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
