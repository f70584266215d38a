"""Hypothesis strategies: odd context trees and .dockerignore files drawn from them."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

# Characters that stress the matcher: glob and regex syntax, escapes, spaces,
# comment and exception markers, non-ASCII, and an undecodable byte.
NAME_CHARS = "abcAB019._- []*?\\#!{}|^$+()é✓,"
INVALID_BYTE = "\udcff"  # the byte 0xff as a surrogate escape


@st.composite
def names(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        # long names: past tar's 100-byte name field
        base = draw(st.text("abcdef", min_size=1, max_size=3))
        return (base * 60)[: draw(st.integers(90, 160))]
    if kind == 1:
        return "x" + INVALID_BYTE + draw(st.text("ab", max_size=2))
    n = draw(st.text(NAME_CHARS, min_size=1, max_size=6))
    if n in (".", ".."):
        n += "x"
    return n


@dataclass
class Node:
    path: str
    kind: str  # file, dir, symlink, fifo, hardlink
    target: str = ""
    mode: int = 0o644
    children: list[Node] = field(default_factory=list)


@st.composite
def trees(draw: st.DrawFn, max_depth: int = 3) -> list[Node]:
    """A flat list of nodes (parents before children)."""
    out: list[Node] = []
    files: list[str] = []

    def level(prefix: str, depth: int) -> None:
        count = draw(st.integers(0 if depth else 1, 4))
        used: set[str] = set()
        for _ in range(count):
            n = draw(names())
            if n in used or (not prefix and n in ("Dockerfile", ".dockerignore")):
                continue
            used.add(n)
            p = prefix + n
            k = draw(st.sampled_from(["file"] * 5 + ["dir"] * 4 + ["symlink", "fifo", "hardlink"]))
            if k == "dir" and depth < max_depth:
                out.append(Node(p, "dir", mode=draw(st.sampled_from([0o755, 0o700, 0o1777]))))
                level(p + "/", depth + 1)
            elif k == "symlink":
                tgt = draw(st.sampled_from(["../outside", "/etc/hostname", "dangling", "Dockerfile", "."]))
                out.append(Node(p, "symlink", target=tgt))
            elif k == "fifo":
                out.append(Node(p, "fifo"))
            elif k == "hardlink" and files:
                out.append(Node(p, "hardlink", target=draw(st.sampled_from(files))))
            else:
                out.append(Node(p, "file", mode=draw(st.sampled_from([0o644, 0o755, 0o600, 0o4755]))))
                files.append(p)

    level("", 0)
    return out


def _escape(component: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in component)


@st.composite
def pattern_for(draw: st.DrawFn, paths: list[str]) -> str:
    """A pattern derived from a tree path, or a raw one."""
    choice = draw(st.integers(0, 9))
    if not paths or choice == 0:
        raw = draw(st.text("ab*?[]!/\\.-^{}|é", min_size=1, max_size=6))
        return raw
    path = draw(st.sampled_from(paths))
    parts = path.split("/")
    cut = draw(st.integers(1, len(parts)))
    parts = parts[:cut]
    out = []
    for comp in parts:
        how = draw(st.integers(0, 7))
        if how == 0:
            out.append("*")
        elif how == 1 and comp:
            out.append(comp[:-1] + "?")
        elif how == 2 and comp:
            c = comp[0]
            out.append(("[" + c + "]" if c not in "]\\^-[" else "[\\" + c + "]") + _escape(comp[1:]))
        elif how == 3:
            out.append(_escape(comp[: max(1, len(comp) // 2)]) + "*")
        elif how == 4:
            out.append("**")
        else:
            out.append(comp if draw(st.booleans()) else _escape(comp))
    p = "/".join(out)
    deco = draw(st.integers(0, 9))
    if deco == 0:
        p = "**/" + p
    elif deco == 1:
        p = p + "/**"
    elif deco == 2:
        p = "/" + p
    elif deco == 3:
        p = "./" + p + "/"
    elif deco == 4:
        p = p + "/*"
    return p


@st.composite
def dockerignores(draw: st.DrawFn, nodes: list[Node]) -> str:
    paths = [n.path for n in nodes] + ["Dockerfile", ".dockerignore"]
    lines = []
    deep = [p for p in paths if "/" in p]
    if deep and draw(st.booleans()):
        # The interesting case: an excluded directory and an exception that
        # may (or may not) reach below it, literally or through wildcards.
        p = draw(st.sampled_from(deep))
        parts = p.split("/")
        lines.append("/".join(parts[: draw(st.integers(1, len(parts) - 1))]))
        lines.append("!" + draw(pattern_for([p])))
    for _ in range(draw(st.integers(0, 5))):
        p = draw(pattern_for(paths))
        kind = draw(st.integers(0, 9))
        if kind <= 2:
            p = "!" + p
        elif kind == 3:
            p = "  " + p + " "
        elif kind == 4:
            p = "# " + p
        lines.append(p)
    sep = draw(st.sampled_from(["\n", "\r\n"]))
    return sep.join(lines) + (sep if lines and draw(st.booleans()) else "")


@contextlib.contextmanager
def built(nodes: list[Node], dockerignore: str | None) -> Iterator[Path]:
    """A generated tree in a fresh temporary directory, removed afterwards
    (hypothesis examples cannot use pytest's tmp_path)."""
    tmp = Path(tempfile.mkdtemp(prefix="ctxpack-gen-"))
    try:
        yield build(tmp / "ctx", nodes, dockerignore)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build(root: Path, nodes: list[Node], dockerignore: str | None) -> Path:
    """Create the tree on disk (names as raw bytes)."""
    broot = os.fsencode(root)
    os.makedirs(broot, exist_ok=True)
    with open(os.path.join(broot, b"Dockerfile"), "wb") as f:
        f.write(b"FROM scratch\n")
    if dockerignore is not None:
        with open(os.path.join(broot, b".dockerignore"), "wb") as f:
            f.write(dockerignore.encode("utf-8", "surrogateescape"))
    dirs = []
    for n in nodes:
        p = os.path.join(broot, n.path.encode("utf-8", "surrogateescape"))
        if n.kind == "dir":
            os.mkdir(p)
            dirs.append((p, n.mode))
        elif n.kind == "file":
            with open(p, "wb") as f:
                f.write(n.path.encode("utf-8", "surrogateescape")[:50])
            os.chmod(p, n.mode)
        elif n.kind == "symlink":
            os.symlink(n.target, p)
        elif n.kind == "fifo":
            os.mkfifo(p)
        elif n.kind == "hardlink":
            os.link(os.path.join(broot, n.target.encode("utf-8", "surrogateescape")), p)
    for p, mode in reversed(dirs):
        os.chmod(p, mode)
    return root


TAR_TYPES = {"file": "0", "hardlink": "1", "symlink": "2", "char": "3", "block": "4", "dir": "5", "fifo": "6"}


def tar_type(member: object) -> str:
    return member.type.decode()  # type: ignore[attr-defined]


def is_setuid(mode: int) -> bool:
    return bool(mode & stat.S_ISUID)
