"""Hostile names never reach a terminal raw (issue 16): control characters
and undecodable bytes in paths are shown escaped in every diagnostic, while
machine output (``ls``, ``ls -0``, the tar, ``--json``) keeps the exact
bytes.  ``diff``, ``explain`` and ``lint`` name paths escaped too, whether click or
a running watcher (the console script's fast path) renders ``diff``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxpack.cli import main
from ctxpack.cli.common import printable

HOSTILE = "evil\x1b]0;pwned\x07\r\nname"


def test_printable_escapes_controls_and_undecodable_bytes() -> None:
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\ny\rz\tw") == "x\\ny\\rz\\tw"
    assert printable(os.fsdecode(b"caf\xff")) == "caf\\xff"
    assert printable("\x9b\x7f") == "\\x9b\\x7f"
    # Unambiguous: a literal backslash that would read as an escape is doubled.
    assert printable("a\\x1b") == "a\\\\x1b" != printable("a\x1b")
    assert printable("a\\\\n") == "a\\\\\\\\n" and printable("C:\\Users") == "C:\\Users"
    assert printable("héllo wörld ✓") == "héllo wörld ✓"


def test_error_naming_a_hostile_path_is_escaped(tmp_path: Path) -> None:
    missing = tmp_path / HOSTILE
    res = CliRunner().invoke(main, ["ls", str(missing)])
    assert res.exit_code == 2
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr and "\r" not in res.stderr
    assert "evil\\x1b]0;pwned\\x07\\r\\nname" in res.stderr


def test_warning_about_a_hostile_dockerfile_is_escaped_but_the_tar_keeps_the_name(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    df = root / HOSTILE
    df.write_text("FROM scratch\n")
    (root / ".dockerignore").write_text("evil*\n")
    res = CliRunner().invoke(main, ["pack", "-f", str(df), "-o", str(tmp_path / "out.tar"), str(root)])
    assert res.exit_code == 0, res.stderr
    assert "warning" in res.stderr and "\x1b" not in res.stderr and "evil\\x1b" in res.stderr
    assert HOSTILE.encode() in (tmp_path / "out.tar").read_bytes()


def test_ls_keeps_the_exact_bytes(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / HOSTILE).write_text("x")
    res = CliRunner().invoke(main, ["ls", "-0", str(root)])
    assert res.exit_code == 0
    assert HOSTILE.encode() + b"\0" in res.stdout_bytes


# -- diff and explain name paths as the diagnostics do; --json keeps the exact name -----------
# (name on disk, as diff's and explain's text show it)
NAMES = [
    (b"src/esc\x1b[31m.js", "src/esc\\x1b[31m.js"),  # click.echo strips the sequence off a terminal: src/esc.js
    (b"src/new\nline.js", "src/new\\nline.js"),      # not split over two lines
    (b"src/bad\xff.js", "src/bad\\xff.js"),           # undecodable
    (b"src/t\x07\r\x9b.js", "src/t\\x07\\r\\x9b.js"),
    (b"src/lit\\x1b.js", "src/lit\\\\x1b.js"),   # a literal backslash-x: not shown as the ESC name above
    (b"src/back\\slash.js", "src/back\\slash.js"),  # a backslash starting no escape stays single
    ("src/héllo ✓.js".encode(), "src/héllo ✓.js"),   # printable non-ASCII: as is
]


def _named_tree(tmp_path: Path) -> Path:
    root = tmp_path / "c"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    return root


def _add_names(root: Path) -> None:
    for raw, _ in NAMES:
        with open(os.path.join(os.fsencode(root), raw), "wb") as f:
            f.write(b"x")


def _check_diff(text: bytes, doc: bytes) -> None:
    assert text.decode("utf-8").splitlines() == sorted(f"+ {shown}  1 B" for _, shown in NAMES), text
    assert b"\x1b" not in text and b"\r" not in text and b"\x07" not in text
    # --json: valid UTF-8 (undecodable bytes as \udcXX escapes, as size/lint --json), the exact names back
    got = json.loads(doc.decode("utf-8"))
    assert sorted(a["path"] for a in got["added"]) == sorted(os.fsdecode(raw) for raw, _ in NAMES)


def test_diff_and_explain_escape_names_json_keeps_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CTXPACK_WATCH", "0")
    root = _named_tree(tmp_path)
    assert CliRunner().invoke(main, ["snapshot", str(root)]).exit_code == 0
    _add_names(root)
    text = CliRunner().invoke(main, ["diff", str(root)])
    doc = CliRunner().invoke(main, ["diff", "--json", str(root)])
    assert text.exit_code == doc.exit_code == 0, text.stderr
    _check_diff(text.stdout_bytes, doc.stdout_bytes)
    res = CliRunner().invoke(main, ["explain", "-C", str(root), *(os.fsdecode(raw) for raw, _ in NAMES)])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.splitlines() == [f"{shown}: included: no rule" for _, shown in NAMES]


def test_diff_answered_by_a_watcher_escapes_the_same(tmp_path: Path) -> None:
    """The console script's fast path (a running watcher renders the text)
    prints the same bytes as the command without a watcher."""
    if not os.path.isdir("/proc/self/fdinfo"):
        pytest.skip("ctxpack watch needs Linux inotify")
    from test_watch_cli import WatchProcess
    from test_watch_fast import _script

    cache = tmp_path / "cache"
    root = _named_tree(tmp_path)
    assert _script(["snapshot", "."], cache, root)[2] == 0
    w = WatchProcess([str(root)], cache)
    try:
        _add_names(root)
        without = [_script(["diff", *a], cache, root, CTXPACK_WATCH="0")[:3] for a in ([], ["--json"])]
        deadline = time.monotonic() + 20
        while True:  # until the watcher has seen every new name and answers without click
            got = [_script(["diff", *a], cache, root) for a in ([], ["--json"])]
            if all(not clicked for *_, clicked in got) and [g[:3] for g in got] == without:
                break
            assert time.monotonic() < deadline, (got, without)
            time.sleep(0.2)
    finally:
        w.stop()
    _check_diff(os.fsencode(without[0][0]), os.fsencode(without[1][0]))


def test_lint_text_escapes_names_json_keeps_them(tmp_path: Path) -> None:
    root = _named_tree(tmp_path)
    raw = b"k\x1b[31m\n\xff"
    os.mkdir(os.path.join(os.fsencode(root), raw))
    with open(os.path.join(os.fsencode(root), raw, b"id_rsa"), "w") as f:
        f.write("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    res = CliRunner().invoke(main, ["lint", str(root)])
    assert res.exit_code == 1, res.stderr
    assert b"\x1b" not in res.stdout_bytes and b"\xff" not in res.stdout_bytes
    shown = r"k\x1b[31m\n\xff/id_rsa"
    lines = res.stdout_bytes.decode("utf-8").splitlines()
    assert lines[0].startswith(f"{shown}: error: {shown} holds a private key"), lines  # one line, not split
    assert lines[1].startswith("    fix: ") and f"--allow-secret {shown}" in lines[1], lines
    doc = json.loads(CliRunner().invoke(main, ["lint", "--json", str(root)]).stdout_bytes.decode("utf-8"))
    assert [f["path"] for f in doc["findings"] if f["kind"] == "secret"] == [os.fsdecode(raw + b"/id_rsa")]
