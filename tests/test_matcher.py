"""Evaluator-level facts (fixtures/matcher.json) and the pattern compiler."""

from __future__ import annotations

from typing import Any

import pytest

from ctxpack._go.filepath import syntax_ok
from ctxpack.ignore.reader import RawRule
from ctxpack.ignore.matcher import Matcher
from ctxpack.ignore.pattern import MatchKind, compile_pattern
from ctxpack.errors import BrokenPattern, PatternSyntaxError
from ctxpack.errors import PatternError
from trees import load_fixture

FIX = load_fixture("matcher.json")


def _matcher(patterns: list[str]) -> Matcher:
    return Matcher.from_raw(RawRule(p, i + 1, p, "test") for i, p in enumerate(patterns))


@pytest.mark.parametrize("case", FIX["walker_vs_mopm"], ids=lambda c: c["id"])
def test_walker_vs_mopm(case: dict[str, Any]) -> None:
    m = _matcher(case["patterns"])
    assert m.matches_or_parent_matches(case["path"])[0] == case["mopm_excluded"]
    assert m.decide_path(case["path"])[-1][1].excluded == case["walker_excluded"]


@pytest.mark.parametrize("case", FIX["single_pattern"] + FIX["quirks"], ids=lambda c: c["id"])
def test_single_pattern(case: dict[str, Any]) -> None:
    m = _matcher([case["pattern"]])
    assert m.matches_or_parent_matches(case["path"])[0] == case["matches"]
    direct = compile_pattern(case["pattern"]).matches(case["path"])
    assert direct == (case["matches"] and not case["via_parent"])


# Semantics note §3.1: what Go's filepath.Match(p, ".") refuses at load time.
@pytest.mark.parametrize("p", ["[", "a[b", "[]a]", "[^]", "[a-]", "[-a]", "x\\", "*[", "**\\", "[\\"])
def test_load_time_refusals(p: str) -> None:
    assert not syntax_ok(p.encode())
    with pytest.raises(PatternSyntaxError, match="syntax error in pattern"):
        compile_pattern(p)


@pytest.mark.parametrize("p", ["a*[", "[a-b]**[", "*a*[", "[z-a]", "\\y", "a{2,1}*", "a{1001}*"])
def test_lazy_errors(p: str) -> None:
    assert syntax_ok(p.encode())
    pat = compile_pattern(p)
    assert pat.error is not None
    with pytest.raises(BrokenPattern):
        pat.matches("anything")


def test_lazy_error_names_file_and_line() -> None:
    m = _matcher(["ok", "!a*["])
    # The exception is never evaluated while nothing is excluded.
    assert not m.decide_path("b")[-1][1].excluded
    with pytest.raises(PatternError) as info:
        m.decide_path("ok")
    assert info.value.line == 2 and info.value.source == "test" and "a*[" in str(info.value)


@pytest.mark.parametrize(
    "p,kind",
    [("foo", MatchKind.EXACT), ("foo/**", MatchKind.PREFIX), ("**/foo", MatchKind.SUFFIX),
     ("**", MatchKind.SUFFIX), ("*.log", MatchKind.REGEX), ("**/*.log", MatchKind.REGEX),
     ("a.b", MatchKind.EXACT), ("a\\*", MatchKind.REGEX), ("***", MatchKind.REGEX)],
)
def test_match_kinds(p: str, kind: MatchKind) -> None:
    assert compile_pattern(p).kind is kind


@pytest.mark.parametrize(
    "p,yes,no",
    [
        ("file\\d", ["file1"], ["file\\d", "filed"]),
        ("x\\w", ["xa", "x_", "xw"], ["x-"]),
        ("x\\s*", ["x ", "x\t"], ["x\v"]),                 # RE2 \s has no \v
        ("[[:^digit:]]*", ["a1"], ["1a"]),
        ("a\\Qb*", ["ab[^/]*$"], ["abc"]),                # \Q swallows the rest
        ("{2}x*", ["x"], []),                               # repeat of ^ is allowed
        ("a\\x41*", ["aA"], ["ax41"]),
        ("a\\101*", ["aA"], []),                            # octal escape
        ("ab{0}c*", ["ac"], ["abc"]),
        ("a{,2}*", ["a{,2}"], ["a"]),                       # not a repeat in RE2
        ("x$*", ["x$y"], ["x"]),
        ("\\pL*", ["é", "a"], ["1"]),
    ],
)
def test_regex_quirks(p: str, yes: list[str], no: list[str]) -> None:
    pat = compile_pattern(p)
    for s in yes:
        assert pat.matches(s), (p, s)
    for s in no:
        assert not pat.matches(s), (p, s)


def test_invalid_utf8_in_paths() -> None:
    bad = b"a\xff".decode("utf-8", "surrogateescape")
    assert compile_pattern("a?").matches(bad)            # one invalid byte is one rune
    assert not compile_pattern("a??").matches(bad)
    assert compile_pattern(bad).matches(bad)             # exact: byte comparison
    assert not compile_pattern(bad).matches("a\ufffd")
    assert compile_pattern("a\ufffd*").matches(bad)     # regex: U+FFFD matches an invalid byte


def test_bom_inside_pattern_is_dropped_by_the_scanner() -> None:
    # text/scanner skips a BOM at the start of its input (regex mode only).
    assert compile_pattern("\ufeffsecret*").matches("secrets")
    assert not compile_pattern("\ufeffsecret").matches("secret")


def test_illegal_exclusion() -> None:
    for p in ("!", "!/", "! "):
        with pytest.raises(PatternSyntaxError, match='illegal exclusion pattern: "!"'):
            compile_pattern(p)


def test_single_parent_matcher() -> None:
    # Semantics note §5.1: the re-add check only tests the ancestor as deep as the pattern.
    m = _matcher(["**/deep"])
    assert not m.matches_single_parent("a/b/deep/Dockerfile")
    assert m.matches_or_parent_matches("a/b/deep/Dockerfile")[0]
    assert _matcher(["sub"]).matches_single_parent("sub/Dockerfile")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PAT = st.text("ab*?/!.", min_size=1, max_size=5).filter(lambda p: p.strip("!/") != "")
_PATH = st.lists(st.text("ab.", min_size=1, max_size=3).filter(lambda c: c not in (".", "..")), min_size=1, max_size=4)


@settings(max_examples=400, deadline=None)
@given(patterns=st.lists(_PAT, max_size=5), parts=_PATH)
def test_incremental_mopm_equals_mopm(patterns: list[str], parts: list[str]) -> None:
    """The validation walk's incremental MatchesOrParentMatches (ancestor bits
    carried down) answers exactly as the per-path one."""
    try:
        m = _matcher(patterns)
    except PatternError:
        return
    bits = 0
    for k in range(1, len(parts)):
        bits = m.self_or_ancestor_bits("/".join(parts[:k]), bits)
    path = "/".join(parts)
    assert m.matches_or_parent_matches_with(path, bits) == m.matches_or_parent_matches(path)[0]


def test_from_raw_skips_empty_patterns_as_patternmatcher_new_does() -> None:
    # A library caller may hand lines that ReadAll never yields (issue 16):
    # New trims each and skips an empty one; it must not become "." (the root).
    from ctxpack.ignore.matcher import Matcher
    from ctxpack.ignore.reader import RawRule

    m = Matcher.from_raw([RawRule("", 1, "", "x"), RawRule(" \t", 2, " \t", "x"), RawRule("a", 3, "a", "x")])
    assert [r.text for r in m.rules] == ["a"]
    assert [r.index for r in m.rules] == [0]
