"""Hostile names never reach a terminal raw (issue 16): control characters
and undecodable bytes in paths are shown escaped in every diagnostic, while
machine output (``ls``, ``ls -0``, the tar) keeps the exact bytes."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from ctxpack.cli import main
from ctxpack.cli.common import printable

HOSTILE = "evil\x1b]0;pwned\x07\r\nname"


def test_printable_escapes_controls_and_undecodable_bytes() -> None:
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\ny\rz\tw") == "x\\ny\\rz\\tw"
    assert printable(os.fsdecode(b"caf\xff")) == "caf\\xff"
    assert printable("\x9b\x7f") == "\\x9b\\x7f"
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
