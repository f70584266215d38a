"""One ``.dockerignore`` pattern, compiled once, matched as Docker matches it.

Mirrors ``moby/patternmatcher`` (v0.6.1, vendored by docker/cli 28 and
BuildKit): each pattern becomes one of four match kinds (exact, prefix,
suffix, regex; semantics note §3.2–3.3), the regex being Go RE2 text built from
the pattern with the same quirks (``|{}^`` live, ``[...]`` raw, ``\\d`` an RE2
class).  A pattern that Go's ``regexp`` would refuse is accepted here too and
fails at its first evaluation (:class:`BrokenPattern`), as Docker does.
"""

from __future__ import annotations

import codecs
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ctxpack.errors import BrokenPattern, PatternSyntaxError, RE2SyntaxError, UnsupportedRegex
from ctxpack._go.filepath import syntax_ok
from ctxpack._go.strings import go_clean, go_trim_space
from ctxpack._go.lazydfa import LinearMatcher, NotLinear, risky
from ctxpack._go.re2 import compile_re2

__all__ = ["MatchKind", "Pattern", "compile_pattern", "go_runes"]


class MatchKind(enum.Enum):
    EXACT = "exact"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"


def _per_byte_replace(err: UnicodeError) -> tuple[str, int]:
    # Go decodes every invalid byte to its own U+FFFD (utf8.DecodeRune width 1).
    assert isinstance(err, UnicodeDecodeError)
    return "\ufffd" * (err.end - err.start), err.end


codecs.register_error("ctxpack-gorunes", _per_byte_replace)


def go_runes(s: str) -> str:
    """The string as Go's regexp sees it: every invalid UTF-8 byte is U+FFFD."""
    if s.isascii():
        return s
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "ctxpack-gorunes")


_SEP = "/"


@dataclass(eq=False, slots=True)
class Pattern:
    """A compiled pattern: ``text`` is the cleaned pattern without its ``!``.

    ``matches(path)`` takes a context-relative, ``/``-separated path and tests
    the path itself only (no ancestors).  ``regex_source`` is the Go RE2 text
    Docker builds (for ``explain``); ``error`` is set for a pattern that fails
    at evaluation time.  ``literal_prefix`` and ``depth`` bound where the
    pattern can match at all, so walkers can skip it without evaluating it.
    """

    text: str
    exception: bool
    kind: MatchKind
    regex_source: str | None = None
    error: str | None = None
    literal_prefix: str = ""
    depth: int | None = None
    matches: Callable[[str], bool] = field(default=lambda p: False, repr=False)

    def can_match_below(self, directory: str, depth: int) -> bool:
        """Could this pattern match a direct child of ``directory`` (at ``depth``)?

        ``directory`` is ``""`` for the context root; children are at
        ``depth`` components.  A broken pattern always can: evaluating it is
        what reports its error.
        """
        if self.error is not None:
            return True
        if self.depth is not None and self.depth != depth:
            return False
        lp = self.literal_prefix
        if not lp or not directory:
            return True
        d = directory + "/"
        return lp.startswith(d) or d.startswith(lp)

    def can_match_inside(self, directory: str) -> bool:
        """Could this pattern match any path below ``directory`` (at any depth)?

        The question the walkers' pruning asks of an exception: only one that
        can re-include something below an excluded directory makes reading
        it necessary.  A broken pattern always can.
        """
        if self.error is not None:
            return True
        if self.depth is not None and self.depth <= directory.count("/") + 1:
            return False
        lp = self.literal_prefix
        d = directory + "/"
        return not lp or lp.startswith(d) or d.startswith(lp)


_ANY = ("(.*/)?", ".*")


def _any(reg: list[str], token: str) -> None:
    """Append a ``**`` token, merging it with a ``**`` token just before.

    ``(.*/)?(.*/)?`` and ``(.*/)?`` match the same strings, and so do
    ``.*`` next to either and ``.*`` alone; RE2 (Docker) runs any of them in
    linear time, but Python's backtracking ``re`` takes time exponential in
    the number of adjacent copies (``**/**/**/…/x``, issue 16).  A quantifier
    written after the merged token cannot change this: Go refuses a
    repetition of a repetition either way.
    """
    if reg and reg[-1] in _ANY:
        reg[-1] = ".*" if ".*" in (reg[-1], token) else token
    else:
        reg.append(token)


def _regex_source(text: str) -> tuple[MatchKind, str]:
    """Build Docker's regex text and match kind (patternmatcher ``compile``)."""
    reg = ["^"]
    kind = MatchKind.EXACT
    chars = text
    # text/scanner drops a BOM at the very start of its input.
    if chars.startswith("\ufeff"):
        chars = chars[1:]
    chars = go_runes(chars)
    n = len(chars)
    i = 0
    first = True
    while i < n:
        ch = chars[i]
        i += 1
        if ch == "*":
            if i < n and chars[i] == "*":
                i += 1
                if i < n and chars[i] == _SEP:
                    i += 1  # "**/" is "**"
                if i >= n:
                    if kind is MatchKind.EXACT:
                        kind = MatchKind.PREFIX
                    else:
                        _any(reg, ".*")
                        kind = MatchKind.REGEX
                else:
                    _any(reg, "(.*/)?")
                    kind = MatchKind.REGEX
                if first:
                    kind = MatchKind.SUFFIX
            else:
                reg.append("[^/]*")
                kind = MatchKind.REGEX
        elif ch == "?":
            reg.append("[^/]")
            kind = MatchKind.REGEX
        elif ch in ".+()$":
            # The only characters patternmatcher's (buggy) escape table covers.
            reg.append("\\" + ch)
        elif ch == "\\":
            if i < n:
                reg.append("\\" + chars[i])
                i += 1
                kind = MatchKind.REGEX
            else:
                reg.append("\\")
        elif ch in "[]":
            reg.append(ch)
            kind = MatchKind.REGEX
        else:
            reg.append(ch)
        first = False
    if kind is MatchKind.REGEX:
        reg.append("$")
    return kind, "".join(reg)


def _bounds(text: str, kind: MatchKind) -> tuple[str, int | None]:
    """A literal prefix every match starts with, and the fixed depth if any."""
    if kind is MatchKind.EXACT:
        return text, text.count("/") + 1
    if kind is MatchKind.PREFIX:
        return text[:-2], None
    if kind is MatchKind.SUFFIX:
        return "", None
    if "|" in text or text.startswith("\ufeff"):
        return "", None  # a live alternation floats anywhere
    stop = len(text)
    for j, ch in enumerate(text):
        if ch in "*?[]\\{^":
            stop = j
            break
    prefix = text[:stop]
    if stop < len(text) and text[stop] == "{":
        prefix = prefix[:-1]  # "ab{0}" makes the "b" optional
    depth: int | None = None
    if not any(c in text for c in "[\\{^") and "**" not in text:
        depth = text.count("/") + 1
    return prefix, depth


def compile_pattern(raw: str) -> Pattern:
    """Compile one pattern string as ``patternmatcher.New`` does.

    ``raw`` may start with ``!``.  Raises :class:`PatternSyntaxError` where
    Docker refuses the pattern at load time; patterns Docker accepts but
    cannot compile return a :class:`Pattern` whose ``matches`` raises
    :class:`BrokenPattern`.
    """
    p = go_clean(go_trim_space(raw))
    exception = False
    if p.startswith("!"):
        if len(p) == 1:
            raise PatternSyntaxError('illegal exclusion pattern: "!"')
        exception = True
        p = p[1:]
    if not syntax_ok(p.encode("utf-8", "surrogateescape")):
        raise PatternSyntaxError("syntax error in pattern")
    kind, source = _regex_source(p)
    prefix, depth = _bounds(p, kind)
    pat = Pattern(text=p, exception=exception, kind=kind, literal_prefix=prefix, depth=depth)
    if kind is MatchKind.EXACT:
        pat.matches = p.__eq__
    elif kind is MatchKind.PREFIX:
        head = p[:-2]
        pat.matches = lambda path: path.startswith(head)
    elif kind is MatchKind.SUFFIX:
        # Go slices the pattern's bytes: cleanedPattern[2:].
        tail = p.encode("utf-8", "surrogateescape")[2:].decode("utf-8", "surrogateescape")
        bare = tail[1:] if tail.startswith("/") else None

        def suffix_match(path: str) -> bool:
            return path.endswith(tail) or path == bare

        pat.matches = suffix_match
    else:
        pat.regex_source = source
        try:
            rx = compile_re2(source)
        except RE2SyntaxError as e:
            pat.error = f"syntax error in pattern ({e})"

            def broken(path: str, _msg: str = pat.error) -> bool:
                raise BrokenPattern(_msg)

            pat.matches = broken
        except UnsupportedRegex as e:
            pat.error = str(e)

            def unsupported(path: str, _msg: str = pat.error) -> bool:
                raise BrokenPattern(_msg)

            pat.matches = unsupported
        else:
            pat.matches = _searcher(rx)
    return pat


def _searcher(rx: re.Pattern[str]) -> Callable[[str], bool]:
    """``MatchString`` for a compiled expression, linear in the path as RE2 is.

    ``re`` answers most patterns fastest; one that could make it backtrack
    for seconds (many ``*`` in one component, issue 16) is run by the lazy
    DFA instead, which decides exactly as ``re`` does (property-tested in
    tests/test_hardening_parsers.py).
    """
    if risky(rx.pattern):
        try:
            linear = LinearMatcher(rx.pattern).search
        except NotLinear:
            pass
        else:

            def linear_match(path: str) -> bool:
                return linear(path if path.isascii() else go_runes(path))

            return linear_match
    search = rx.search

    def regex_match(path: str) -> bool:
        return search(path if path.isascii() else go_runes(path)) is not None

    return regex_match
