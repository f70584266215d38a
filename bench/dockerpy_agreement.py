#!/usr/bin/env python3
"""How often does docker-py build the same context as the docker CLI?

Runs every row of ``fixtures/vectors.json`` and ``--n`` generated cases
(trees and ``.dockerignore`` files drawn from ``tests/strategies.py`` with a
fixed seed) through three implementations:

* the docker CLI's real upload (legacy builder, captured with
  ``tests/dockercli.py``) -- the reference;
* ctxpack's classic listing (``ctxpack.list_entries(open_context(...,
  dialect="classic"))``);
* docker-py exactly as ``docker.APIClient.build(path=...)`` builds the
  context: ``.dockerignore`` read the way ``docker/api/build.py`` reads it,
  ``process_dockerfile``, then ``docker.utils.build.tar``.  With ``--e2e``
  (the default) every case is also sent through a real
  ``APIClient.build`` against the capture server to check that mimicry.

It compares (a) the set of names, (b) the names in order and (c) whether
each implementation fails, then attributes every docker-py disagreement to
one cause by "repairing" docker-py one step at a time (Docker's ignore-file
parsing, case-sensitive matching, Go glob semantics); what is left is the
walker (parent matching, exceptions under excluded directories, forced
Dockerfile/.dockerignore).  The smallest example of each cause is shrunk
against the live CLI and the report is written as markdown.

    python bench/dockerpy_agreement.py --n 300

writes ``docs/docker-py-agreement.md`` (``--out -`` prints it instead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import locale
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import docker  # noqa: E402
import docker.api.build as dp_api_build  # noqa: E402
import docker.utils.build as dp_build  # noqa: E402
import docker.utils.fnmatch as dp_fnmatch  # noqa: E402
import hypothesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ctxpack  # noqa: E402
from ctxpack.ignore.pattern import compile_pattern  # noqa: E402
from ctxpack.errors import BrokenPattern, PatternSyntaxError
from dockercli import API_VERSION, CaptureServer, capture_context  # noqa: E402
from strategies import Node, build, dockerignores, trees  # noqa: E402
from trees import load_fixture, tar_names, vector_tree  # noqa: E402

DEFAULT_SEED = 20240611
FORCED = ("Dockerfile", ".dockerignore")


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    label: str
    source: str  # "vector" or "generated"
    ignore: str | None  # .dockerignore text (surrogate escapes = raw bytes)
    dockerfile: str | None = None  # -f, relative to the context
    nodes: list[Node] | None = None  # generated cases
    row: dict[str, Any] | None = None  # vector rows

    def make(self, root: Path) -> Path:
        if self.row is not None:
            return vector_tree(root, self.row)
        assert self.nodes is not None
        return build(root, self.nodes, self.ignore)

    def size(self) -> int:
        n = len(self.ignore or "")
        if self.nodes is not None:
            n += sum(10 + len(x.path) for x in self.nodes)
        elif self.row is not None:
            n += 10 + len(self.row["path"]) + sum(10 + len(p) for p in self.row["extra_paths"])
        return n


def _probe(label: str, ignore: str, spec: str) -> Case:
    """A hand-written case; ``spec`` lists paths, directories end with ``/``."""
    nodes = [Node(p.rstrip("/"), "dir" if p.endswith("/") else "file") for p in spec.split()]
    return Case(label, "probe", ignore, nodes=nodes)


#: Hand-written minimal cases for behaviour the samples may miss (or that
#: users ask about).  Run live like the others, but not counted in the rates.
PROBES = [
    _probe("order: `a/x` vs `a.b`", "", "a/ a/x a.b"),
    _probe("order: `a/x` vs `a-b`", "*.tmp\n", "a/ a/x a-b"),
    _probe("rooted `*.log`", "*.log\n", "app.log logs/ logs/app.log"),
    _probe("`**/*.log`", "**/*.log\n", "app.log logs/ logs/app.log"),
    _probe("`a/**`", "a/**\n", "a/ a/x a/b/ a/b/y"),
    _probe("exception below an excluded dir", "a\n!a/b/c\n", "a/ a/b/ a/b/c a/b/d"),
    _probe("`*`, `!**/*.py`", "*\n!**/*.py\n", "x.py sub/ sub/y.py sub/z"),
    _probe("wildcard exception below an excluded dir", "a\n!a*/x\n", "a/ a/x a/y"),
    _probe("`!Dockerfile` re-includes `dockerfile`", "dockerfile\n", "dockerfile"),
    _probe("Latin-1 comment", "# caf\udce9\n*.log\n", "a.log b"),
    _probe("U+2028 in a pattern", "a\u2028b\n", "a b"),
    _probe("escaped wildcard", "\\*.txt\n", "*.txt a.txt"),
    _probe("`[^a]` vs `[!a]`", "[^a]*\n", "ax bx ^x"),
]


def vector_cases() -> list[Case]:
    out = []
    for row in load_fixture("vectors.json")["vectors"]:
        out.append(Case(f"vector row {row['id']}", "vector", row["dockerignore"],
                        dockerfile=row["dockerfile"], row=row))
    return out


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[Node], str]:
    nodes = draw(trees())
    return nodes, draw(dockerignores(nodes))


def generated_cases(n: int, seed: int) -> list[Case]:
    """``n`` examples of the property tests' strategy, deterministic for a
    given seed and hypothesis version (no database, generate phase only)."""
    drawn: list[tuple[list[Node], str]] = []

    @hypothesis.seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=_cases())
    def collect(case: tuple[list[Node], str]) -> None:
        drawn.append(case)

    collect()
    return [Case(f"generated #{i}", "generated", ignore, nodes=nodes)
            for i, (nodes, ignore) in enumerate(drawn[:n], start=1)]


# --------------------------------------------------------------------------
# The three implementations
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    names: list[str] | None  # directories end with "/"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.names is not None


def run_cli(root: Path, case: Case, server: CaptureServer) -> Outcome:
    df = str(root / case.dockerfile) if case.dockerfile else None
    cap = capture_context(root, dockerfile=df, server=server, timeout=120)
    if cap.tar is None:
        lines = cap.stderr.strip().splitlines() or [f"exit {cap.returncode}"]
        return Outcome(None, lines[-1])
    return Outcome(tar_names(cap.members))


def run_ctxpack(root: Path, case: Case) -> Outcome:
    df = str(root / case.dockerfile) if case.dockerfile else None
    try:
        ctx = ctxpack.open_context(root, dockerfile=df, dialect="classic")
        return Outcome([e.name for e in ctxpack.list_entries(ctx)])
    except ctxpack.CtxpackError as e:
        return Outcome(None, f"{type(e).__name__}: {e}")


# docker-py, step by step.  Level 0 is docker-py as shipped; each further
# level repairs one more difference with the docker CLI (cumulatively):
LEVELS = ("as shipped", "+ Docker's .dockerignore parsing", "+ case-sensitive matching",
          "+ Go glob semantics")


def _read_exclude_like_apiclient(path: str) -> list[str] | None:
    # Verbatim from docker/api/build.py, APIClient.build (docker 7.1.0).
    dockerignore = os.path.join(path, '.dockerignore')
    exclude = None
    if os.path.exists(dockerignore):
        with open(dockerignore) as f:
            exclude = list(filter(
                lambda x: x != '' and x[0] != '#',
                [line.strip() for line in f.read().splitlines()]
            ))
    return exclude


def _read_exclude_like_docker(path: str) -> list[str] | None:
    rules = ctxpack.read_ignore_file(os.path.join(path, ".dockerignore"))
    return None if rules is None else [r.pattern for r in rules]


def _go_match(self: Any, filepath: str) -> bool:
    compiled = self.__dict__.get("_go")
    if compiled is None:
        compiled = self._go = compile_pattern(self.cleaned_pattern)
    return compiled.matches(dp_build.normalize_slashes(filepath))


@contextlib.contextmanager
def dockerpy_level(level: int) -> Iterator[None]:
    saved = dp_build.fnmatch, dp_build.Pattern.match, dp_build.Pattern.__dict__["normalize"]
    try:
        if level >= 1:
            # Patterns arrive already cleaned the Go way: only split them
            # (docker-py's normalize would also drop ".." with its parent).
            dp_build.Pattern.normalize = classmethod(  # type: ignore[method-assign]
                lambda cls, p: [pt for pt in p.split("/") if pt and pt != "."])
        if level >= 2:
            dp_build.fnmatch = dp_fnmatch.fnmatchcase
        if level >= 3:
            dp_build.Pattern.match = _go_match  # type: ignore[method-assign]
        yield
    finally:
        dp_build.fnmatch, dp_build.Pattern.match, dp_build.Pattern.normalize = saved  # type: ignore[method-assign]


def dockerpy_context(path: str, dockerfile: str | None, level: int = 0) -> Any:
    """The context file object ``APIClient.build(path, dockerfile=...)``
    uploads (same calls, same order), optionally with repairs."""
    with dockerpy_level(level):
        if level >= 1:
            exclude = _read_exclude_like_docker(path)
        else:
            exclude = _read_exclude_like_apiclient(path)
        dockerfile_t = dp_api_build.process_dockerfile(dockerfile, path)
        return dp_build.tar(path, exclude=exclude, dockerfile=dockerfile_t, gzip=False)


def _tar_outcome(data: bytes) -> Outcome:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return Outcome(tar_names(tf.getmembers()))


def _exc_name(e: BaseException) -> str:
    if isinstance(e, re.error):
        return "re.error"
    mod = type(e).__module__
    return type(e).__qualname__ if mod == "builtins" else f"{mod}.{type(e).__qualname__}"


def run_dockerpy(root: Path, case: Case, level: int = 0) -> Outcome:
    try:
        fileobj = dockerpy_context(str(root), case.dockerfile, level)
    except Exception as e:  # noqa: BLE001 - any exception is what the user gets
        return Outcome(None, f"{_exc_name(e)}: {e}")
    with fileobj:
        return _tar_outcome(fileobj.read())


def run_dockerpy_e2e(root: Path, case: Case, client: Any, server: CaptureServer) -> Outcome:
    """A real ``APIClient.build`` against the capture server."""
    with server.build_lock:
        started = time.monotonic()
        try:
            for _ in client.build(path=str(root), dockerfile=case.dockerfile):
                pass
        except Exception as e:  # noqa: BLE001
            return Outcome(None, f"{_exc_name(e)}: {e}")
        reqs = [r for r in server.requests_since(started, os.getpid())
                if r.method == "POST" and r.path == "/build"]
    if not reqs:
        return Outcome(None, "no build request")
    return _tar_outcome(reqs[-1].body)


# --------------------------------------------------------------------------
# Comparison and classification
# --------------------------------------------------------------------------


def same_set(a: Outcome, b: Outcome) -> bool:
    if a.ok != b.ok:
        return False
    return not a.ok or set(a.names or ()) == set(b.names or ())


def same_list(a: Outcome, b: Outcome) -> bool:
    if a.ok != b.ok:
        return False
    return not a.ok or a.names == b.names


def _tree_paths(root: Path) -> list[str]:
    out = []
    broot = os.fsencode(root)
    for d, dirs, files in os.walk(broot):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), broot).decode("utf-8", "surrogateescape"))
    return out


def _glob_feature(root: Path) -> str:
    """Which glob feature made docker-py's (case-sensitive) fnmatch and Go's
    patternmatcher disagree on some path of the tree."""
    exclude = _read_exclude_like_docker(str(root)) or []
    paths = _tree_paths(root)
    feats = []
    for raw in exclude:
        pat = dp_build.Pattern(raw)
        if not pat.dirs:
            continue
        try:
            go = compile_pattern(pat.cleaned_pattern)
        except PatternSyntaxError:
            continue
        for p in paths:
            try:
                differs = go.matches(p) != dp_fnmatch.fnmatchcase(p, pat.cleaned_pattern)
            except BrokenPattern:
                continue
            if differs:
                feats.append(pat.cleaned_pattern)
                break
    if any("\\" in f for f in feats):
        return "backslash escapes"
    if any("[" in f for f in feats):
        return "character classes"
    if any(c in f for f in feats for c in "{}^|"):
        return "regex metacharacters"
    if any("**" in f for f in feats):
        return "`**`"
    return "other"


CATEGORY_TEXT = {
    "order": (
        "Same names, different order",
        "`docker.utils.build.tar` adds `sorted(exclude_paths(...))`: Python sorts the relative "
        "paths as whole strings, so `a.b` (or `a b`, `a-b`, `a#`, ...) comes before `a/x`; the "
        "CLI walks depth-first with each directory's entries sorted, so `a/`, `a/x` come before "
        "`a.b`.  Only the order of tar members differs (harmless for most daemons, but the "
        "context's bytes and hash differ).  docker-py additionally writes directories with "
        "real uid/gid/uname and tarfile's own header layout, which this comparison ignores."),
    "parse: BOM": (
        ".dockerignore parsing: UTF-8 byte-order mark",
        "docker-py reads the file with `open()` in text mode (locale encoding, no `utf-8-sig`), "
        "so a leading BOM stays glued to the first pattern; the CLI strips it."),
    "parse: indented comment": (
        ".dockerignore parsing: `#` after leading whitespace",
        "docker-py strips each line before testing for `#`, so `  #x` is a comment; the CLI "
        "tests the raw line, so `  #x` is the pattern `#x`."),
    "parse: dotdot": (
        ".dockerignore parsing: `..` components",
        "docker-py's `Pattern.normalize` deletes a `..` together with the component before it, "
        "also at the start (`../secret` becomes `secret`); the CLI's `filepath.Clean` keeps a "
        "leading `..`, so the pattern can never match."),
    "parse: splitlines": (
        ".dockerignore parsing: Python line breaks and whitespace",
        "docker-py uses `str.splitlines()` and `str.strip()`: it also breaks lines at `\\v`, "
        "`\\f`, `\\x1c`-`\\x1e`, `\\x85`, U+2028, U+2029 and strips `\\x1c`-`\\x1f`; the "
        "CLI splits at `\\n` only and Go's `TrimSpace` keeps `\\x1c`-`\\x1f`."),
    "parse: slash-bang": (
        ".dockerignore parsing: `/!x` becomes an exception",
        "The CLI only recognises a leading `!` before cleaning, then strips the leading `/`, "
        "and the matcher sees `!x` again and treats it as an exception; so `/!x` excludes "
        "nothing (it re-includes `x`).  docker-py strips the `/` and excludes a file called "
        "`!x`."),
    "parse: other": (
        ".dockerignore parsing: other",
        "docker-py's line handling (`str.splitlines`, `str.strip`) differs from the CLI's "
        "(`\\n` only, Go `TrimSpace`, `filepath.Clean`)."),
    "case": (
        "Case-insensitive matching",
        "`docker.utils.fnmatch.fnmatch` lower-cases both the path and the pattern, so `A` "
        "excludes `a` (and the appended `!Dockerfile` re-includes `dockerfile`); Go's matcher "
        "is case-sensitive on Linux."),
    "glob: backslash escapes": (
        "Glob syntax: backslash escapes",
        "docker-py's `translate` has no escape character: `\\*` is a literal backslash followed "
        "by a wildcard, so an escaped pattern such as `a\\[b\\]` never matches `a[b]`; Go "
        "treats `\\` as an escape."),
    "glob: character classes": (
        "Glob syntax: character classes",
        "docker-py treats `[!x]` as negation and `[^x]` as the two characters `^`, `x`; "
        "Go's patternmatcher passes classes to RE2 where `[^x]` negates and `[!x]` is a set "
        "containing `!`.  An unterminated `[` is a literal in docker-py and an error in Docker; "
        "escapes inside classes differ too."),
    "glob: `**`": (
        "Glob syntax: `**`",
        "Both translate `**/` to `(.*/)?` and a trailing `**` to `.*`, but Docker's "
        "patternmatcher turns a pattern that *starts* with `**` into a plain suffix test on "
        "the rest of the pattern (when nothing after it needs a regex): `**.go` excludes every "
        "path ending in `.go` (`a/b/c.go`), while docker-py's regex `(.*/)?\\.go` only "
        "matches a file named exactly `.go`."),
    "glob: regex metacharacters": (
        "Glob syntax: regex metacharacters",
        "Docker's patternmatcher escapes only `.+()$` when it turns a wildcard pattern into "
        "an RE2 regex, so `{`, `}`, `^`, `|` keep their regex meaning (`a{2}*` means `aa*`, "
        "`a^b*` can never match, `a|b*` is an alternation); docker-py escapes every "
        "non-glob character and matches them literally.  (Patterns without a wildcard are "
        "compared as plain strings by both.)"),
    "glob: other": (
        "Glob syntax: other",
        "docker-py's fnmatch translation and Go's patternmatcher disagree on a pattern "
        "without escapes, classes or `**`."),
    "walker: Dockerfile/.dockerignore": (
        "Dockerfile / .dockerignore re-inclusion",
        "docker-py always appends `!<dockerfile>` and `!.dockerignore` as the last exception "
        "patterns; the CLI appends them only when it judges the file excluded, and judges the "
        "`-f` path with the deprecated single-parent `Matches` (semantics note §5.1).  With "
        "`**/deep` and `-f a/b/deep/Dockerfile` the CLI appends nothing, prunes `a/b/deep` "
        "and the daemon then fails with *Cannot locate specified Dockerfile*; docker-py sends "
        "the Dockerfile (here docker-py's build is the one that works).  docker-py's appended "
        "patterns are also matched case-insensitively (see the probes)."),
    "walker: exceptions under excluded dirs": (
        "Exceptions under excluded directories / parent matching",
        "docker-py evaluates every pattern on every path, matching it against the path or "
        "against the one ancestor with as many components as the pattern (the old "
        "`fileutils.Matches`).  The CLI's walker evaluates lazily and inherits per-pattern "
        "results from the parent directory (semantics note §4.3): with `a/b`, `!a`, the "
        "exception is skipped at `a` (nothing excluded `a` yet), so `a/b` stays excluded, "
        "while docker-py re-includes it through the ancestor `a`.  Separately, docker-py "
        "reads an excluded directory when an exception's text merely starts with the "
        "directory's name, the CLI only when it starts with `dir/` (§4.5): with `a`, `!a*/x` "
        "docker-py sends `a/x`, the CLI does not (see the probes)."),
    "walker: other": (
        "Walker: other",
        "A difference in how docker-py's `PatternMatcher.walk` combines pattern results that "
        "is not tied to an exception pattern."),
    "error: CLI refuses syntax": (
        "Invalid patterns accepted by docker-py (*syntax error in pattern*)",
        "The CLI stops with *syntax error in pattern* (unclosed `[`, trailing `\\`, an invalid "
        "RE2 escape such as `\\y`); docker-py's "
        "`translate` has no error path except Python's `re` (an unclosed `[` becomes a literal "
        "`[`, `\\` a literal backslash), so it uploads a context."),
    "error: CLI refuses `!`": (
        "Invalid patterns accepted by docker-py (*illegal exclusion pattern*)",
        "A lone `!` (also `!/`, which cleans to `!`) is refused by the CLI; docker-py builds a "
        "`Pattern` with no components and silently drops it."),
    "error: docker-py UnicodeDecodeError": (
        "docker-py raises: .dockerignore not valid UTF-8",
        "`APIClient.build` reads `.dockerignore` with `open()` in text mode (locale encoding, "
        "strict errors), so a byte that is not valid UTF-8 (here a pattern naming a file whose "
        "name has such a byte; equally any Latin-1 comment) raises `UnicodeDecodeError` before "
        "anything is sent.  The CLI treats patterns as bytes and builds."),
    "error: docker-py re.error": (
        "docker-py raises: Python `re` refuses the translated pattern",
        "docker-py hands character classes to Python's `re` nearly as they are; a class that "
        "Python refuses but Go accepts (or never evaluates) raises `re.error` during the walk "
        "where the CLI builds.  (A reversed range such as `[z-a]` fails on both sides, "
        "vector row 112.)"),
    "error: docker-py other": (
        "docker-py raises: other",
        "Another exception from docker-py where the CLI uploads a context."),
}


def classify(root: Path, case: Case, cli: Outcome, dpy: Outcome) -> str | None:
    """The cause of a docker-py disagreement (None: full agreement)."""
    if same_list(cli, dpy):
        return None
    if cli.ok != dpy.ok:
        if not cli.ok:
            if "illegal exclusion pattern" in (cli.error or ""):
                return "error: CLI refuses `!`"
            return "error: CLI refuses syntax"
        if (dpy.error or "").startswith("UnicodeDecodeError"):
            return "error: docker-py UnicodeDecodeError"
        if (dpy.error or "").startswith("re.error"):
            return "error: docker-py re.error"
        return "error: docker-py other"
    if same_set(cli, dpy):
        return "order"
    # Repair docker-py step by step; the first repair after which it sends
    # the CLI's set of names is the cause.
    for level in range(1, len(LEVELS)):
        fixed = run_dockerpy(root, case, level)
        if fixed.ok and set(fixed.names or ()) == set(cli.names or ()):
            if level == 1:
                data = (root / ".dockerignore").read_bytes()
                text = data.decode("utf-8", "surrogateescape")
                lines = text.split("\n")
                if data.startswith(b"\xef\xbb\xbf"):
                    return "parse: BOM"
                if any(ln[:1] != "#" and ln.strip().startswith("#") for ln in lines):
                    return "parse: indented comment"
                if any(c in text for c in "\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029"):
                    return "parse: splitlines"
                raw_rules = ctxpack.read_ignore_file(root / ".dockerignore") or []
                if any(r.pattern.startswith("!") and not r.text.strip().startswith("!")
                       for r in raw_rules):
                    return "parse: slash-bang"
                if any(".." in r.pattern.lstrip("!").split("/") for r in raw_rules):
                    return "parse: dotdot"
                return "parse: other"
            if level == 2:
                return "case"
            return "glob: " + _glob_feature(root)
    diff = set(cli.names or ()) ^ set(dpy.names or ())
    forced = set(FORCED) | ({case.dockerfile} if case.dockerfile else set())
    if diff & forced:
        return "walker: Dockerfile/.dockerignore"
    rules = _read_exclude_like_docker(str(root)) or []
    if any(r.startswith("!") for r in rules):
        return "walker: exceptions under excluded dirs"
    return "walker: other"


@dataclasses.dataclass
class Result:
    case: Case
    cli: Outcome
    ours: Outcome
    dpy: Outcome
    category: str | None
    e2e: Outcome | None = None


def evaluate(case: Case, server: CaptureServer, client: Any | None) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix="dpyagree-"))
    try:
        root = case.make(tmp / "ctx")
        cli = run_cli(root, case, server)
        ours = run_ctxpack(root, case)
        dpy = run_dockerpy(root, case)
        e2e = run_dockerpy_e2e(root, case, client, server) if client is not None else None
        return Result(case, cli, ours, dpy, classify(root, case, cli, dpy), e2e)
    finally:
        _rmtree(tmp)


def _rmtree(path: Path) -> None:
    for d, dirs, _files in os.walk(path):
        for n in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(d, n), 0o755)
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# Shrinking an example against the live CLI
# --------------------------------------------------------------------------


def _without(nodes: list[Node], i: int) -> list[Node]:
    gone = nodes[i].path
    removed = {n.path for n in nodes if n.path == gone or n.path.startswith(gone + "/")}
    keep = [n for n in nodes if n.path not in removed]
    # Hard links to removed files go too (repeat: links to links).
    while True:
        bad = {n.path for n in keep if n.kind == "hardlink" and n.target not in {m.path for m in keep}}
        if not bad:
            return keep
        keep = [n for n in keep if n.path not in bad]


def _renamings(case: Case) -> list[Case]:
    """Replace each long name component (in the tree and in .dockerignore)
    by a short fresh one."""
    assert case.nodes is not None
    comps = sorted({c for n in case.nodes for c in n.path.split("/") if len(c) > 3},
                   key=len, reverse=True)
    taken = {c for n in case.nodes for c in n.path.split("/")}
    fresh = [c for c in "nopqrstuvw" if c not in taken and c not in (case.ignore or "")]
    out = []
    for old in comps:
        if not fresh:
            break
        new = fresh[0]

        def sub(p: str, old: str = old, new: str = new) -> str:
            return "/".join(new if c == old else c for c in p.split("/"))

        nodes = [dataclasses.replace(n, path=sub(n.path),
                                     target=sub(n.target) if n.kind == "hardlink" else n.target)
                 for n in case.nodes]
        out.append(dataclasses.replace(case, nodes=nodes,
                                       ignore=(case.ignore or "").replace(old, new)))
    return out


def shrink(result: Result, server: CaptureServer, budget: int = 120) -> Result:
    """Drop .dockerignore lines and tree nodes while the case keeps its category."""
    case = result.case
    if case.nodes is None:
        return result
    best = result
    budget += 20 * len(case.nodes)
    tries = 0
    changed = True
    while changed and tries < budget:
        changed = False
        cur = best.case
        assert cur.nodes is not None
        lines = re.findall(r"[^\n]*\n|[^\n]+$", cur.ignore or "")
        candidates: list[Case] = []
        for i in range(len(lines)):
            candidates.append(dataclasses.replace(cur, ignore="".join(lines[:i] + lines[i + 1:])))
        for i in reversed(range(len(cur.nodes))):
            candidates.append(dataclasses.replace(cur, nodes=_without(cur.nodes, i)))
        candidates += _renamings(cur)
        for cand in candidates:
            if tries >= budget:
                break
            tries += 1
            r = evaluate(cand, server, None)
            if r.category == result.category and cand.size() < best.case.size():
                best = r
                changed = True
                break
    if best is not result:
        best.case = dataclasses.replace(best.case, label=best.case.label + ", shrunk")
    return best


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def show(name: str) -> str:
    """A name with undecodable bytes as ``\\xNN`` and invisible characters
    (controls, format characters, line separators, odd spaces) as escapes."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\r" or not (cat[0] in "CZ" and ch != " "):
            out.append(ch)
        elif ch == "\ufeff":
            out.append("<BOM>")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def tree_lines(case: Case) -> list[str]:
    out = ["Dockerfile" if not case.dockerfile else case.dockerfile]
    if case.row is not None:
        row = case.row
        out.append(row["path"] + ("/" if row["kind"] == "dir" else ""))
        out += row["extra_paths"]
        return [show(x) for x in dict.fromkeys(out)]
    for n in case.nodes or ():
        p = show(n.path)
        if n.kind == "dir":
            out.append(p + "/")
        elif n.kind == "symlink":
            out.append(f"{p} -> {n.target}")
        elif n.kind == "hardlink":
            out.append(f"{p} (hard link to {show(n.target)})")
        elif n.kind == "fifo":
            out.append(f"{p} (fifo)")
        else:
            out.append(p)
    return out


def _outcome_text(o: Outcome) -> str:
    if not o.ok:
        return f"error: `{o.error}`"
    return "`" + " ".join(show(n) for n in o.names or ()) + "`"


def example_md(r: Result) -> str:
    c = r.case
    ign = c.ignore
    out = [f"*{c.label}*" + (f" (`-f {c.dockerfile}`)" if c.dockerfile else "") + " — tree: `"
           + "`, `".join(tree_lines(c)) + "`; `.dockerignore`:", "", "```"]
    if ign is None:
        out.append("(none)")
    else:
        shown = show(ign).replace("\r", "␍")
        lines = shown.split("\n")
        if lines[-1] == "":
            lines.pop()
        out += [ln if ln.strip() else ln + "⏎" for ln in lines] or ["(empty file)"]
    out.append("```")
    cli, dpy = r.cli, r.dpy
    if cli.ok and dpy.ok:
        if set(cli.names or ()) == set(dpy.names or ()):
            out.append(f"- CLI order: {_outcome_text(cli)}")
            out.append(f"- docker-py order: {_outcome_text(dpy)}")
        else:
            only_cli = [show(n) for n in cli.names or () if n not in set(dpy.names or ())]
            only_dpy = [show(n) for n in dpy.names or () if n not in set(cli.names or ())]
            out.append(f"- CLI sends: {_outcome_text(cli)}")
            out.append("- docker-py leaves out: " + (", ".join(f"`{n}`" for n in only_cli) or "—")
                       + "; docker-py adds: " + (", ".join(f"`{n}`" for n in only_dpy) or "—"))
    else:
        out.append(f"- CLI: {_outcome_text(cli)}")
        out.append(f"- docker-py: {_outcome_text(dpy)}")
    return "\n".join(out)


def pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100.0 * k / n:.1f}%)" if n else "0/0"


def versions() -> dict[str, str]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=30,
                                  cwd=REPO).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"
    docker_exe = shutil.which("docker") or "docker"
    return {
        "docker CLI": run(docker_exe, "--version"),
        "docker-py": docker.__version__,
        "ctxpack": f"{getattr(ctxpack, '__version__', '0.1.0')} (git {run('git', 'rev-parse', '--short', 'HEAD') or '?'}, working tree)",
        "Python": platform.python_version(),
        "hypothesis": hypothesis.__version__,
        "locale encoding (docker-py's open())": locale.getpreferredencoding(False),
    }


def rates_table(results: list[Result]) -> list[str]:
    groups = [("vectors", [r for r in results if r.case.source == "vector"]),
              ("generated", [r for r in results if r.case.source == "generated"]),
              ("all", results)]
    out = ["| implementation | cases | error/no-error agrees | same set of names | same names in order |",
           "|---|---|---|---|---|"]
    for impl, get in (("ctxpack (classic)", lambda r: r.ours), ("docker-py", lambda r: r.dpy)):
        for gname, rs in groups:
            n = len(rs)
            err = sum(r.cli.ok == get(r).ok for r in rs)
            sset = sum(same_set(r.cli, get(r)) for r in rs)
            slist = sum(same_list(r.cli, get(r)) for r in rs)
            out.append(f"| {impl} | {gname} {n} | {pct(err, n)} | {pct(sset, n)} | {pct(slist, n)} |")
    return out


def summary(results: list[Result], probes: list[Result]) -> list[str]:
    def exact(rs: list[Result], get: Callable[[Result], Outcome]) -> str:
        return pct(sum(same_list(r.cli, get(r)) for r in rs), len(rs))

    vec = [r for r in results if r.case.source == "vector"]
    gen = [r for r in results if r.case.source == "generated"]
    cats = Counter(r.category for r in results if r.category)
    top = "; ".join(f"{CATEGORY_TEXT.get(k, (k,))[0]} ({v})" for k, v in cats.most_common(4))
    n_order = cats.get("order", 0)
    probe_order = sum(r.category == "order" for r in probes)
    out = ["## Summary", ""]
    out.append(f"* **docker-py** uploads exactly the CLI's context (same names in the same order, "
               f"or both fail) for {exact(vec, lambda r: r.dpy)} of the vectors and "
               f"{exact(gen, lambda r: r.dpy)} of the generated cases "
               f"({exact(results, lambda r: r.dpy)} overall).")
    out.append(f"* **ctxpack** (classic) does for {exact(vec, lambda r: r.ours)} of the vectors and "
               f"{exact(gen, lambda r: r.ours)} of the generated cases.")
    out.append(f"* Most frequent docker-py causes: {top}.")
    out.append(f"* Order: docker-py sorts whole relative paths (`a.b` before `a/x`); the CLI walks "
               f"depth-first (`a/x` before `a.b`).  That needs a directory with a sibling whose "
               f"name extends the directory's name by a character that sorts before `/`, which "
               f"the samples hit {n_order} times; "
               f"{probe_order} probes show it.")
    out.append("* The generated cases are adversarial (glob and regex metacharacters, escapes, "
               "non-UTF-8 names, exceptions below excluded directories), and the vectors are "
               "edge cases by design: read the rates as “how many corner cases differ”, not "
               "as how often a typical project is affected.  A .dockerignore made of literal "
               "names, `*.ext`, `**/x` and simple exceptions gets the same names from both "
               "(see the probes); order, case, escapes, `[...]` classes, `{}^|`, invalid "
               "patterns, non-UTF-8 files and exceptions under excluded directories do not.")
    out.append("")
    return out


def render(results: list[Result], probes: list[Result], examples: dict[str, list[Result]],
           args: argparse.Namespace, vers: dict[str, str], elapsed: float) -> str:
    n_vec = sum(r.case.source == "vector" for r in results)
    n_gen = len(results) - n_vec
    md: list[str] = []
    md.append("# docker-py vs the docker CLI: which build context do you get?")
    md.append("")
    md.append(f"Generated by `bench/dockerpy_agreement.py` on {datetime.date.today().isoformat()} "
              f"({elapsed:.0f} s).  Do not edit by hand: rerun the script.")
    md.append("")
    md.append("| | version |")
    md.append("|---|---|")
    for k, v in vers.items():
        md.append(f"| {k} | {v} |")
    md.append("")
    md += summary(results, probes)
    md.append("## Reproduce")
    md.append("")
    md.append("```sh")
    cmd = f"python bench/dockerpy_agreement.py --n {args.n}"
    if args.seed != DEFAULT_SEED:
        cmd += f" --seed {args.seed}"
    md.append(cmd)
    md.append("```")
    md.append("")
    md.append("Needs the `docker` CLI on `PATH` (no daemon: `tests/dockercli.py` captures the "
              "upload on a fake socket) and the `docker` package.  Generated cases are "
              "deterministic for a given seed, hypothesis version and `tests/strategies.py`; "
              "the examples of generated cases below were shrunk against the live CLI "
              "(dropping lines and nodes, shortening names) while keeping their category.")
    md.append("")
    md.append("## What was compared")
    md.append("")
    md.append(f"* **Cases**: the {n_vec} rows of `fixtures/vectors.json` (semantics note §10; tree per "
              f"`tests/trees.py:vector_tree`, `-f` where the row has one) and {n_gen} generated "
              f"cases: `trees()` + `dockerignores(nodes)` from `tests/strategies.py` (hypothesis "
              f"seed {args.seed}, generate phase only, no database), built with `build()`.")
    md.append("* **Reference**: the tar the docker CLI uploads with `DOCKER_BUILDKIT=0` "
              "(`capture_context`), names in stream order, directories with a trailing `/`; "
              "an error is \"nothing uploaded\".")
    md.append("* **ctxpack**: `[e.name for e in ctxpack.list_entries(ctxpack.open_context(root, "
              "dockerfile=..., dialect=\"classic\"))]`; an error is a `CtxpackError`.")
    md.append("* **docker-py**: what `docker.APIClient(...).build(path=root, dockerfile=...)` "
              "uploads: `.dockerignore` read as `docker/api/build.py` does (`open()` in text "
              "mode, `splitlines()`, `strip()`, drop empty lines and lines starting with `#`), "
              "`process_dockerfile(dockerfile, path)`, then "
              "`docker.utils.build.tar(path, exclude=exclude, dockerfile=...)`; member names "
              "read back with `tarfile`.  An error is any exception.")
    e2e = [r for r in results + probes if r.e2e is not None]
    if e2e:
        bad = [r for r in e2e if not same_list(r.e2e, r.dpy)]  # type: ignore[arg-type]
        md.append(f"  Cross-check: every case was also built with a real `docker.APIClient.build` "
                  f"against the capture server; its upload matched the mimicked one in "
                  f"{pct(len(e2e) - len(bad), len(e2e))} cases (probes included)"
                  + (" (mismatches: " + ", ".join(r.case.label for r in bad[:10]) + ")." if bad else "."))
    md.append("* **Agreement** columns: \"error/no-error\" — both fail or both upload; \"same set\" "
              "— both fail, or both upload the same names; \"in order\" — both fail, or both "
              "upload the same names in the same order.  Entry types, modes, link targets and "
              "contents are not compared.")
    md.append("")
    md.append("## Agreement with the docker CLI")
    md.append("")
    md += rates_table(results)
    md.append("")

    both = [r for r in results if r.cli.ok and r.dpy.ok]
    missing = Counter()
    extra = Counter()
    for r in both:
        c, d = set(r.cli.names or ()), set(r.dpy.names or ())
        missing[r.case.source] += len(c - d)
        extra[r.case.source] += len(d - c)
    cases_missing = sum(bool(set(r.cli.names or ()) - set(r.dpy.names or ())) for r in both)
    cases_extra = sum(bool(set(r.dpy.names or ()) - set(r.cli.names or ())) for r in both)
    total_cli = sum(len(r.cli.names or ()) for r in both)
    md.append("### What docker-py leaves behind")
    md.append("")
    md.append(f"Over the {len(both)} cases where both uploaded a context (CLI total "
              f"{total_cli} names):")
    md.append("")
    md.append(f"* **left out** (the CLI sends it, docker-py does not): "
              f"{sum(missing.values())} names in {cases_missing} cases;")
    md.append(f"* **added** (docker-py sends it, the CLI does not): "
              f"{sum(extra.values())} names in {cases_extra} cases;")
    md.append(f"* **failures**: the CLI refuses and docker-py uploads in "
              f"{sum((not r.cli.ok) and r.dpy.ok for r in results)} cases; docker-py raises and "
              f"the CLI uploads in {sum(r.cli.ok and not r.dpy.ok for r in results)} cases.")
    md.append("")

    md.append("## Why docker-py disagrees")
    md.append("")
    md.append("Each disagreeing case is put in exactly one category.  Failures are classified "
              "first, then \"same names, different order\".  A case whose set of names differs "
              "is re-run through docker-py with cumulative repairs — (1) the CLI's "
              ".dockerignore parsing (ctxpack's `ReadAll`), (2) case-sensitive `fnmatch`, (3) "
              "each pattern matched with Go's patternmatcher (ctxpack's `compile_pattern`) — "
              "and gets the category of the first repair after which it sends the CLI's names "
              "(glob cases are split by the feature of the pattern on which the two matchers "
              "disagree).  What no repair fixes is docker-py's walker itself.  A case can have "
              "several causes; only the first in that order is counted.")
    md.append("")
    cats: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.category:
            cats[r.category].append(r)
    order = [k for k in CATEGORY_TEXT if k in cats] + sorted(k for k in cats if k not in CATEGORY_TEXT)
    md.append("| category | vectors | generated | total |")
    md.append("|---|---|---|---|")
    for k in order:
        rs = cats[k]
        v = sum(r.case.source == "vector" for r in rs)
        md.append(f"| {CATEGORY_TEXT.get(k, (k, ''))[0]} | {v} | {len(rs) - v} | {len(rs)} |")
    nd = sum(len(v) for v in cats.values())
    md.append(f"| **all disagreements** | {sum(r.case.source == 'vector' for v in cats.values() for r in v)} "
              f"| {sum(r.case.source == 'generated' for v in cats.values() for r in v)} | {nd} |")
    md.append("")
    for k in order:
        title, text = CATEGORY_TEXT.get(k, (k, ""))
        rs = cats[k]
        md.append(f"### {title} ({len(rs)})")
        md.append("")
        if text:
            md.append(text)
            md.append("")
        vec_rows = [r.case.row["id"] for r in rs if r.case.row is not None]
        if vec_rows:
            md.append("Vector rows: " + ", ".join(str(i) for i in vec_rows) + ".")
            md.append("")
        for ex in examples.get(k, []):
            md.append(example_md(ex))
            md.append("")

    if probes:
        md.append("## Targeted probes")
        md.append("")
        md.append("Hand-written cases for behaviour the samples may miss (or that users ask about), "
                  "run the same way but **not counted** above.")
        md.append("")
        md.append("| probe | `.dockerignore` | tree | docker CLI sends | docker-py sends | verdict |")
        md.append("|---|---|---|---|---|---|")
        for r in probes:
            c = r.case
            ign = "<br>".join(f"`{show(ln)}`" for ln in (c.ignore or "").split("\n") if ln) or "(empty)"
            verdict = "agrees" if r.category is None else CATEGORY_TEXT.get(r.category, (r.category,))[0]
            cells = [c.label, ign, f"`{' '.join(tree_lines(c)[1:])}`", _outcome_text(r.cli),
                     _outcome_text(r.dpy), verdict]
            md.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
        md.append("")

    md.append("## ctxpack vs the docker CLI")
    md.append("")
    ours_bad = [r for r in results + probes if not same_list(r.cli, r.ours)]
    if not ours_bad:
        md.append(f"ctxpack's classic listing matched the CLI's upload (names, order, "
                  f"failures) in all {len(results)} cases and all {len(probes)} probes.")
    else:
        md.append(f"ctxpack disagreed with the CLI in {len(ours_bad)} cases:")
        md.append("")
        for r in ours_bad[:20]:
            md.append(f"* {r.case.label}: CLI {_outcome_text(r.cli)}; ctxpack {_outcome_text(r.ours)}")
    md.append("")
    return "\n".join(md)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def pick_examples(results: list[Result], server: CaptureServer, do_shrink: bool) -> dict[str, list[Result]]:
    by: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        if r.category:
            by[r.category].append(r)
    out: dict[str, list[Result]] = {}
    for cat, rs in by.items():
        vec = sorted((r for r in rs if r.case.source == "vector"), key=lambda r: r.case.size())
        gen = sorted((r for r in rs if r.case.source == "generated"), key=lambda r: r.case.size())
        chosen: list[Result] = vec[:1]
        if gen and (not chosen or len(chosen) < 2):
            g = gen[0]
            chosen.append(shrink(g, server) if do_shrink else g)
        if len(chosen) < 2 and len(vec) > 1:
            chosen.append(vec[1])
        out[cat] = chosen[:2]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=300, help="generated cases (default 300)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="hypothesis seed")
    ap.add_argument("--out", default=str(REPO / "docs" / "docker-py-agreement.md"),
                    help="report path, '-' for stdout")
    ap.add_argument("--no-e2e", dest="e2e", action="store_false",
                    help="skip the real APIClient.build cross-check")
    ap.add_argument("--no-shrink", dest="shrink", action="store_false",
                    help="do not shrink generated examples against the CLI")
    ap.add_argument("--no-vectors", dest="vectors", action="store_false")
    ap.add_argument("--no-probes", dest="probes", action="store_false")
    args = ap.parse_args(argv)

    if shutil.which("docker") is None:
        print("docker CLI not found on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    warnings.simplefilter("ignore")
    cases = ((vector_cases() if args.vectors else []) + generated_cases(args.n, args.seed)
             + (PROBES if args.probes else []))
    with tempfile.TemporaryDirectory(prefix="dpyagree-cfg-") as cfg, CaptureServer() as server:
        # docker-py reads its config (auth, proxies) from DOCKER_CONFIG: keep it empty.
        os.environ["DOCKER_CONFIG"] = cfg
        client = docker.APIClient(base_url=server.docker_host, version=API_VERSION) if args.e2e else None
        results = []
        for i, case in enumerate(cases, 1):
            results.append(evaluate(case, server, client))
            if i % 50 == 0:
                print(f"  {i}/{len(cases)} cases", file=sys.stderr)
        probes = [r for r in results if r.case.source == "probe"]
        results = [r for r in results if r.case.source != "probe"]
        examples = pick_examples(results, server, args.shrink)
        if client is not None:
            client.close()
    elapsed = time.monotonic() - started
    report = render(results, probes, examples, args, versions(), elapsed)
    if args.out == "-":
        print(report)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(report, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    # Short summary on stdout.
    for line in rates_table(results):
        print(line)
    cats = Counter(r.category for r in results if r.category)
    for k, v in cats.most_common():
        print(f"  {v:4d}  {CATEGORY_TEXT.get(k, (k,))[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
