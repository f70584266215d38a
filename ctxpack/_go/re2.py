"""Translate the Go RE2 expressions Docker builds from patterns into Python ``re``.

``patternmatcher`` hands user text to Go's ``regexp`` nearly raw: ``|``, ``{``,
``}``, ``^``, ``[...]`` and ``\\x`` escapes keep their RE2 meaning in any
pattern that has a wildcard (semantics note §3.2).  Python's ``re`` differs
from RE2 in many small ways (``$`` before a final newline, ``{,n}``, ``\\s``,
POSIX classes, ``\\pL``, ``\\Q..\\E``, nested-repetition errors), so instead of
passing the string through we parse it with RE2's rules (Go
``regexp/syntax.Parse`` with the ``Perl`` flags) and emit an equivalent Python
expression in which every literal is escaped.  Anything RE2 rejects raises
:class:`RE2SyntaxError`; Docker turns that into ``syntax error in pattern`` at
the pattern's first evaluation.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from ctxpack.errors import RE2SyntaxError, UnsupportedRegex

__all__ = ["translate", "compile_re2"]

MAX_RUNE = 0x10FFFF


Ranges = list[tuple[int, int]]

_PERL: dict[str, Ranges] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],  # RE2 \s has no \v
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}

_POSIX: dict[str, Ranges] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}

# Go's unicode.Categories keys: the one-letter groups and the two-letter ones.
_CATEGORIES = {
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc",
    "Me", "Mn", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po",
    "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl", "Zp", "Zs",
}


def _normalize(ranges: Ranges) -> Ranges:
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _negate(ranges: Ranges) -> Ranges:
    out: Ranges = []
    nxt = 0
    for lo, hi in _normalize(ranges):
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= MAX_RUNE:
        out.append((nxt, MAX_RUNE))
    return out


@lru_cache(maxsize=None)
def _category(name: str) -> tuple[tuple[int, int], ...]:
    """Code point ranges of a Unicode general category (from Python's tables)."""
    out: Ranges = []
    start = -1
    for cp in range(MAX_RUNE + 1):
        cat = unicodedata.category(chr(cp))
        # Go's "C" has no unassigned code points (Cn): only Cc Cf Co Cs.
        hit = cat == name if len(name) == 2 else (cat[0] == name and cat != "Cn")
        if hit:
            if start < 0:
                start = cp
        elif start >= 0:
            out.append((start, cp - 1))
            start = -1
    if start >= 0:
        out.append((start, MAX_RUNE))
    return tuple(out)


def _unicode_table(name: str) -> Ranges:
    if name == "Any":
        return [(0, MAX_RUNE)]
    if name in _CATEGORIES:
        return list(_category(name))
    if name.isalpha() and name[:1].isupper():
        # Go knows Unicode scripts (\p{Greek}); Python's stdlib has no script data.
        raise UnsupportedRegex(f"Unicode script class \\p{{{name}}} is not supported by ctxpack")
    raise RE2SyntaxError(f"invalid character class range: \\p{{{name}}}")


def _emit_char(cp: int) -> str:
    if cp < 0x80:
        ch = chr(cp)
        if ch.isalnum() or ch == "_":
            return ch
        return "\\x%02x" % cp
    if 0xD800 <= cp <= 0xDFFF:
        # Subjects never contain surrogates (invalid bytes become U+FFFD).
        return "\\ud%03x" % (cp - 0xD000)
    if cp <= 0xFFFF:
        return "\\u%04x" % cp
    return "\\U%08x" % cp


def _emit_class(ranges: Ranges) -> str:
    ranges = _normalize(ranges)
    if not ranges:
        return "(?!)"  # matches nothing
    if ranges == [(0, MAX_RUNE)]:
        return "[\\s\\S]"
    prefix = "["
    if ranges[0][0] == 0 and ranges[-1][1] == MAX_RUNE:
        # Emit a negated class from the complement: shorter and faster.
        prefix, ranges = "[^", _negate(ranges)
    parts = []
    for lo, hi in ranges:
        parts.append(_emit_char(lo) if lo == hi else _emit_char(lo) + "-" + _emit_char(hi))
    return prefix + "".join(parts) + "]"


class _Parser:
    """A recursive-descent reading of RE2 syntax, emitting Python ``re`` text."""

    def __init__(self, src: str):
        self.s = src
        self.i = 0

    def err(self, what: str) -> RE2SyntaxError:
        return RE2SyntaxError(f"{what} in {self.s!r}")

    # --- escapes -------------------------------------------------------
    def parse_escape(self) -> int:
        """At a backslash: parse a single-character escape, return the rune."""
        s = self.s
        start = self.i
        if start + 1 >= len(s):
            raise self.err("trailing backslash at end of expression")
        c = s[start + 1]
        j = start + 2
        if c in "01234567":
            # \0 takes up to two more octal digits; \1-\7 need at least one
            # more (a lone \1 would be a backreference, which RE2 refuses).
            if c != "0" and not (j < len(s) and s[j] in "01234567"):
                raise self.err("invalid escape sequence")
            r = int(c)
            for _ in range(2):
                if j < len(s) and s[j] in "01234567":
                    r = r * 8 + int(s[j])
                    j += 1
                else:
                    break
            self.i = j
            return r
        if c.isascii() and not c.isalnum():
            self.i = j
            return ord(c)  # escaped punctuation is always itself
        if c == "x":
            if j >= len(s):
                raise self.err("invalid escape sequence")
            if s[j] == "{":
                end = s.find("}", j + 1)
                digits = s[j + 1 : end] if end >= 0 else ""
                if not digits or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
                    raise self.err("invalid escape sequence")
                r = int(digits, 16)
                if r > MAX_RUNE:
                    raise self.err("invalid escape sequence")
                self.i = end + 1
                return r
            h = s[j : j + 2]
            if len(h) == 2 and all(ch in "0123456789abcdefABCDEF" for ch in h):
                self.i = j + 2
                return int(h, 16)
            raise self.err("invalid escape sequence")
        simple = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
        if c in simple:
            self.i = j
            return simple[c]
        raise self.err("invalid escape sequence")

    def parse_perl_class(self) -> Ranges | None:
        s = self.s
        if self.i + 1 < len(s) and s[self.i] == "\\" and s[self.i + 1] in "dDsSwW":
            c = s[self.i + 1]
            self.i += 2
            r = _PERL[c.lower()]
            return _negate(r) if c.isupper() else list(r)
        return None

    def parse_unicode_class(self) -> Ranges | None:
        s = self.s
        if not (self.i + 1 < len(s) and s[self.i] == "\\" and s[self.i + 1] in "pP"):
            return None
        negate = s[self.i + 1] == "P"
        j = self.i + 2
        if j >= len(s):
            raise self.err("invalid character class range")
        if s[j] != "{":
            name = s[j]
            j += 1
        else:
            end = s.find("}", j)
            if end < 0:
                raise self.err("invalid character class range")
            name = s[j + 1 : end]
            j = end + 1
        if name.startswith("^"):
            negate = not negate
            name = name[1:]
        table = _unicode_table(name)
        self.i = j
        return _negate(table) if negate else table

    # --- classes -------------------------------------------------------
    def parse_class(self) -> str:
        s = self.s
        self.i += 1  # [
        negate = False
        if self.i < len(s) and s[self.i] == "^":
            negate = True
            self.i += 1
        ranges: Ranges = []
        first = True
        while self.i >= len(s) or s[self.i] != "]" or first:
            if self.i >= len(s):
                raise self.err("missing closing ]")
            first = False
            if s.startswith("[:", self.i) and len(s) - self.i > 2:
                k = s.find(":]", self.i + 2)
                if k >= 0:
                    name = s[self.i + 2 : k]
                    neg = name.startswith("^")
                    if neg:
                        name = name[1:]
                    if name not in _POSIX:
                        raise self.err("invalid character class range")
                    r = _POSIX[name]
                    ranges.extend(_negate(r) if neg else r)
                    self.i = k + 2
                    continue
            u = self.parse_unicode_class()
            if u is not None:
                ranges.extend(u)
                continue
            p = self.parse_perl_class()
            if p is not None:
                ranges.extend(p)
                continue
            lo = self.parse_class_char()
            hi = lo
            if self.i + 1 < len(s) and s[self.i] == "-" and s[self.i + 1] != "]":
                self.i += 1
                hi = self.parse_class_char()
                if hi < lo:
                    raise self.err("invalid character class range")
            ranges.append((lo, hi))
        self.i += 1  # ]
        if negate:
            ranges = _negate(ranges)  # Perl flags include ClassNL: \n may match
        return _emit_class(ranges)

    def parse_class_char(self) -> int:
        s = self.s
        if self.i >= len(s):
            raise self.err("missing closing ]")
        if s[self.i] == "\\":
            return self.parse_escape()
        c = s[self.i]
        self.i += 1
        return ord(c)

    # --- top level -----------------------------------------------------
    def parse(self) -> str:
        out, _ = self.parse_alternation(top=True)
        return out

    def parse_alternation(self, top: bool) -> tuple[str, bool]:
        branches = []
        while True:
            branches.append(self.parse_concat())
            if self.i < len(self.s) and self.s[self.i] == "|":
                self.i += 1
                continue
            break
        if not top:
            if self.i >= len(self.s) or self.s[self.i] != ")":
                raise self.err("missing closing )")
            self.i += 1
        elif self.i < len(self.s):
            raise self.err("unexpected )")
        return "|".join(branches), True

    def parse_concat(self) -> str:
        s = self.s
        items: list[str] = []  # emitted atoms; None marks a non-repeatable point
        repeatable: list[bool] = []
        last_repeat = False
        while self.i < len(s) and s[self.i] not in "|)":
            c = s[self.i]
            rep = None
            if c in "*+?":
                rep = c
                self.i += 1
            elif c == "{":
                parsed = self.parse_repeat()
                if parsed is None:
                    self.i += 1
                    items.append(re.escape("{"))
                    repeatable.append(True)
                    last_repeat = False
                    continue
                rep = parsed
            if rep is not None:
                if self.i < len(s) and s[self.i] == "?":
                    self.i += 1  # non-greedy: same yes/no answer
                if last_repeat:
                    raise self.err("invalid nested repetition operator")
                if not items or not repeatable[-1]:
                    raise self.err("missing argument to repetition operator")
                items[-1] = "(?:" + items[-1] + ")" + rep
                last_repeat = True
                continue
            last_repeat = False
            if c == "(":
                if s.startswith("(?", self.i):
                    raise self.err("unsupported group syntax")
                self.i += 1
                inner, _ = self.parse_alternation(top=False)
                items.append("(?:" + inner + ")")
            elif c == "[":
                items.append(self.parse_class())
            elif c == ".":
                self.i += 1
                items.append("[^\\n]")
            elif c == "^":
                self.i += 1
                items.append("^")  # OneLine: beginning of text
            elif c == "$":
                self.i += 1
                items.append("\\Z")  # OneLine: end of text only
            elif c == "\\":
                nxt = s[self.i + 1] if self.i + 1 < len(s) else ""
                if nxt == "A":
                    self.i += 2
                    items.append("\\A")
                elif nxt == "z":
                    self.i += 2
                    items.append("\\Z")
                elif nxt in ("b", "B"):
                    self.i += 2
                    items.append("(?a:\\%s)" % nxt)  # RE2 word boundaries are ASCII
                elif nxt == "C":
                    raise self.err("invalid escape sequence: \\C")
                elif nxt == "Q":
                    end = s.find("\\E", self.i + 2)
                    lit = s[self.i + 2 :] if end < 0 else s[self.i + 2 : end]
                    self.i = len(s) if end < 0 else end + 2
                    for ch in lit:
                        items.append(re.escape(ch))
                        repeatable.append(True)
                    continue
                else:
                    u = self.parse_unicode_class()
                    if u is None:
                        u = self.parse_perl_class()
                    if u is not None:
                        items.append(_emit_class(u))
                    else:
                        items.append(_emit_class([(r := self.parse_escape(), r)]))
            else:
                self.i += 1
                items.append(re.escape(c))
            repeatable.append(True)
        return "".join(items)

    def parse_repeat(self) -> str | None:
        """At ``{``: ``{n}``, ``{n,}``, ``{n,m}`` as RE2 reads them, else None (literal)."""
        m = re.compile(r"\{(\d+)(?:(,)(\d*))?\}").match(self.s, self.i)
        if not m:
            return None
        lo_s, comma, hi_s = m.group(1), m.group(2), m.group(3)
        if len(lo_s) >= 2 and lo_s[0] == "0":
            return None  # RE2 refuses leading zeros: then '{' is a literal
        if hi_s and len(hi_s) >= 2 and hi_s[0] == "0":
            return None
        lo = int(lo_s) if len(lo_s) <= 9 else -1
        if not comma:
            hi = lo
        elif hi_s == "":
            hi = -1
        else:
            hi = int(hi_s) if len(hi_s) <= 9 else -2
            if hi == -2:
                lo = -1
        if lo < 0 or lo > 1000 or hi > 1000 or (hi >= 0 and lo > hi):
            raise self.err("invalid repeat count")
        self.i = m.end()
        if hi == lo:
            return "{%d}" % lo
        if hi < 0:
            return "{%d,}" % lo
        return "{%d,%d}" % (lo, hi)


def translate(expr: str) -> str:
    """Translate a Go RE2 expression (Perl flags) to a Python ``re`` expression."""
    return _Parser(expr).parse()


def compile_re2(expr: str) -> re.Pattern[str]:
    """Compile RE2 text for use with ``search`` (Go ``MatchString`` semantics)."""
    py = translate(expr)
    try:
        return re.compile(py)
    except re.error as e:  # pragma: no cover - a translator bug, not user input
        raise RE2SyntaxError(f"cannot translate {expr!r}: {e}") from None

