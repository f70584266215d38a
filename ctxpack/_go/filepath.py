"""Go's ``path/filepath.Match``, used only for Docker's load-time syntax check.

``patternmatcher.New`` calls ``filepath.Match(pattern, ".")`` and refuses the
pattern if that returns ``ErrBadPattern``.  The check is partial and its
coverage depends on matching against ``"."``: the first chunk is always fully
validated, later chunks only while earlier ones matched.  So ``[`` and ``x\\``
are refused at load time while ``a*[`` is accepted (and fails later, at its
first evaluation).  This module reproduces that exactly, on bytes, as Go works
on the bytes of a string (Go >= 1.16 ``matchChunk`` with its ``failed`` flag).
"""

from __future__ import annotations

from ctxpack.errors import BadPattern

__all__ = ["go_match", "syntax_ok"]


_RUNE_ERROR = 0xFFFD


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """Go ``utf8.DecodeRune``: (rune, width); invalid input is (RuneError, 1)."""
    c = b[i]
    if c < 0x80:
        return c, 1
    for width in (2, 3, 4):
        chunk = b[i : i + width]
        if len(chunk) < width:
            break
        try:
            s = chunk.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(s) == 1:
            return ord(s), width
    return _RUNE_ERROR, 1


def _scan_chunk(pattern: bytes) -> tuple[bool, bytes, bytes]:
    star = False
    while pattern[:1] == b"*":
        pattern = pattern[1:]
        star = True
    inrange = False
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x5C:  # backslash: skip the escaped byte
            if i + 1 < n:
                i += 1
        elif c == 0x5B:  # [
            inrange = True
        elif c == 0x5D:  # ]
            inrange = False
        elif c == 0x2A and not inrange:  # *
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: bytes) -> tuple[int, bytes]:
    if not chunk or chunk[0] in (0x2D, 0x5D):  # '-' or ']'
        raise BadPattern()
    if chunk[0] == 0x5C:
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern()
    r, n = _decode_rune(chunk, 0)
    if r == _RUNE_ERROR and n == 1:
        raise BadPattern()
    rest = chunk[n:]
    if not rest:
        raise BadPattern()
    return r, rest


def _match_chunk(chunk: bytes, s: bytes) -> tuple[bytes, bool]:
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        c = chunk[0]
        if c == 0x5B:  # character class
            r = -1
            if not failed:
                r, n = _decode_rune(s, 0)
                s = s[n:]
            chunk = chunk[1:]
            negated = False
            if chunk[:1] == b"^":
                negated = True
                chunk = chunk[1:]
            match = False
            nrange = 0
            while True:
                if chunk[:1] == b"]" and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == 0x2D:
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= r <= hi:
                    match = True
                nrange += 1
            if match == negated:
                failed = True
        elif c == 0x3F:  # ?
            if not failed:
                if s[0] == 0x2F:
                    failed = True
                _, n = _decode_rune(s, 0)
                s = s[n:]
            chunk = chunk[1:]
        else:
            if c == 0x5C:
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern()
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    if failed:
        return b"", False
    return s, True


def go_match(pattern: bytes, name: bytes) -> bool:
    """Go ``filepath.Match`` (Unix): raises :class:`BadPattern` like Go errors."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return b"/" not in name
        t, ok = _match_chunk(chunk, name)
        if ok and (not t or pattern):
            name = t
            continue
        if star:
            matched = False
            i = 0
            while i < len(name) and name[i] != 0x2F:
                t, ok = _match_chunk(chunk, name[i + 1 :])
                if ok:
                    if not pattern and t:
                        i += 1
                        continue
                    name = t
                    matched = True
                    break
                i += 1
            if matched:
                continue
        return False
    return not name


def syntax_ok(pattern: bytes) -> bool:
    """Whether Docker's load-time check (``filepath.Match(p, ".")``) accepts it."""
    try:
        go_match(pattern, b".")
    except BadPattern:
        return False
    return True
