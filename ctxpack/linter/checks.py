"""``ctxpack lint``: findings about a ``.dockerignore`` and the context it shapes.

Each finding names the file and line (or the path), a severity and a concrete
fix.  Kinds (``Finding.kind``):

* ``syntax``: a pattern docker refuses when it loads the file, or one it
  accepts but fails on when it first evaluates it (semantics note §3.1);
* ``gitignore-habit``: ``node_modules`` or ``*.log`` only match at the context
  root in Docker, while gitignore rules (pathspec's implementation) would
  also catch deeper paths that exist here;
* ``matches-nothing``, ``redundant``, ``useless-exception``: rules with no
  effect on this tree;
* ``dialect-difference``: paths the classic builder and BuildKit decide
  differently;
* ``heavy-directory``: ``.git``, ``node_modules``, ``.venv``… sent;
* ``secret``: likely credentials in the context (never printed).
"""

from __future__ import annotations

import difflib
import os
import re
import stat as st
from dataclasses import asdict, dataclass
from typing import Any

import pathspec

from ctxpack.dockerfile.analysis import Selection, analyze
from ctxpack.context import BuildContext, Dialect, open_context, select_ignore_file
from ctxpack.errors import CtxpackError, PatternError, PatternSyntaxError
from ctxpack.ignore.reader import RawRule, read_ignore_file
from ctxpack.ignore.matcher import Matcher, Rule
from ctxpack.ignore.pattern import MatchKind, compile_pattern

__all__ = ["Finding", "LintReport", "lint", "apply_fixes"]

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass
class Finding:
    """One finding: where, how bad, what is wrong, and how to fix it."""

    kind: str
    severity: str
    message: str
    fix: str
    file: str | None = None
    line: int | None = None
    rule: str | None = None
    path: str | None = None
    # An edit ``apply_fixes`` can make: ("replace", new_text) for the line,
    # ("comment", reason) to comment the line out, ("append", text).
    edit: tuple[str, str] | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("edit")
        return d


@dataclass
class LintReport:
    ignore_file: str | None
    ignore_path: str | None
    findings: list[Finding]

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)


# --- the whole tree, excluded parts included --------------------------------

@dataclass(slots=True)
class _Node:
    path: str
    is_dir: bool
    size: int
    mode: int


def _all_paths(root: str) -> list[_Node]:
    """Every path below ``root`` in walk order, symlinks not followed."""
    out: list[_Node] = []
    stack: list[tuple[str, str]] = [(root, "")]
    while stack:
        absd, reld = stack.pop()
        try:
            with os.scandir(absd) as it:
                ents = sorted(it, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        except OSError:
            continue
        subdirs = []
        for de in ents:
            rel = f"{reld}/{de.name}" if reld else de.name
            try:
                s = de.stat(follow_symlinks=False)
            except OSError:
                continue
            isdir = st.S_ISDIR(s.st_mode)
            out.append(_Node(rel, isdir, s.st_size if st.S_ISREG(s.st_mode) else 0, s.st_mode))
            if isdir:
                subdirs.append((de.path, rel))
        stack.extend(reversed(subdirs))
    out.sort(key=lambda n: n.path.encode("utf-8", "surrogateescape").replace(b"/", b"\0"))
    return out


def _decide_all(matcher: Matcher, nodes: list[_Node]) -> dict[str, Rule | None]:
    """The walker's deciding rule for every path (ignoring pruning)."""
    bits: dict[str, int] = {"": 0}
    plans: dict[str, object] = {}
    out: dict[str, Rule | None] = {}
    for n in nodes:
        parent = n.path.rsplit("/", 1)[0] if "/" in n.path else ""
        plan = plans.get(parent)
        if plan is None:
            plan = plans[parent] = matcher.plan(parent, bits.get(parent, 0), parent.count("/") + 2 if parent else 1)
        try:
            d = matcher.decide(n.path, plan)  # type: ignore[arg-type]
        except PatternError:
            out[n.path] = None
            continue
        out[n.path] = d.rule
        if n.is_dir:
            bits[n.path] = d.bits
    return out


# --- checks --------------------------------------------------------------------

HEAVY = {
    ".git": "version control history",
    "node_modules": "installed npm packages",
    ".venv": "a Python virtualenv",
    "venv": "a Python virtualenv",
    "__pycache__": "Python bytecode",
    ".tox": "tox environments",
    ".mypy_cache": "mypy cache",
    ".pytest_cache": "pytest cache",
    "target": "build output (Rust/Maven)",
    "dist": "build output",
    "build": "build output",
    ".next": "Next.js build cache",
    ".terraform": "Terraform providers",
    "coverage": "coverage reports",
}
HEAVY_MIN_BYTES = 1_000_000

_SECRET_NAMES = re.compile(
    r"(^|/)(\.env(\.[^/]*)?|id_(rsa|dsa|ecdsa|ed25519)|[^/]*\.(pem|key|p12|pfx|jks|keystore|kdbx)|"
    r"\.netrc|\.git-credentials|credentials(\.json)?|\.htpasswd|application_default_credentials\.json|"
    r"service[-_]?account[^/]*\.json|terraform\.tfstate)$"
)
_SAFE_ENV = re.compile(r"\.env\.(example|sample|template|dist|defaults?)$")
_TOKEN_FILES = {".npmrc": rb"_auth(Token)?\s*=", ".pypirc": rb"password\s*[=:]", "config.json": rb'"auths"\s*:\s*\{\s*"'}


def _is_secret(path: str, absolute: str, size: int) -> str | None:
    base = path.rsplit("/", 1)[-1]
    if base in _TOKEN_FILES:
        if base == "config.json" and not path.endswith(".docker/config.json"):
            return None
        try:
            with open(absolute, "rb") as f:
                data = f.read(65536)
        except OSError:
            return None
        return f"{base} with credentials" if re.search(_TOKEN_FILES[base], data) else None
    if _SECRET_NAMES.search(path) and not _SAFE_ENV.search(path):
        if base.endswith((".pem", ".key")):
            try:
                with open(absolute, "rb") as f:
                    head = f.read(4096)
            except OSError:
                return None
            return "a private key" if b"PRIVATE KEY" in head else None
        if path.endswith(".aws/credentials") or base != "credentials":
            return "a credentials file" if base not in ("id_rsa", "id_dsa", "id_ecdsa", "id_ed25519") else "an SSH private key"
    return None


def _gitignore_count(text: str, paths: list[str], dirs: set[str]) -> int:
    spec = pathspec.GitIgnoreSpec.from_lines([text])
    n = 0
    for p in paths:
        # gitignore matches a directory pattern against "dir/": pass both forms.
        if spec.match_file(p + "/" if p in dirs else p):
            n += 1
    return n


def _docker_count(pattern_text: str, paths: list[str]) -> int:
    pat = compile_pattern(pattern_text)
    n = 0
    for p in paths:
        parts = p.split("/")
        try:
            if any(pat.matches("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
                n += 1
        except Exception:  # noqa: BLE001 - broken patterns are reported elsewhere
            return 0
    return n


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _fmt(n: int) -> str:
    for unit, f in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{n} B"


def lint(
    root: str | os.PathLike[str],
    *,
    dockerfile: str | None = None,
    dialect: Dialect | str = Dialect.BUILDKIT,
    ignore_file: str | None = None,
    allow_secrets: bool = False,
    max_listed: int = 20,
) -> LintReport:
    """Lint the ignore file that applies to ``root`` for ``dialect``."""
    from ctxpack import explainer as api  # late import: api sits above this module's callers

    dialect = Dialect(dialect)
    findings: list[Finding] = []
    # Load-time syntax errors would stop open_context: check line by line first.
    ctx = _open_lenient(root, dockerfile, dialect, ignore_file, findings)
    nodes = _all_paths(ctx.root)
    paths = [n.path for n in nodes]
    dirs = {n.path for n in nodes if n.is_dir}
    source = ctx.ignore_source
    ignore_path = _ignore_path(ctx, ignore_file)

    # Patterns docker accepts but can never evaluate.
    for r in ctx.file_matcher.rules:
        if r.pattern.error is not None:
            findings.append(Finding(
                "syntax", ERROR,
                f"docker accepts this pattern but fails with 'syntax error in pattern' when it first evaluates it ({r.pattern.error})",
                "fix or remove the pattern", r.source, r.line, r.text, edit=("comment", "invalid pattern"),
            ))

    decisions = _decide_all(ctx.file_matcher, nodes)
    try:
        sent = {e.path for e in api.list_entries(ctx)}
    except PatternError:
        sent = set()
    deciding: dict[int, int] = {}
    deciding_sent: dict[int, int] = {}
    for p, rule in decisions.items():
        if rule is not None:
            deciding[rule.index] = deciding.get(rule.index, 0) + 1
            if p in sent:
                deciding_sent[rule.index] = deciding_sent.get(rule.index, 0) + 1

    for r in ctx.file_matcher.rules:
        if r.pattern.error is not None:
            continue
        pat = r.pattern
        direct = sum(1 for p in paths if pat.matches(p))
        where: dict[str, Any] = {"file": r.source, "line": r.line, "rule": r.text}
        # gitignore habits: a rule without an inner "/" is rooted in Docker.
        text = pat.text
        if not pat.exception and "/" not in text and not text.startswith("**"):
            git_n = _gitignore_count(text, paths, dirs)
            docker_n = _docker_count(text, paths)
            if git_n > docker_n:
                findings.append(Finding(
                    "gitignore-habit", WARNING,
                    f"'{text}' only matches at the context root in .dockerignore: it catches {_n(docker_n, 'path')} here, "
                    f"where gitignore rules would catch {git_n}",
                    f"use '**/{text}' to match at any depth", edit=("replace", "**/" + text),
                    **where,
                ))
                continue
        if direct == 0:
            findings.append(Finding("matches-nothing", WARNING, f"rule matches no path in {ctx.root}",
                                    "remove it if it is obsolete", edit=("comment", "matches nothing"), **where))
            continue
        if pat.exception:
            if deciding_sent.get(r.index, 0) == 0:
                why = ""
                if ctx.dialect is Dialect.CLASSIC and pat.kind is not MatchKind.EXACT:
                    why = " (the classic builder only looks inside an excluded directory when the exception's literal text starts with it)"
                findings.append(Finding("useless-exception", WARNING,
                                        f"exception re-includes nothing that is sent{why}",
                                        "remove it, or spell the path out literally", edit=("comment", "re-includes nothing"), **where))
        elif deciding.get(r.index, 0) == 0:
            findings.append(Finding("redundant", WARNING,
                                    "every path this rule matches is decided by a later rule",
                                    "remove it", edit=("comment", "redundant"), **where))

    # Paths the two builders decide differently.
    other = Dialect.CLASSIC if dialect is Dialect.BUILDKIT else Dialect.BUILDKIT
    try:
        octx = open_context(root, dockerfile=dockerfile, dialect=other, ignore_file=ignore_file, rules=ctx.rules)
        osent = {e.path for e in api.list_entries(octx)}
        # Directories differ by design (BuildKit sends excluded parents of
        # re-included paths, classic lets the daemon create them), and the
        # classic CLI forces the Dockerfile and .dockerignore in: compare the rest.
        forced = {"Dockerfile", ".dockerignore", ctx.dockerfile or ""}
        diff = sorted(p for p in (sent ^ osent) - forced if p not in dirs)
        for p in diff[:max_listed]:
            who = ctx.dialect.value if p in sent else other.value
            findings.append(Finding("dialect-difference", WARNING,
                                    f"only {who} sends this path; the builders disagree for this .dockerignore",
                                    "use exceptions whose literal text starts with the excluded directory so both builders agree",
                                    file=source, path=p))
        if len(diff) > max_listed:
            findings.append(Finding("dialect-difference", WARNING, f"{len(diff) - max_listed} more paths differ between the builders",
                                    "run ctxpack ls --dialect classic and --dialect buildkit to compare", file=source))
    except PatternError:
        pass

    # Heavy directories that are sent.
    sizes: dict[str, int] = {}
    for n in nodes:
        if n.path in sent and not n.is_dir:
            parts = n.path.split("/")
            for k in range(1, len(parts)):
                if parts[k - 1] in HEAVY:
                    d = "/".join(parts[:k])
                    sizes[d] = sizes.get(d, 0) + n.size
                    break
    for d, b in sorted(sizes.items(), key=lambda kv: -kv[1]):
        name = d.rsplit("/", 1)[-1]
        if b < HEAVY_MIN_BYTES and name != ".git":
            continue
        line = name if "/" not in d else "**/" + name
        findings.append(Finding("heavy-directory", WARNING,
                                f"{d}/ ({HEAVY[name]}, {_fmt(b)}) is sent to the builder",
                                f"add '{line}' to .dockerignore", file=source, path=d, edit=("append", line)))

    findings.extend(_dockerfile_findings(ctx, nodes, sent, source, max_listed))

    # Likely secrets.
    for n in nodes:
        if n.path not in sent or n.is_dir:
            continue
        what = _is_secret(n.path, os.path.join(ctx.root, n.path), n.size)
        if what:
            findings.append(Finding("secret", INFO if allow_secrets else ERROR,
                                    f"{n.path} looks like {what} and is sent to the builder (content not shown)",
                                    f"add '{n.path}' to .dockerignore (or use a build secret: RUN --mount=type=secret)",
                                    file=source, path=n.path, edit=("append", n.path)))
    findings.sort(key=lambda f: ({ERROR: 0, WARNING: 1, INFO: 2}[f.severity], f.line or 10**9, f.path or ""))
    return LintReport(source, ignore_path, findings)


def _dockerfile_findings(ctx: BuildContext, nodes: list[_Node], sent: set[str], source: str | None,
                         max_listed: int) -> list[Finding]:
    """COPY sources the ignore rules exclude; sent files no stage reads."""
    out: list[Finding] = []
    if ctx.dockerfile_path is None and ctx.dockerfile_data is None:
        return out
    data = ctx.dockerfile_data
    if data is None:
        assert ctx.dockerfile_path is not None
        with open(ctx.dockerfile_path, "rb") as f:
            data = f.read()
    df_name = os.path.relpath(ctx.dockerfile_path) if ctx.dockerfile_path else "Dockerfile"
    try:
        an = analyze(data, dialect=ctx.dialect.value, source=df_name)
    except CtxpackError as e:
        return [Finding("dockerfile", INFO, f"cannot analyse the Dockerfile: {e}", "fix the Dockerfile", file=df_name)]
    paths = [n.path for n in nodes]
    forced = {ctx.dockerfile or "", ".dockerignore"}
    # Sources that exist in the tree but that the ignore rules keep out.
    for src in an.sources:
        sel = Selection([src.pattern], ctx.root)
        matching = [p for p in paths if sel.wants(p)]
        if not matching:
            out.append(Finding("copy-source-missing", WARNING,
                               f"{src.instruction} source {src.pattern!r} (stage {src.stage}) matches nothing in the context: "
                               "the build fails with 'not found'", "create it or fix the path",
                               file=df_name, line=src.line, rule=src.pattern))
        elif not any(p in sent for p in matching):
            rules = sorted({str(_decider(ctx, p)) for p in matching[:20] if _decider(ctx, p) is not None})
            out.append(Finding("copy-source-excluded", ERROR,
                               f"{src.instruction} source {src.pattern!r} (stage {src.stage}) exists but the ignore rules "
                               f"exclude it ({', '.join(rules) or 'pruned'}): the build fails with 'not found'",
                               f"add an exception '!{src.pattern}' to {source or '.dockerignore'} or drop the COPY",
                               file=df_name, line=src.line, rule=src.pattern, edit=("append", "!" + src.pattern)))
    if an.whole_context:
        return out
    # Files sent that no stage reads.
    sel = Selection(an.patterns + [p for p in forced if p], ctx.root)
    unused = sorted(p for p in sent if p not in forced and not sel.wants(p) and not sel.may_contain(p))
    tops: dict[str, int] = {}
    for p in unused:
        top = p.split("/", 1)[0]
        tops[top] = tops.get(top, 0) + 1
    for top, n in sorted(tops.items(), key=lambda kv: -kv[1])[:max_listed]:
        out.append(Finding("unused-by-build", INFO,
                           f"{top}{'/' if n > 1 or top in {x.path for x in nodes if x.is_dir} else ''} is sent "
                           f"({n} {'entries' if n != 1 else 'entry'}) but no build stage reads it",
                           f"add '{top}' to {source or '.dockerignore'} (or pack with --minimal)",
                           file=source, path=top, edit=("append", top)))
    return out


def _decider(ctx: BuildContext, path: str) -> Rule | None:
    """The rule that excluded ``path`` or the first excluded ancestor."""
    return next((d.rule for _, d in ctx.file_matcher.decide_path(path) if d.excluded), None)


def _ignore_path(ctx: BuildContext, ignore_file: str | None) -> str:
    if ignore_file:
        return os.path.abspath(ignore_file)
    if ctx.ignore_source and ctx.ignore_source != ".dockerignore":
        return os.path.abspath(ctx.ignore_source)
    return os.path.join(ctx.root, ".dockerignore")


def _open_lenient(root: str | os.PathLike[str], dockerfile: str | None, dialect: Dialect,
                  ignore_file: str | None, findings: list[Finding]) -> BuildContext:
    """Open the context; each pattern docker refuses at load time becomes an
    error finding, and the context is opened without those lines."""
    real = os.path.realpath(os.fspath(root))
    path, source = select_ignore_file(real, dockerfile, dialect, ignore_file)
    raw = read_ignore_file(path, source) or []
    good: list[RawRule] = []
    for r in raw:
        try:
            compile_pattern(r.pattern)
        except PatternSyntaxError as err:
            findings.append(Finding("syntax", ERROR, f"docker refuses this file: {err}",
                                    "fix or remove the pattern", r.source, r.line, r.text, edit=("comment", "invalid pattern")))
            continue
        good.append(r)
    return open_context(root, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, rules=good)


def apply_fixes(report: LintReport) -> tuple[str, str, str] | None:
    """The fixed ignore file: (path, old text, new text), or None if nothing to do.

    Comments and order are kept: lines are replaced or commented out in
    place, new lines appended at the end under a comment.
    """
    path = report.ignore_path
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            old = f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        old = ""
    lines = old.splitlines(keepends=True)
    appended: list[str] = []
    for finding in report.findings:
        if finding.edit is None:
            continue
        op, arg = finding.edit
        if op == "append":
            if arg not in appended:
                appended.append(arg)
        elif finding.line is not None and 0 < finding.line <= len(lines):
            cur = lines[finding.line - 1]
            end = "\r\n" if cur.endswith("\r\n") else ("\n" if cur.endswith("\n") else "")
            if op == "replace":
                lines[finding.line - 1] = arg + end
            elif op == "comment" and not cur.startswith("#"):
                lines[finding.line - 1] = f"# ctxpack: {arg}: {cur.rstrip(chr(13) + chr(10))}{end}"
    new = "".join(lines)
    if appended:
        if new and not new.endswith("\n"):
            new += "\n"
        new += "# added by ctxpack lint --fix\n" + "".join(a + "\n" for a in appended)
    if new == old:
        return None
    return path, old, new


def unified_diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path))
