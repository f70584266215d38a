"""Reading a Dockerfile the way BuildKit's parser does (moby/buildkit
``frontend/dockerfile/parser`` and ``instructions``), far enough to know what
a build can read.

Covered, with BuildKit's rules:

* parser directives (``# syntax=``, ``# escape=``, ``# check=``): matched only
  on the lines at the very top (keys case-insensitive, spaces allowed around
  ``=``); the first line that is not a directive of a known kind ends them; a
  repeated directive is an error;
* comments (a line whose first non-blank character is ``#``), also inside a
  continuation, and empty lines inside a continuation (dropped);
* line continuations with the active escape character: it continues the line
  when it ends the line (trailing blanks allowed) and is not itself escaped;
* instruction words: case-insensitive; flags (``--name[=value]``) lead the
  arguments, with quotes and the escape character removed;
* JSON form (a valid JSON array of strings; anything else that starts with
  ``[`` is shell form, except an array holding a non-string, an error);
* shell-form arguments per instruction: ``COPY``/``ADD``/``FROM``/``EXPOSE``/
  ``VOLUME`` split on blanks (quotes are *not* grouping there), ``ARG``/
  ``ENV``/``LABEL`` split into words that keep their quotes, ``ENV k v`` and
  ``ENV k=v …``;
* heredocs (``<<EOF``, ``<<-EOF``, ``<<"EOF"``, ``3<<EOF``, several on one
  line, in ``RUN``/``COPY``/``ADD`` and ``ONBUILD`` of those, not in JSON
  form), found by BuildKit's word splitter and read in order;
* the checks BuildKit's instruction parser makes for every instruction:
  unknown instructions, ``FROM`` arguments and stage names, ``COPY``/``ADD``
  arity, ``ENV``/``ARG`` syntax, ``ONBUILD`` restrictions.

Errors are :class:`DockerfileSyntaxError` and name the Dockerfile and line.

:class:`Lexer` is a port of BuildKit's ``shell.Lex`` (quote and escape
removal, ``$VAR`` / ``${VAR…}`` expansion, word splitting), used here for
heredoc detection and by :mod:`ctxpack.dockerfile.analysis` for variable expansion.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from ctxpack.errors import DockerfileSyntaxError, ShellLexError

__all__ = [
    "KNOWN_INSTRUCTIONS",
    "PLACEHOLDER",
    "Dockerfile",
    "Instruction",
    "Lexer",
    "UnknownValue",
    "is_heredoc",
    "parse_dockerfile",
    "parse_heredoc",
    "parse_instruction",
    "split_flags",
]


KNOWN_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})


@dataclass
class Instruction:
    """One instruction.

    ``cmd`` upper-cased; ``flags`` the leading ``--name[=value]`` words in
    order (value ``None`` for a bare flag); ``args`` the arguments as
    BuildKit's parser gives them: JSON array items, or for shell form the
    blank-separated words (``COPY``, ``ADD``, ``FROM``, ``EXPOSE``,
    ``VOLUME``), the quote-keeping words (``ARG``, ``ENV k=v``, ``LABEL``),
    ``[key, value]`` for ``ENV key value``, or the whole rest of the line
    (``RUN``, ``CMD``, ``WORKDIR`` …).  For ``ONBUILD``, ``args`` is
    ``[trigger command, *its args]``, ``flags`` the trigger's flags and
    ``sub`` the trigger itself.  ``text`` is the logical line (continuations
    joined), ``line``/``end_line`` where it starts and ends (heredoc bodies
    included), ``heredocs`` the ``(name, body)`` of each heredoc.
    """

    cmd: str
    args: list[str]
    flags: list[tuple[str, str | None]]
    line: int
    text: str
    json_form: bool = False
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (name, body)
    end_line: int = 0
    word: str = ""  # the instruction word as written
    sub: Instruction | None = None  # ONBUILD: the trigger

    def flag(self, name: str) -> str | None:
        """The last value of ``--name`` (``""`` for a bare flag), or None."""
        val = None
        for k, v in self.flags:
            if k == name:
                val = v if v is not None else ""
        return val

    def flag_values(self, name: str) -> list[str]:
        return [v or "" for k, v in self.flags if k == name]

    def trigger_text(self) -> str:
        """For ``ONBUILD``: the trigger as BuildKit stores it in the image
        (the line without ``ONBUILD``, heredoc bodies appended)."""
        out = re.sub(r"(?i)^[\t\n\f\r ]*ONBUILD[\t\n\f\r ]*", "", self.text, count=1)
        for name, body in self.heredocs:
            out += "\n" + body + name
        return out


@dataclass
class Dockerfile:
    source: str
    escape: str
    directives: dict[str, str]
    instructions: list[Instruction]


# --- character classes as Go sees them ------------------------------------------

def _go_isspace(c: str) -> bool:
    """``unicode.IsSpace``."""
    return c.isspace() and c not in "\x1c\x1d\x1e\x1f"


def _go_strip(s: str) -> str:
    """``strings.TrimSpace``."""
    i, j = 0, len(s)
    while i < j and _go_isspace(s[i]):
        i += 1
    while j > i and _go_isspace(s[j - 1]):
        j -= 1
    return s[i:j]


def _go_lstrip(s: str) -> str:
    i = 0
    while i < len(s) and _go_isspace(s[i]):
        i += 1
    return s[i:]


def _is_digit(c: str) -> bool:
    return unicodedata.category(c) == "Nd"


def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


# --- the shell lexer (BuildKit frontend/dockerfile/shell/lex.go) ---------------------

PLACEHOLDER = "\x00"
"""What :class:`Lexer` puts where a value is unknown (see :class:`UnknownValue`)."""


class UnknownValue:
    """Returned by a variable getter for a value that cannot be known here;
    the lexer substitutes :data:`PLACEHOLDER` for the whole expression that
    depends on it and records ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason

    def __repr__(self) -> str:
        return f"UnknownValue({self.reason!r})"


Getter = Callable[[str], "str | UnknownValue | None"]
_SPECIAL_PARAMS = "@*#?-$!0"


@functools.lru_cache(maxsize=32)
def _plain_run(escape: str, stop: str | None) -> re.Pattern[str]:
    """Characters :meth:`Lexer._stop_on` treats one by one as plain word
    characters: not ``$ < ' "``, the escape, the stop character, or any
    white space (Python's ``\\s`` is a superset of Go's, which only sends
    more characters down the one-by-one path)."""
    special = "$<'\"" + escape + (stop or "")
    return re.compile("[^" + re.escape(special) + "\\s]+")


class _Words:
    """``wordsStruct``: splits on white space outside quotes."""

    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if _go_isspace(ch) and self.in_word:
            if self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        elif not _go_isspace(ch):
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def get(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class Lexer:
    """BuildKit's ``shell.Lex``: ``process_word`` (one word: quotes and escapes
    removed, variables expanded) and ``process_words`` (the same, split into
    words).  ``get(name)`` returns the value, ``None`` for unset, or an
    :class:`UnknownValue`; expressions that depend on an unknown value come
    out as :data:`PLACEHOLDER` and their reasons are in ``unknown_reasons``.
    """

    def __init__(self, escape: str = "\\", *, raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False, skip_quotes: bool = False):
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_quotes = skip_quotes
        self.unknown_reasons: list[str] = []
        self._s = ""
        self._i = 0
        self._get: Getter = lambda name: None

    # scanner
    def _peek(self) -> str | None:
        return self._s[self._i] if self._i < len(self._s) else None

    def _next(self) -> str | None:
        if self._i < len(self._s):
            c = self._s[self._i]
            self._i += 1
            return c
        return None

    def process_word(self, word: str, get: Getter | None = None) -> str:
        return self._process(word, get)[0]

    def process_words(self, word: str, get: Getter | None = None) -> list[str]:
        return self._process(word, get)[1]

    def _process(self, word: str, get: Getter | None) -> tuple[str, list[str]]:
        self._s, self._i = word, 0
        self._get = get or (lambda name: None)
        self.unknown_reasons = []
        try:
            return self._stop_on(None, self.raw_escapes)
        except ShellLexError as e:
            raise ShellLexError(f"failed to process {json.dumps(word)}: {e}") from None

    def _stop_on(self, stop: str | None, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        plain = _plain_run(self.escape, stop)
        while (ch := self._peek()) is not None:
            # A run of characters with no meaning here goes in one step: the
            # same as one add_char each (none is white space), but a 1 MB
            # word costs a regex scan instead of a million calls (issue 16).
            m = plain.match(self._s, self._i)
            if m is not None:
                run = m.group()
                self._i = m.end()
                result.append(run)
                words.buf.append(run)
                words.in_word = True
                continue
            if stop is not None and ch == stop:
                self._next()
                return "".join(result), words.get()
            if ch == "$":
                tmp = self._dollar()
                result.append(tmp)
                words.add_string(tmp)
            elif ch == "<":
                tmp = self._possible_heredoc()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif ch == "'" and not self.skip_quotes:
                tmp = self._single_quote()
                result.append(tmp)
                words.add_raw_string(tmp)
            elif ch == '"' and not self.skip_quotes:
                tmp = self._double_quote(raw_escapes)
                result.append(tmp)
                words.add_raw_string(tmp)
            else:
                c = self._next()
                assert c is not None
                if c == self.escape:
                    if raw_escapes:
                        words.add_raw_char(c)
                        result.append(c)
                    c = self._next()
                    if c is None:
                        break
                    words.add_raw_char(c)
                else:
                    words.add_char(c)
                result.append(c)
        if stop is not None:
            raise ShellLexError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.get()

    def _single_quote(self) -> str:
        out: list[str] = []
        c = self._next()
        if self.raw_quotes:
            out.append(c or "")
        while True:
            c = self._next()
            if c is None:
                raise ShellLexError("unexpected end of statement while looking for matching single-quote")
            if c == "'":
                if self.raw_quotes:
                    out.append(c)
                return "".join(out)
            out.append(c)

    def _double_quote(self, raw_escapes: bool) -> str:
        out: list[str] = []
        c = self._next()
        if self.raw_quotes:
            out.append(c or "")
        while True:
            p = self._peek()
            if p is None:
                raise ShellLexError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                self._next()
                if self.raw_quotes:
                    out.append('"')
                return "".join(out)
            if p == "$":
                out.append(self._dollar())
                continue
            c = self._next()
            assert c is not None
            if c == self.escape:
                if raw_escapes:
                    out.append(c)
                nxt = self._peek()
                if nxt is None:
                    continue  # the loop then fails on the open quote
                if nxt in ('"', "$", self.escape):
                    c = self._next()
                    assert c is not None
            out.append(c)

    def _possible_heredoc(self) -> str:
        self._next()
        if self._peek() != "<":
            return "<"
        self._next()
        space = []
        while (p := self._peek()) is not None and p in "\t\r ":
            space.append(p)
            self._next()
        return "<<" + "".join(space)

    def _name(self) -> str:
        name: list[str] = []
        while (ch := self._peek()) is not None:
            if not name and _is_digit(ch):
                while (p := self._peek()) is not None and _is_digit(p):
                    name.append(p)
                    self._next()
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                self._next()
                return ch
            if not (_is_letter(ch) or _is_digit(ch) or ch == "_"):
                break
            name.append(ch)
            self._next()
        return "".join(name)

    def _lookup(self, name: str) -> str | UnknownValue | None:
        v = self._get(name)
        if isinstance(v, UnknownValue):
            self.unknown_reasons.append(v.reason)
        return v

    def _dollar(self) -> str:
        self._next()  # '$'
        if self._peek() != "{":
            name = self._name()
            if name == "":
                return "$"
            v = self._lookup(name)
            if isinstance(v, UnknownValue):
                return PLACEHOLDER
            if v is None:
                return "$" + name if self.skip_unset else ""
            return v
        self._next()  # '{'
        p = self._peek()
        if p is None:
            raise ShellLexError("syntax error: missing '}'")
        if p in "{}:":
            raise ShellLexError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        chs = ch if ch is not None else "\ufffd"
        if ch == "}":
            v = self._lookup(name)
            if isinstance(v, UnknownValue):
                return PLACEHOLDER
            if v is None:
                return f"${{{name}}}" if self.skip_unset else ""
            return v
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = self._next()
            chs += ch if ch is not None else "\ufffd"
        if null_is_unset or (ch is not None and ch in "+-?#%"):
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise ShellLexError(f"unsupported modifier ({chs}) in substitution")
            try:
                word, _ = self._stop_on("}", raw)
            except ShellLexError:
                if self._peek() is None:
                    raise ShellLexError("syntax error: missing '}'") from None
                raise
            v = self._lookup(name)
            if self.skip_unset and v is None:
                return f"${{{name}{chs}{word}}}"
            if ch == "-":
                if isinstance(v, UnknownValue):
                    return PLACEHOLDER
                return word if v is None or (null_is_unset and v == "") else v
            if ch == "+":
                if isinstance(v, UnknownValue):
                    return PLACEHOLDER
                return "" if v is None or (null_is_unset and v == "") else word
            if ch == "?":
                if isinstance(v, UnknownValue):
                    return PLACEHOLDER
                if v is None:
                    raise ShellLexError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and v == "":
                    raise ShellLexError(f"{name}: {word or 'is not allowed to be empty'}")
                return v
            if ch in ("%", "#"):
                greedy = False
                if word and word[0] == ch:
                    greedy = True
                    word = word[1:]
                if isinstance(v, UnknownValue) or PLACEHOLDER in word:
                    _pattern_regex(word, greedy, True)  # still reject bad patterns
                    return PLACEHOLDER
                value = v or ""
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise ShellLexError(f"unsupported modifier ({chs}) in substitution")
        if ch == "/":
            replace_all = self._peek() == "/"
            if replace_all:
                self._next()
            try:
                pattern, _ = self._stop_on("/", True)
            except ShellLexError:
                if self._peek() is None:
                    raise ShellLexError("syntax error: missing '/' in ${}") from None
                raise
            try:
                replacement, _ = self._stop_on("}", True)
            except ShellLexError:
                if self._peek() is None:
                    raise ShellLexError("syntax error: missing '}'") from None
                raise
            v = self._lookup(name)
            if self.skip_unset and v is None:
                return f"${{{name}/{pattern}/{replacement}}}"
            rx = _pattern_regex(pattern, True, False)
            if isinstance(v, UnknownValue) or PLACEHOLDER in pattern or PLACEHOLDER in replacement:
                return PLACEHOLDER
            value = v or ""
            if replace_all:
                return rx.sub(lambda m: replacement, value)
            m = rx.search(value)
            if m:
                value = value[: m.start()] + replacement + value[m.end():]
            return value
        raise ShellLexError(f"unsupported modifier ({chs}) in substitution")


def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """``convertShellPatternToRegex``: ``*``, ``?`` and ``\\`` escapes."""
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    n = len(pattern)
    while i < n:
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            if i < n and pattern[i] in "}/":
                continue
            if i >= n or pattern[i] not in "*?\\":
                bad = pattern[i] if i < n else ""
                raise ShellLexError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{bad}'")
            out.append("\\" + pattern[i])
            i += 1
            continue
        out.append(re.escape(tok))
    return re.compile("".join(out))


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _pattern_regex(pattern, greedy, True).search(value)
    return value[m.end():] if m else value


def _reverse_pattern(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(reversed(out))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


# --- heredocs --------------------------------------------------------------------

_HEREDOC_RE = re.compile(r"([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)\Z")


def parse_heredoc(word: str) -> tuple[str, bool, bool] | None:
    """``parser.ParseHeredoc``: ``(name, chomp, expand)`` when ``word`` is a
    heredoc marker (``<<EOF``, ``<<-'EOF'``, ``3<<EOF`` …), else None."""
    m = _HEREDOC_RE.match(word)
    if not m or m.group(3) == "":
        return None
    rest = m.group(3)
    words = Lexer("\\", skip_unset=True).process_words(rest)
    if len(words) != 1:
        return None
    raw = Lexer("\\", skip_unset=True, raw_quotes=True).process_words(rest)
    if len(raw) != 1:
        raise ShellLexError(f"internal lexing of heredoc produced inconsistent results: {rest}")
    name = words[0]
    expand = (name.count("'") + name.count('"')) == (raw[0].count("'") + raw[0].count('"'))
    return name, m.group(2) == "-", expand


def is_heredoc(word: str) -> bool:
    """``parser.MustParseHeredoc(word) != nil`` (errors count as no)."""
    try:
        return parse_heredoc(word) is not None
    except ShellLexError:
        return False


def _heredocs_from_line(line: str) -> list[tuple[str, bool]]:
    """``heredocsFromLine``: the heredoc words of a line, in order."""
    try:
        words = Lexer("\\", raw_quotes=True, raw_escapes=True, skip_unset=True).process_words(line)
    except ShellLexError:
        return []  # BuildKit ignores the error: no heredocs
    out = []
    for w in words:
        h = parse_heredoc(w)
        if h is not None:
            out.append((h[0], h[1]))
    return out


# --- instruction-level parsing (split_command.go, line_parsers.go) ------------------

_TOKEN_WS = re.compile(r"[\t\v\f\r ]+")


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """``extractBuilderFlags``: the leading ``--flag`` words (quotes and
    escapes removed) and the rest of the line."""
    words: list[str] = []
    word: list[str] = []
    phase = 0  # 0 spaces, 1 word, 2 quote
    quote = ""
    blank_ok = False
    n = len(line)
    pos = 0
    while pos <= n:
        ch = line[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if _go_isspace(ch):
                pos += 1
                continue
            if ch != "-" or pos + 1 == n or line[pos + 1] != "-":
                return line[pos:], words
            phase = 1
        if phase in (1, 2) and pos == n:
            w = "".join(word)
            if w != "--" and (blank_ok or w):
                words.append(w)
            break
        if phase == 1:
            if _go_isspace(ch):
                w = "".join(word)
                phase = 0
                if w == "--":
                    return line[pos:], words
                if blank_ok or w:
                    words.append(w)
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = 2
                pos += 1
                continue
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        # phase 2: in quotes
        if ch == quote:
            phase = 1
            pos += 1
            continue
        if ch == escape:
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", words


def _parse_words(rest: str, escape: str) -> list[str]:
    """``parseWords``: white-space separated words; quotes and escapes are
    kept (they are removed when the word is expanded)."""
    words: list[str] = []
    buf: list[str] = []
    phase = 0
    quote = ""
    blank_ok = False
    n = len(rest)
    pos = 0
    while pos <= n:
        ch = rest[pos] if pos < n else ""
        if phase == 0:
            if pos == n:
                break
            if _go_isspace(ch):
                pos += 1
                continue
            phase = 1
        if phase in (1, 2) and pos == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == 1:
            if _go_isspace(ch):
                phase = 0
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                pos += 1
                continue
            if ch in "'\"":
                quote = ch
                blank_ok = True
                phase = 2
            if ch == escape:
                if pos + 1 == n:
                    pos += 1
                    continue
                buf.append(ch)
                pos += 1
                ch = rest[pos]
            buf.append(ch)
            pos += 1
            continue
        # in quotes
        if ch == quote:
            phase = 1
        if ch == escape and quote != "'":
            if pos + 1 == n:
                phase = 1
                pos += 1
                continue
            buf.append(ch)
            pos += 1
            ch = rest[pos]
        buf.append(ch)
        pos += 1
    return words


class _NotStringArray(Exception):
    pass


def _reject_constant(name: str) -> object:
    raise ValueError(name)


def _parse_json(rest: str) -> list[str] | None:
    """``parseJSON``: the array, None when ``rest`` is not a JSON array (shell
    form); raises when it is an array holding a non-string."""
    rest = _go_lstrip(rest)
    if not rest.startswith("["):
        return None
    try:
        parsed = json.loads(rest, parse_constant=_reject_constant)
    except ValueError:
        return None
    if not isinstance(parsed, list):
        return None
    if not all(isinstance(x, str) for x in parsed):
        raise _NotStringArray()
    return parsed


def split_flags(words: list[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Leading ``--name[=value]`` words, then the rest (a ``--`` word ends the
    flags)."""
    flags: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words) and words[i].startswith("--"):
        w = words[i][2:]
        i += 1
        if w == "":
            break
        k, eq, v = w.partition("=")
        flags.append((k, v if eq else None))
    return flags, words[i:]


def _flag_pairs(words: list[str]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for w in words:
        k, eq, v = w[2:].partition("=")
        out.append((k, v if eq else None))
    return out


def parse_instruction(logical: str, line: int, source: str = "Dockerfile", escape: str = "\\") -> Instruction:
    """One logical line as BuildKit's ``newNodeFromLine`` reads it."""
    stripped = _go_strip(logical)
    parts = _TOKEN_WS.split(stripped, maxsplit=1)
    word = parts[0]
    cmd = word.upper()
    rest = ""
    flag_words: list[str] = []
    if len(parts) == 2:
        rest, flag_words = _extract_flags(parts[1], escape)
    rest = _go_strip(rest)
    inst = Instruction(cmd, [], _flag_pairs(flag_words), line, logical, word=word)
    try:
        if cmd in ("ADD", "COPY", "VOLUME"):
            js = _parse_json(rest)
            if js is not None:
                inst.args, inst.json_form = js, True
            elif rest:
                inst.args = _TOKEN_WS.split(rest)
        elif cmd in ("CMD", "ENTRYPOINT", "RUN", "SHELL"):
            if rest:
                js = _parse_json(rest)
                if js is not None:
                    inst.args, inst.json_form = js, True
                else:
                    inst.args = [rest]
        elif cmd in ("FROM", "EXPOSE"):
            if rest:
                inst.args = _TOKEN_WS.split(rest)
        elif cmd == "ARG":
            inst.args = _parse_words(rest, escape)
        elif cmd in ("ENV", "LABEL"):
            words = _parse_words(rest, escape)
            if words and "=" not in words[0]:
                kv = _TOKEN_WS.split(rest, maxsplit=1)
                if len(kv) < 2:
                    raise DockerfileSyntaxError(f"{cmd} must have two arguments", source, line)
                inst.args = kv
            else:
                for w in words:
                    if "=" not in w:
                        raise DockerfileSyntaxError(
                            f"Syntax error - can't find = in {json.dumps(w)}. Must be of the form: name=value",
                            source, line)
                inst.args = words
        elif cmd == "HEALTHCHECK":
            m = re.match(r"(\S*)\s*(.*)\Z", rest, re.DOTALL)
            assert m
            typ, tail = m.group(1), m.group(2)
            if typ:
                js = _parse_json(tail) if tail else None
                if js is not None:
                    inst.args, inst.json_form = [typ, *js], True
                else:
                    inst.args = [typ, tail] if tail else [typ]
        elif cmd in ("MAINTAINER", "STOPSIGNAL", "USER", "WORKDIR"):
            if rest:
                inst.args = [rest]
        elif cmd == "ONBUILD":
            if rest:
                sub = parse_instruction(rest, line, source, escape)
                inst.sub = sub
                inst.args = [sub.cmd, *sub.args]
                inst.flags = sub.flags
                inst.json_form = sub.json_form
        else:
            inst.args = [rest] if rest else []
    except _NotStringArray:
        raise DockerfileSyntaxError("when using JSON array syntax, arrays must be comprised of strings only",
                                    source, line) from None
    return inst


_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*\Z")


def _check(inst: Instruction, source: str) -> None:
    """The checks BuildKit's ``instructions.Parse`` makes on every instruction."""
    cmd, args, line = inst.cmd, inst.args, inst.line

    def fail(msg: str) -> None:
        raise DockerfileSyntaxError(msg, source, line)

    if cmd not in KNOWN_INSTRUCTIONS:
        fail(f"unknown instruction: {inst.word}")
    if cmd == "FROM":
        if len(args) == 3 and args[1].lower() == "as":
            if not _STAGE_NAME.match(args[2].lower()):
                fail(f"invalid name for build stage: {json.dumps(args[2])}, name can't start with a number or contain symbols")
        elif len(args) != 1:
            fail("FROM requires either one or three arguments")
    elif cmd in ("COPY", "ADD"):
        if len(args) < 2:
            fail(f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined")
        if is_heredoc(args[-1]):
            fail(f"{cmd} cannot accept a heredoc as a destination")
    elif cmd in ("ENV", "LABEL"):
        if not args:
            fail(f"{cmd} requires at least one argument")
        if "=" in args[0] and any(a.partition("=")[0] == "" for a in args):
            fail(f"{cmd} names can not be blank")
    elif cmd == "ARG":
        if not args:
            fail("ARG requires at least one argument")
        if any("=" in a and a.partition("=")[0] == "" for a in args):
            fail("ARG names can not be blank")
    elif cmd == "ONBUILD":
        if inst.sub is None:
            fail("ONBUILD requires at least one argument")
        assert inst.sub is not None
        if inst.sub.cmd == "ONBUILD":
            fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if inst.sub.cmd in ("MAINTAINER", "FROM"):
            fail(f"{inst.sub.cmd} isn't allowed as an ONBUILD trigger")
    elif cmd in ("WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER"):
        if len(args) != 1:
            fail(f"{cmd} requires exactly one argument")
    elif cmd in ("EXPOSE", "VOLUME", "HEALTHCHECK") and not args:
        fail(f"{cmd} requires at least one argument")


# --- the file (parser.go Parse) ---------------------------------------------------------

_WS = r"[\t\n\f\r ]"
_DIRECTIVE = re.compile(rf"#{_WS}*([a-zA-Z][a-zA-Z0-9]*){_WS}*={_WS}*(.+?){_WS}*\Z", re.DOTALL)
_VALID_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_CMDS = ("RUN", "COPY", "ADD")


def _continuation_re(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"(?:([^{e}]){e}[ \t]*|^{e}[ \t]*)\Z", re.DOTALL)


def _physical_lines(text: str) -> list[str]:
    """``scanLines``: lines with their ``\\n`` kept."""
    parts = text.split("\n")
    out = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def _trim_newline(s: str) -> str:
    return s.rstrip("\r\n")


def _is_comment(raw: str) -> bool:
    return _go_lstrip(_trim_newline(raw)).startswith("#")


def parse_dockerfile(data: bytes | str, source: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile into instructions (see the module docstring)."""
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    lines = _physical_lines(text)
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    escape = "\\"
    cont_re = _continuation_re(escape)
    directives: dict[str, str] = {}
    directives_done = False

    def process_line(raw: str, strip_left: bool, lineno: int) -> str:
        nonlocal escape, cont_re, directives_done
        tok = _trim_newline(raw)
        if strip_left:
            tok = _go_lstrip(tok)
        if not directives_done:
            m = _DIRECTIVE.match(tok)
            if not m or m.group(1).lower() not in _VALID_DIRECTIVES:
                directives_done = True
            else:
                key = m.group(1).lower()
                if key in directives:
                    raise DockerfileSyntaxError(f"only one {key} parser directive can be used", source, lineno)
                directives[key] = m.group(2)
                if key == "escape":
                    if m.group(2) not in ("\\", "`"):
                        raise DockerfileSyntaxError(
                            f"invalid escape token '{m.group(2)}' does not match ` or \\", source, lineno)
                    escape = m.group(2)
                    cont_re = _continuation_re(escape)
        return "" if tok.startswith("#") else tok

    def trim_continuation(tok: str) -> tuple[str, bool]:
        m = cont_re.search(tok)
        if m:
            return tok[: m.start()] + (m.group(1) or ""), True
        return tok, False

    instructions: list[Instruction] = []
    n = len(lines)
    i = 0
    while i < n:
        raw = lines[i]
        i += 1
        start = i
        tok = process_line(raw, True, i)
        logical, cont = trim_continuation(tok)
        if not cont and logical == "":
            continue
        while cont and i < n:
            raw = lines[i]
            i += 1
            tok = process_line(raw, False, i)
            if _is_comment(raw):
                continue  # comment lines inside a continuation are dropped
            if _go_lstrip(_trim_newline(tok)) == "":
                continue  # so are empty ones (BuildKit warns)
            part, cont = trim_continuation(tok)
            logical += part
        inst = parse_instruction(logical, start, source, escape)
        target = inst.sub if inst.cmd == "ONBUILD" and inst.sub is not None else inst
        if target.cmd in _HEREDOC_CMDS and not target.json_form and "<<" in logical:
            try:
                found = _heredocs_from_line(logical)
            except ShellLexError as e:
                raise DockerfileSyntaxError(str(e), source, start) from None
            for name, chomp in found:
                body: list[str] = []
                while True:
                    if i >= n:
                        raise DockerfileSyntaxError(f"unterminated heredoc <<{name}", source, start)
                    raw = lines[i]
                    i += 1
                    cand = _trim_newline(raw)
                    if chomp:
                        cand = cand.lstrip("\t")
                    if cand == name:
                        break
                    body.append(raw)
                inst.heredocs.append((name, "".join(body)))
        inst.end_line = i
        _check(inst, source)
        instructions.append(inst)
    if not instructions:
        raise DockerfileSyntaxError("file with no instructions", source, max(n, 1))
    return Dockerfile(source, escape, directives, instructions)
