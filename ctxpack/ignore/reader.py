"""Reading ``.dockerignore`` files exactly as Docker does.

Mirrors ``moby/patternmatcher:ignorefile.ReadAll`` (shared by the docker CLI and
BuildKit): split on ``\\n`` with one trailing ``\\r`` dropped, UTF-8 BOM stripped
from the first line only, ``#`` comments only in column 1, Go ``TrimSpace``,
``!`` exceptions, Go ``filepath.Clean`` and one leading ``/`` removed.

Parsing never fails on pattern syntax; the matcher checks syntax
(:mod:`ctxpack.ignore.pattern`).  Lines are kept with their 1-based line numbers so
that every later message can name ``file:line``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ctxpack._go.strings import go_clean, go_trim_space
from ctxpack.errors import IgnoreFileError

__all__ = [
    "RawRule",
    "parse_ignore",
    "parse_lines",
    "read_ignore_file",
    "MAX_LINE",
]

# bufio.Scanner's default token limit: a longer line aborts parsing
# ("bufio.Scanner: token too long").
MAX_LINE = 64 * 1024

_BOM = "\ufeff"


@dataclass(frozen=True, slots=True)
class RawRule:
    """One pattern line of an ignore file, after Docker's parsing.

    ``pattern`` is what ``ReadAll`` returns (with a leading ``!`` for
    exceptions); ``text`` is the line as written, for messages.
    """

    pattern: str
    line: int
    text: str
    source: str


def parse_ignore(data: bytes, source: str = ".dockerignore") -> list[RawRule]:
    """Parse the bytes of an ignore file into rules, as ``ReadAll`` does.

    Undecodable bytes survive as surrogate escapes so that patterns compare
    byte for byte with file names, as in Go.
    """
    rules: list[RawRule] = []
    raw_lines = data.split(b"\n")
    # Go's scanner yields no final empty token after a trailing newline.
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for number, raw in enumerate(raw_lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_LINE:
            raise IgnoreFileError("bufio.Scanner: token too long", source, number)
        line = raw.decode("utf-8", "surrogateescape")
        if number == 1 and line.startswith(_BOM):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = go_trim_space(line)
        if not pattern:
            continue
        exception = pattern.startswith("!")
        if exception:
            pattern = go_trim_space(pattern[1:])
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        if exception:
            pattern = "!" + pattern
        rules.append(RawRule(pattern=pattern, line=number, text=line, source=source))
    return rules


def parse_lines(lines: Iterable[str], source: str = "<lines>") -> list[RawRule]:
    """Parse ``lines`` as the lines of an ignore file (line numbers from 1).

    For rules that come as a list (docker-py's ``exclude``, a config file):
    comments, ``!``, trimming and cleaning work as in a ``.dockerignore``.
    """
    return parse_ignore(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"), source)


def read_ignore_file(path: str | os.PathLike[str], source: str | None = None) -> list[RawRule] | None:
    """Read and parse an ignore file; ``None`` when it does not exist.

    Symlinks are followed, even out of the context, as the docker CLI does
    (``os.Open``).  Any other read error is an :class:`IgnoreFileError`.
    """
    name = source if source is not None else os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise IgnoreFileError("is a directory, not an ignore file", name) from None
    except OSError as e:
        raise IgnoreFileError(f"cannot read: {e.strerror}", name) from None
    return parse_ignore(data, name)
