"""Parsing ignore files (fixtures/ignorefile.json, semantics note §2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxpack.errors import IgnoreFileError
from ctxpack._go.strings import go_clean
from ctxpack.ignore.reader import parse_ignore, read_ignore_file
from trees import load_fixture

ENTRIES = load_fixture("ignorefile.json")["entries"]


@pytest.mark.parametrize("case", ENTRIES, ids=lambda c: c["id"])
def test_parse(case: dict[str, Any]) -> None:
    rules = parse_ignore(case["input"].encode("utf-8"))
    assert [r.pattern for r in rules] == case["patterns"]


def test_line_numbers_count_comments_and_blanks() -> None:
    rules = parse_ignore(b"# c\n\nfoo\r\n  bar\n")
    assert [(r.pattern, r.line, r.text) for r in rules] == [("foo", 3, "foo"), ("bar", 4, "  bar")]


@pytest.mark.parametrize(
    "inp,out",
    [("//a", "/a"), ("a/b/../../..", ".."), ("/..", "/"), ("", "."), ("a/./b/", "a/b"), ("../../x", "../../x")],
)
def test_go_clean(inp: str, out: str) -> None:
    assert go_clean(inp) == out


def test_undecodable_bytes_survive() -> None:
    (rule,) = parse_ignore(b"caf\xe9\n")
    assert rule.pattern.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_token_too_long() -> None:
    with pytest.raises(IgnoreFileError, match="token too long") as info:
        parse_ignore(b"ok\n" + b"x" * 70000 + b"\n", "ctx/.dockerignore")
    assert info.value.line == 2 and "ctx/.dockerignore:2" in str(info.value)


def test_missing_and_unreadable(tmp_path: Path) -> None:
    assert read_ignore_file(tmp_path / "nope") is None
    (tmp_path / "d").mkdir()
    with pytest.raises(IgnoreFileError):
        read_ignore_file(tmp_path / "d")
