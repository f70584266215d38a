"""Go's ``strings.TrimSpace`` and ``path/filepath.Clean``, with Go's exact rules."""

from __future__ import annotations

__all__ = ["go_clean", "go_trim_space"]

# Go's unicode.IsSpace set (used by strings.TrimSpace).  Python's str.strip()
# also removes U+001C..U+001F, which Go keeps.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def go_trim_space(s: str) -> str:
    """``strings.TrimSpace`` with Go's white-space set."""
    return s.strip(_GO_SPACE)


def go_clean(path: str) -> str:
    """Go ``path/filepath.Clean`` on a ``/``-separated path (lexical only).

    Unlike ``os.path.normpath``, ``//a`` becomes ``/a`` and ``..`` at a rooted
    start is dropped.
    """
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part == "" or part == ".":
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            # rooted: ".." at the root is dropped
            continue
        out.append(part)
    body = "/".join(out)
    if rooted:
        return "/" + body
    return body or "."
