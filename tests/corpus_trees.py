"""Scratch context trees generated from real-world ignore files.

A test helper (not a test module) for ``tests/test_corpus.py``.  For each
pattern of an ignore file (after Docker's parsing, :func:`ctxpack.parse_ignore`)
it derives paths that hit it:

* the pattern filled in: ``*`` becomes ``x``, nothing, or a dotted ``.z``;
  ``?`` becomes ``q``, nothing, or ``7``; a character class a member, then a
  non-member; ``**`` zero, one and two directory levels; ``\\c`` the literal c;
* for a pattern whose leading wildcard segments match a directory that a
  ``!`` rule re-includes, the pattern filled with that directory;
* the pattern text itself as a literal name when it holds ``*``, ``?``, ``[``
  or ``\\`` (so ``*.py[cod]`` is also a file called ``*.py[cod]``);
* every such path at depth 0, 1 and 2 (under ``sub/`` and ``a/b/``), to tell
  Docker's root-anchored patterns from gitignore habits, and under the first
  two directories that ``!`` rules re-include (``!airflow`` then
  ``**/__pycache__`` must reach ``airflow/__pycache__``);
* each path as a directory at one depth and as a file at the next, with a
  plain file or a dotfile inside directories (empty ones at depth 2), and
  for ``!`` rules a sibling that the exception does not re-include.

Everything is deterministic (no randomness): the same ignore file always
yields the same tree.  Generation goes breadth-first over (variant, depth) so
that every rule gets its first, most typical paths before any rule gets more,
and stops at a cap (:data:`DEFAULT_CAP`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import ctxpack

#: Where the shared corpus lives relative to the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_ROOT = REPO_ROOT.parent / "shared" / "corpus"
IGNORE_DIR = CORPUS_ROOT / "dockerignore"

#: Prefixes that put a pattern at depth 0, 1 and 2.
DEPTHS = ("", "sub/", "a/b/")

#: At most this many explicit paths (files and directories) per tree, beyond
#: the fixed ones (Dockerfile, .dockerignore, a few plain files and dotfiles).
DEFAULT_CAP = 500

DOCKERFILE_TEXT = b"FROM scratch\nCOPY . /ctx\n"

# Fill options per wildcard; variant k uses option k % len(options).
STAR_FILLS = ("x", "", ".z")
QMARK_FILLS = ("q", "", "7")
DSTAR_FILLS = ("", "d1", "d1/d2")
CLASS_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"

#: How many directories re-included by `!` rules also serve as prefixes.
EXCEPTION_PREFIXES = 2

FIXED_FILES = ("plain.txt", ".hidden", "sub/plain.txt", "sub/.hidden", "a/b/plain.txt", "a/b/.hidden")


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str  # lit, star, dstar, qmark, cls
    text: str = ""
    options: tuple[str, ...] = ()


def _class_options(text: str) -> tuple[str, ...]:
    """A member and a non-member of the class ``text`` (``[...]``)."""
    try:
        rx = re.compile(text)
    except re.error:
        return (text,)
    members = [c for c in CLASS_ALPHABET if rx.fullmatch(c)]
    others = [c for c in CLASS_ALPHABET if not rx.fullmatch(c)]
    opts = []
    if members:
        opts.append(members[0])
    if others:
        opts.append(others[0])
    return tuple(opts) or (text,)


def tokenize(pattern: str) -> list[Token]:
    """Split a cleaned pattern into literal runs and wildcards."""
    out: list[Token] = []
    lit: list[str] = []

    def flush() -> None:
        if lit:
            out.append(Token("lit", "".join(lit)))
            lit.clear()

    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n:
                lit.append(pattern[i + 1])
                i += 2
            else:
                lit.append("\\")
                i += 1
        elif c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            flush()
            if j - i >= 2:
                out.append(Token("dstar", options=DSTAR_FILLS))
            else:
                out.append(Token("star", options=STAR_FILLS))
            i = j
        elif c == "?":
            flush()
            out.append(Token("qmark", options=QMARK_FILLS))
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "^!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1 + (pattern[j] == "\\")
            if j < n:
                flush()
                text = pattern[i : j + 1]
                out.append(Token("cls", text, _class_options(text)))
                i = j + 1
            else:
                lit.append(c)
                i += 1
        else:
            lit.append(c)
            i += 1
    flush()
    return out


def _normalise(path: str) -> str | None:
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return None
    return "/".join(parts)


def instantiations(pattern: str) -> list[str]:
    """Paths that (mostly) hit ``pattern``: its variants, best first."""
    tokens = tokenize(pattern)
    count = max((len(t.options) for t in tokens if t.kind != "lit"), default=1)
    out: list[str] = []
    for k in range(count):
        text = "".join(t.text if t.kind == "lit" else t.options[k % len(t.options)] for t in tokens)
        p = _normalise(text)
        if p is not None and p not in out:
            out.append(p)
    if any(c in pattern for c in "*?[\\"):
        # The pattern's own text as a name: a literal '*', '[' or '\'.
        p = _normalise(pattern)
        if p is not None and p not in out:
            out.insert(min(1, len(out)), p)
    return out


def cross_variants(pattern: str, exception_paths: list[str], limit: int = 2) -> list[str]:
    """``pattern`` with leading wildcard segments filled from re-included
    directories: ``common/*/node_modules`` and ``!common/hogvm`` give
    ``common/hogvm/node_modules``, ``**/dist`` and ``!companion`` give
    ``companion/dist``: paths inside the allowed directory."""
    if "\\" in pattern:
        return []
    segs = pattern.split("/")
    out: list[str] = []
    for e in exception_paths:
        es = e.split("/")
        filled = False
        tail = segs[len(es):]
        for i, (s, x) in enumerate(zip(segs, es)):
            if s == x:
                continue
            if s == "**":  # absorbs the rest of the directory
                filled, tail = True, segs[i + 1:]
                break
            if any(c in s for c in "*?[") and fnmatch.fnmatchcase(x, s):
                filled = True
                continue
            filled = False
            break
        rest = instantiations("/".join(tail)) if filled and tail else []
        if rest:
            p = _normalise(e + "/" + rest[0])
            if p is not None and p not in out:
                out.append(p)
        if len(out) >= limit:
            break
    return out


def _looks_like_dir(path: str) -> bool:
    last = path.rsplit("/", 1)[-1]
    return "." not in last[1:]


# --------------------------------------------------------------------------
# Trees
# --------------------------------------------------------------------------


@dataclass
class TreePlan:
    """The paths of one scratch context, before they are created."""

    cap: int = DEFAULT_CAP
    reserved: frozenset[str] = frozenset({"Dockerfile", ".dockerignore"})
    kinds: dict[str, str] = field(default_factory=dict)  # explicit paths
    parents: set[str] = field(default_factory=set)  # implicit directories
    counted: int = 0

    def add(self, path: str, kind: str, *, counted: bool = True) -> bool:
        """Register ``path`` as a file or dir unless it conflicts."""
        if counted and self.counted >= self.cap:
            return False
        parts = path.split("/")
        ancestors = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if path in self.reserved or any(a in self.reserved or self.kinds.get(a) == "file" for a in ancestors):
            return False
        have = self.kinds.get(path)
        if have is not None:
            return have == kind
        if kind == "file" and path in self.parents:
            return False
        self.kinds[path] = kind
        self.parents.update(ancestors)
        if counted:
            self.counted += 1
        return True

    def paths(self) -> list[str]:
        return sorted(self.kinds)

    def create(self, root: Path, files: dict[str, bytes]) -> Path:
        """Create the tree under ``root`` with ``files`` (exact contents) on top."""
        root.mkdir(parents=True, exist_ok=True)
        for rel in self.paths():
            p = root / rel
            if self.kinds[rel] == "dir":
                p.mkdir(parents=True, exist_ok=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"x")
        for rel, data in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return root


def plan_tree(ignore: bytes, *, cap: int = DEFAULT_CAP, reserved: tuple[str, ...] = ()) -> TreePlan:
    """The scratch tree for one ignore file's content."""
    plan = TreePlan(cap=cap, reserved=frozenset({"Dockerfile", ".dockerignore", *reserved}))
    for r in reserved:
        for i in range(1, r.count("/") + 1):
            plan.parents.add("/".join(r.split("/")[:i]))
    for f in FIXED_FILES:
        plan.add(f, "file", counted=False)

    rules: list[tuple[bool, list[str]]] = []
    patterns = []
    for raw in ctxpack.parse_ignore(ignore):
        exception = raw.pattern.startswith("!")
        pat = raw.pattern[1:] if exception else raw.pattern
        if pat and pat != ".":
            patterns.append((exception, pat))
            rules.append((exception, instantiations(pat)))
    reincluded = [v[0] for e, v in rules if e and v and "*" not in v[0]]
    crossed = [(e, cross_variants(p, reincluded)) for e, p in patterns]

    # Directories that `!` rules re-include (as in "'**' then '!src'"): every
    # pattern is also placed under the first two of them, so that re-exclusions
    # inside an allowed directory ('!airflow' then '**/__pycache__') are hit.
    prefixes = list(DEPTHS)
    for exception, variants in rules:
        if exception and len(prefixes) < len(DEPTHS) + EXCEPTION_PREFIXES:
            p = variants[0] + "/" if variants and _looks_like_dir(variants[0]) else None
            if p and p not in prefixes and p.split("/", 1)[0] not in plan.reserved:
                prefixes.append(p)

    # Breadth-first: every rule's first variant at depth 0, then the variants
    # filled with re-included directories, the first variant at the other
    # depths, the other variants at depth 0, the other variants deeper.
    max_variants = max((len(v) for _, v in rules), default=0)
    tiers: list[tuple[list[tuple[bool, list[str]]], int, int]] = [(rules, 0, 0)]
    tiers += [(crossed, v, 0) for v in range(2)]
    tiers += sorted(
        ((rules, v, d) for v in range(max_variants) for d in range(len(prefixes)) if (v, d) != (0, 0)),
        key=lambda t: (t[1] > 0, t[2] > 0, t[1], t[2]),
    )
    for table, v, d in tiers:
        for exception, variants in table:
            if v >= len(variants):
                continue
            path = prefixes[d] + variants[v]
            as_dir = _looks_like_dir(variants[v]) == (d % 2 == 0)
            if not plan.add(path, "dir" if as_dir else "file"):
                continue
            if as_dir and d != 2:
                # A plain file or a dotfile inside; a depth-2 directory stays empty.
                plan.add(path + ("/.keep" if d % 2 else "/keep.txt"), "file")
            if exception:
                parent = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
                plan.add(parent + "zz-other.txt", "file")
    return plan


# --------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusFile:
    """One ignore file of the corpus and where it lived in its repository."""

    name: str  # file name in the corpus folder
    path: Path
    repo_path: str  # path inside the source repository

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    @property
    def per_dockerfile(self) -> bool:
        """``NAME.Dockerfile.dockerignore`` / ``Dockerfile.dockerignore``."""
        base = self.repo_path.rsplit("/", 1)[-1]
        return base != ".dockerignore" and base.endswith(".dockerignore")

    @property
    def dockerfile(self) -> str:
        """For a per-Dockerfile ignore file: its Dockerfile's repository path."""
        assert self.per_dockerfile
        return self.repo_path[: -len(".dockerignore")]


def corpus_files() -> list[CorpusFile]:
    """The corpus's ignore files, in name order (empty without the corpus)."""
    if not IGNORE_DIR.is_dir():
        return []
    paths: dict[str, str] = {}
    sources = CORPUS_ROOT / "SOURCES.tsv"
    if sources.is_file():
        for line in sources.read_text(encoding="utf-8").splitlines()[1:]:
            cols = line.split("\t")
            if len(cols) >= 3 and cols[0].startswith("dockerignore/"):
                paths[cols[0][len("dockerignore/"):]] = cols[2]
    out = []
    for entry in sorted(os.listdir(IGNORE_DIR)):
        p = IGNORE_DIR / entry
        if not p.is_file():
            continue
        repo_path = paths.get(entry) or entry.split("__", 2)[-1].replace("__", "/")
        out.append(CorpusFile(entry, p, repo_path))
    return out
