"""``ctxpack lint``: small checks over one view of the context.

Each check is a function ``(view, options) -> findings``; :data:`CHECKS`
lists them and :func:`lint` runs them over one :class:`ContextView` (the
context walked once), then merges the findings about one path or one rule.
Kinds (``Finding.kind``):

* ``syntax``: a pattern docker refuses when it loads the file, or one it
  accepts but fails on when it first evaluates it (semantics note §3.1);
* ``unreadable``: a path docker cannot read (the build would fail);
* ``gitignore-habit``: ``node_modules`` or ``*.log`` only match at the
  context root in Docker, ``*/bin`` only one level down; reported when
  deeper paths exist, are sent, and no other rule decides them;
* ``duplicate``, ``redundant``, ``matches-nothing``, ``useless-exception``:
  rules with no effect.  Rules that guard local state (``.venv``,
  ``node_modules``, caches, ``*.log``, ``.env*`` …) are never called
  obsolete; ``matches-nothing`` is only said of rules that look like
  mistakes (never in the tree nor in git history, or a typo);
* ``dialect-difference``: paths the classic builder and BuildKit decide
  differently;
* ``heavy-directory``: ``.git``, ``node_modules``, ``.venv``, .NET
  ``bin``/``obj`` … sent;
* ``secret``: credentials found by content (never printed);
* ``copy-source-excluded``, ``copy-source-missing``, ``unused-by-build``:
  what the Dockerfile reads against what is sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from itertools import compress
from dataclasses import dataclass

from ctxpack.audit import format_size, heavy_enough
from ctxpack.context import Dialect
from ctxpack.errors import BrokenPattern, PatternSyntaxError
from ctxpack.ignore.matcher import Rule
from ctxpack.ignore.pattern import MatchKind, Pattern, compile_pattern
from ctxpack.linter.findings import ERROR, INFO, WARNING, Edit, Finding, LintReport, merge_by_path
from ctxpack.linter.guards import HEAVY, heavy_kind, is_guard
from ctxpack.linter.view import DIR_CODE, SENT, ContextView, Row, Walked, dockerfile_name, open_view, walk_entries
from ctxpack.walker import EntryKind, descends_into_excluded

__all__ = ["CHECKS", "LintOptions", "lint", "literal_pattern"]


@dataclass(frozen=True)
class LintOptions:
    """``allow_secrets``: context paths (files or directories) whose
    credentials are known and accepted; ``max_listed``: how many paths a
    check lists one by one before it sums up the rest."""

    allow_secrets: frozenset[str] = frozenset()
    max_listed: int = 20


Check = Callable[[ContextView, LintOptions], Iterable[Finding]]

# Bigger than this, a heavy directory is worth a warning (.git always is).


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else (plural or noun + 's')}"


def _on(r: Rule, kind: str, severity: str, message: str, fix: str, edit: Edit | None = None,
        path: str | None = None) -> Finding:
    """A finding about the ignore-file rule ``r``."""
    return Finding(kind, severity, message, fix, r.source, r.line, r.text, path=path, edit=edit)


def _listed(paths: list[str], limit: int = 3) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def literal_pattern(path: str) -> str | None:
    """An ignore-file line that matches exactly ``path`` (wildcards and a
    leading ``!``/``#`` escaped), or ``None`` when no line can (names with
    surrounding white space, which docker trims)."""
    if path != path.strip() or not path:
        return None
    text = re.sub(r"([*?\[\\])", r"\\\1", path)
    if text[0] in "!#":
        text = "\\" + text
    return text


def exclude_line(view: ContextView, path: str) -> str | None:
    """The line to add to exclude ``path`` (:func:`literal_pattern`), rooted
    (``/build``) when ``path`` is at the context root and entries of the same
    name deeper down are sent and no rule decides them: written ``build``,
    the rule would be a gitignore habit (``check_habits``) whose suggested
    ``**/build`` excludes those too."""
    line = literal_pattern(path)
    if line is None or "/" in path:
        return line
    return "/" + line if path in view.undecided_deeper_names else line


def _safe_matches(pattern: Pattern, path: str) -> bool:
    try:
        return pattern.matches(path)
    except BrokenPattern:
        return False


def _could_be_below(pattern: Pattern, directory: str) -> bool:
    """Could ``pattern`` match something below ``directory``?"""
    lp = pattern.literal_prefix
    d = directory + "/"
    return not lp or lp.startswith(d) or d.startswith(lp)


def _first_match(view: ContextView, pattern: Pattern) -> tuple[str | None, Row | None]:
    """A path ``pattern`` matches: among the walk's entries first, then
    inside pruned directories (with the pruned directory); (None, None)."""
    if pattern.kind is MatchKind.EXACT:
        e = view.entry(pattern.text)
        if e is not None:
            return e.path, None
        if not os.path.lexists(os.path.join(view.ctx.root, pattern.text)):
            return None, None
        parts = pattern.text.split("/")
        for k in range(1, len(parts)):
            top = view.entry("/".join(parts[:k]))
            if top is not None and not top.included:
                return pattern.text, top
        return pattern.text, None
    for path in view.entries.paths:
        if _safe_matches(pattern, path):
            return path, None
    for d in view.pruned():
        if _could_be_below(pattern, d.path):
            for rel in view.subtree(d.path):
                if _safe_matches(pattern, rel):
                    return rel, d
    return None, None


# --- the checks ------------------------------------------------------------------

def check_syntax(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Lines docker refuses: commenting them out is always safe (docker
    fails on the file as it is)."""
    for bad in view.refused:
        r = bad.rule
        yield Finding("syntax", ERROR, bad.message, "fix or remove the pattern", r.source, r.line, r.text,
                      edit=Edit("comment", "invalid pattern", r.line, syntactic=True))


def check_unreadable(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Paths the builder cannot read: docker fails on them."""
    for err in view.errors:
        rel = os.path.relpath(err.path, view.ctx.root) if err.path else None
        line = literal_pattern(rel) if rel else None
        yield Finding("unreadable", ERROR, f"docker fails on this path: {err}",
                      "make it readable, or exclude it in " + (view.ctx.ignore_source or ".dockerignore"),
                      file=view.ctx.ignore_source, path=rel, edit=Edit("append", line) if line else None)


def _habit_alternative(r: Rule) -> str | None:
    """The any-depth pattern a gitignore habit meant, or ``None``."""
    if r.exception:
        return None
    written = r.text.strip()
    if written.startswith(("/", "./")):
        return None  # rooted on purpose
    comps = r.pattern.text.split("/")
    k = 0
    while k < len(comps) - 1 and comps[k] == "*":
        k += 1
    rest = comps[k:]
    if (k == 0 and len(comps) > 1) or rest[0].startswith("**"):
        return None
    return "**/" + "/".join(rest)


def check_habits(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """``node_modules`` (root only) or ``*/bin`` (one level only) where
    deeper matches exist, are sent, and no other rule decides them."""
    candidates: list[tuple[Rule, str, Pattern]] = []
    for r in view.rules:
        alt = _habit_alternative(r)
        if alt is not None:
            try:
                candidates.append((r, alt, compile_pattern(alt)))
            except PatternSyntaxError:
                continue
    if not candidates:
        return
    entries = view.entries
    # '**/name' candidates: only entries called name can match; start at each
    # of them and take what follows it in walk order (its contents).
    literal = {alt[3:] for _, alt, _ in candidates if "/" not in alt[3:] and not any(c in alt[3:] for c in "*?[\\")}
    starts: dict[str, list[int]] = {t: [] for t in literal}
    codes, rules = entries.codes, entries.rules
    if literal:
        suffixes = tuple("/" + t for t in literal)
        for i, path in enumerate(entries.paths):
            if path.endswith(suffixes) and codes[i] & SENT and rules[i] is None:
                starts[path.rpartition("/")[2]].append(i)
    free: list[int] | None = None  # sent entries no rule decides, by index
    for r, alt, pat in candidates:
        missed: list[tuple[str, int]] = []
        inside = ""
        tail = alt[3:]
        scan: Iterable[Row]
        if tail in literal:
            scan = _runs(entries, starts[tail])
        else:
            if free is None:
                free = [i for i, c in enumerate(codes) if c & SENT and rules[i] is None]
            scan = (entries[i] for i in free)
        for e in scan:
            if not e.included or e.rule is not None:
                continue  # (inside a run: excluded, or decided by another rule)
            if inside and e.path.startswith(inside):
                if e.kind == EntryKind.FILE and e.size >= 0:
                    missed[-1] = (missed[-1][0], missed[-1][1] + e.size)
                continue
            if _safe_matches(pat, e.path) and not _safe_matches(r.pattern, e.path):
                size = e.size if e.kind == EntryKind.FILE and e.size >= 0 else 0
                missed.append((e.path, size))
                inside = e.path + "/"
        if not missed:
            continue
        total = sum(b for _, b in missed)
        heavy = sorted(missed, key=lambda m: -m[1])
        named = [f"{p} ({format_size(b)})" if b else p for p, b in heavy]
        where = "at the context root" if "/" not in r.pattern.text else "one directory level down"
        yield _on(
            r, "gitignore-habit", WARNING,
            f"'{r.text}' only matches {where} in .dockerignore (no implicit '**/' as in .gitignore): it lets "
            f"through {_n(len(missed), 'path')} that no other rule decides ({format_size(total)}): {_listed(named)}",
            f"use '{alt}' to match at any depth", Edit("replace", alt, r.line),
        )


def _runs(entries: Walked, starts: list[int]) -> Iterable[Row]:
    """Each start entry and what lies below it (contiguous in walk order)."""
    paths = entries.paths
    end = -1
    for i in starts:
        if i <= end:
            continue
        head = paths[i] + "/"
        yield entries[i]
        j = i + 1
        while j < len(paths) and paths[j].startswith(head):
            yield entries[j]
            j += 1
        end = j - 1


def check_duplicates(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """A rule repeated later with only same-kind rules in between: the
    later copy can never decide anything."""
    rules = view.rules
    last: dict[tuple[bool, str], Rule] = {}
    for r in rules:
        key = (r.exception, r.pattern.text)
        prev = last.get(key)
        if prev is not None and all(x.exception == r.exception for x in rules[prev.index + 1:r.index]):
            # The earlier copy decides (the walkers skip the later one), so
            # the later one goes.
            yield _on(r, "duplicate", WARNING, f"repeats line {prev.line} ({prev.text})", "remove this copy",
                      Edit("comment", f"same as line {prev.line}", r.line, syntactic=True))
            continue
        last[key] = r


def _close_name(view: ContextView, pattern: Pattern) -> str | None:
    """A real name one typo away from a literal pattern (``node_module``)."""
    if any(c in pattern.text for c in "*?[\\"):
        return None
    import difflib

    parent, _, last = pattern.text.rpartition("/")
    names = view.children(parent)
    close = difflib.get_close_matches(last, sorted(names), n=1, cutoff=0.8)
    return f"{parent}/{close[0]}" if close and parent else (close[0] if close else None)


def check_dead_rules(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Exclusions that decide nothing: redundant (what they match is decided
    elsewhere) or matching nothing.  Guards of local state are left alone."""
    earlier: set[tuple[bool, str]] = set()
    for r in view.rules:
        key = (r.exception, r.pattern.text)
        repeated = key in earlier
        earlier.add(key)
        if r.exception or view.decided.get(r.index) or is_guard(r.pattern.text) or repeated:
            continue  # (a repeated rule is check_duplicates' finding)
        path, pruned_by = _first_match(view, r.pattern)
        if path is not None:
            if pruned_by is not None:
                why = f"it only matches inside {pruned_by.path}/, which {pruned_by.rule} already excludes"
            else:
                hit = view.entry(path)
                decider = hit.rule if hit is not None else None
                why = f"every path it matches is decided by another rule ({path}: {decider or 'no rule'})"
            yield _on(r, "redundant", WARNING, why, "remove it", Edit("comment", "redundant", r.line))
            continue
        history = view.history()
        if history is not None and any(_safe_matches(r.pattern, h) for h in history):
            continue  # it once matched something: deliberate, if obsolete
        typo = _close_name(view, r.pattern)
        if typo is not None:
            yield _on(r, "matches-nothing", WARNING, f"rule matches nothing; did you mean '{typo}'?",
                      f"correct it to '{typo}' if that is what it means")
        elif history is not None:
            yield _on(r, "matches-nothing", WARNING, "rule matches nothing in the tree or in its git history",
                      "check the spelling; remove it only if it is not meant for files made later")
        else:
            yield _on(r, "matches-nothing", INFO, "rule matches nothing in this tree (no git history to check)",
                      "check the spelling")


def check_exceptions(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """``!`` rules that re-include nothing that is sent."""
    for r in view.rules:
        if not r.exception or view.decided_sent.get(r.index):
            continue
        path, pruned_by = _first_match(view, r.pattern)
        if path is None:
            yield _on(r, "useless-exception", INFO, "exception matches no path in this tree",
                      "keep it if the path is made later (a build output, a local file)")
            continue
        if pruned_by is not None:
            why = ""
            if view.ctx.dialect is Dialect.CLASSIC and r.pattern.kind is not MatchKind.EXACT:
                why = (" (the classic builder only looks inside an excluded directory when the exception's "
                       "literal text starts with it)")
            msg = f"exception re-includes nothing: {pruned_by.path}/ is excluded by {pruned_by.rule} and not searched{why}"
            fix = "spell the path out literally (e.g. '!" + path + "') so that both builders look inside"
        else:
            entry = view.entry(path)
            decider = entry.rule if entry is not None else None
            if decider is not None and decider.exception:
                msg = (f"exception re-includes nothing more: {path} is already sent because {decider} "
                       "re-includes it (a re-included directory brings everything below it)")
                fix = "remove it, or narrow the earlier exception if only some files were meant"
            else:
                msg = f"exception re-includes nothing: what it matches ({path}) is not excluded"
                fix = "remove it if no earlier rule is meant to exclude these paths"
        yield _on(r, "useless-exception", WARNING, msg, fix)


def _literal_exception(r: Rule) -> bool:
    text = r.pattern.text
    for tail in ("/**", "/*"):
        text = text.removesuffix(tail)
    return not any(c in text for c in "*?[]^\\")


def _descended(view: ContextView) -> set[str]:
    """Excluded directories the walker read (for exceptions)."""
    w = view.entries
    out = {w.paths[i] for i, c in enumerate(w.codes)
           if c == DIR_CODE | SENT and (r := w.rules[i]) is not None and not r.exception}
    sent_or_pruned = w.dirs()
    for path in w.paths:
        parent = path.rpartition("/")[0]
        while parent and parent not in sent_or_pruned and parent not in out:
            out.add(parent)
            parent = parent.rpartition("/")[0]
    return out


def check_dialects(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Paths one builder sends and the other does not.  The walkers only
    differ in which excluded directories they read, so the other builder's
    walk is run only when some excluded directory is read by one of them."""
    ctx = view.ctx
    if not ctx.file_matcher.has_exceptions or all(_literal_exception(r) for r in view.rules if r.exception):
        # Both walkers read an excluded directory exactly when a literal
        # exception lies below it: they can only differ for wildcard exceptions.
        return
    other = Dialect.CLASSIC if ctx.dialect is Dialect.BUILDKIT else Dialect.BUILDKIT
    octx = view.reopen(dialect=other, rules=ctx.rules)
    dirs = [e.path for e in view.pruned()] + sorted(_descended(view))
    if all(descends_into_excluded(ctx, d) == descends_into_excluded(octx, d) for d in dirs):
        return
    oentries, _ = walk_entries(octx)
    osent = oentries.sent()
    # Directories differ by design (BuildKit sends excluded parents of
    # re-included paths, classic lets the daemon create them), and the
    # classic CLI forces the Dockerfile and .dockerignore in: compare the rest.
    skip = {"Dockerfile", ".dockerignore", ctx.dockerfile or ""}
    is_dir = view.entries.dirs() | oentries.dirs()
    differ = sorted(p for p in (view.sent ^ osent) - skip if p not in is_dir)
    for p in differ[:opts.max_listed]:
        who = ctx.dialect.value if p in view.sent else other.value
        yield Finding("dialect-difference", WARNING,
                      f"only {who} sends this path; the builders disagree for this .dockerignore",
                      "use exceptions whose literal text starts with the excluded directory so both builders agree",
                      file=ctx.ignore_source, path=p)
    if len(differ) > opts.max_listed:
        yield Finding("dialect-difference", WARNING, f"{len(differ) - opts.max_listed} more paths differ between the builders",
                      "run ctxpack ls --dialect classic and --dialect buildkit to compare", file=ctx.ignore_source)



def check_heavy(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Heavy directories of local state or build output that are sent."""
    sizes: dict[str, int] = {}
    kinds: dict[str, str | None] = {}
    reincluded: dict[str, Rule] = {}  # the first ! rule that sends something inside
    rules: dict[str, Rule | None] = {}  # the rule that decided each heavy directory
    entries = view.entries
    paths, codes, all_rules = entries.paths, entries.codes, entries.rules
    census = view.counted()
    projects = census.projects  # directories holding a .NET project file
    before = census.sent_before  # bytes sent by the entries before each
    n = len(entries)
    assert len(before) == n + 1
    # Only a ! line the user wrote counts as re-including (none: no search).
    exceptions = any(view.user_exception(r) for r in view.ctx.matcher.rules)
    done = 0  # entries before this are inside a heavy directory already summed
    for i in census.heavy:  # sent directories with a heavy name, in walk order
        if i < done:
            continue
        e = entries[i]
        i += 1
        parent, _, name = e.path.rpartition("/")
        what = heavy_kind(name, parent in projects)
        if what is None:
            continue
        # Sum its contents (and skip past them: a heavy directory inside a
        # heavy one is part of it).  The walk is depth-first, so they are
        # the entries from here to the first one outside it: found by
        # bisection; what they send is a difference of the census's sums.
        inside, lo, hi = e.path + "/", i, n
        while lo < hi:
            mid = (lo + hi) // 2
            if paths[mid].startswith(inside):
                lo = mid + 1
            else:
                hi = mid
        total = before[lo] - before[i]
        if exceptions and e.path not in reincluded:
            for r in filter(None, compress(all_rules[i:lo], map(SENT.__and__, codes[i:lo]))):
                if view.user_exception(r):
                    reincluded[e.path] = r
                    break
        i = lo
        done = i
        kinds[e.path], sizes[e.path] = what, total
        rules[e.path] = e.rule
    source = view.ctx.ignore_source or ".dockerignore"
    sent = census.sent_bytes
    for d, b in sorted(sizes.items(), key=lambda kv: -kv[1]):
        name = d.rpartition("/")[2]
        if not heavy_enough(b, sent):  # 1 MB and 2% of what is sent: a 194 kB .git is no news
            continue
        line = exclude_line(view, d) or d
        wider = f" (or '**/{name}' for every depth)" if "/" in d else ""
        rule = rules[d]
        if rule is not None and not rule.exception and d in reincluded:
            rule = reincluded[d]  # excluded, and sent as the parent of what a ! rule re-includes
        msg = f"{d}/ ({kinds[d]}, {format_size(b)}) is sent to the builder"
        if rule is not None and view.user_exception(rule):
            yield _on(rule, "heavy-directory", INFO, msg + f"; {rule} re-includes it on purpose",
                      f"remove {rule.text!r} if no build step needs it", Edit("append", line), path=d)
            continue
        yield Finding("heavy-directory", WARNING, msg, f"add '{line}' to {source}{wider}", file=view.ctx.ignore_source,
                      path=d, edit=Edit("append", line))


def _allow_comments(view: ContextView) -> dict[str, int]:
    """``# ctxpack: allow-secret PATH...`` lines of the ignore file: path -> line."""
    out: dict[str, int] = {}
    for number, line in enumerate((view.ignore_text or "").splitlines(), start=1):
        m = re.match(r"\s*#\s*ctxpack:\s*allow-secrets?\s+(.+)$", line)
        if m:
            for p in m.group(1).split():
                out.setdefault(p.strip("/").removeprefix("./"), number)
    return out


def _allowed(path: str, allowed: Iterable[str]) -> str | None:
    for a in allowed:
        if path == a or path.startswith(a.rstrip("/") + "/"):
            return a
    return None


def check_secrets(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Credentials in sent files, by content; an allowed path is info."""
    from ctxpack.linter import secrets  # here: its patterns are compiled while the walk runs (view.open_view)

    comments = _allow_comments(view)
    source = view.ctx.ignore_source or ".dockerignore"
    entries = view.entries
    # The census has the sent files whose names may be credentials, outside
    # installed packages and VCS data (not the project's credentials: a
    # package's test keys would fail every gate), each read during the walk.
    census = view.counted()
    for i in census.secret:
        e = entries[i]
        assert e.size >= 0
        reason, scanned = census.scans[i]
        if reason is None or scanned is None:
            continue  # not worth reading; or unreadable: the walk reports it
        hits = scanned
        if secrets.looks_like_example(e.path):
            hits = [h for h in hits if not h.what.startswith(("a value for", "a high-entropy"))]
        base = e.path.rpartition("/")[2]
        env_file = base.startswith(".env") or base.endswith(".env")
        if not hits and not env_file:
            continue
        line = exclude_line(view, e.path)
        edit = Edit("append", line) if line else None
        rule = e.rule if view.user_exception(e.rule) else None
        reinc = f"; {rule} re-includes it" if rule else ""

        def finding(severity: str, message: str, fix: str, edit: Edit | None = None) -> Finding:
            # Reported with the ! rule that re-includes the path, if one does.
            if rule is not None:
                return _on(rule, "secret", severity, message, fix, edit, path=e.path)
            return Finding("secret", severity, message, fix, view.ctx.ignore_source, path=e.path, edit=edit)

        if not hits:
            yield finding(INFO, f"{e.path} is sent; no credential found in its content{reinc}",
                          "nothing to do unless it holds settings the image should not get")
            continue
        what = "; ".join(f"{h.what}" + (f" (line {h.line})" if h.line else "") for h in hits[:3])
        if len(hits) > 3:
            what += f"; {len(hits) - 3} more"
        severity = ERROR if any(h.severity == ERROR for h in hits) else WARNING
        msg = f"{e.path} holds {what}, and is sent to the builder (values not shown){reinc}"
        by = None
        a = _allowed(e.path, opts.allow_secrets)
        if a is not None:
            by = f"--allow-secret {a}"
        else:
            c = _allowed(e.path, comments)
            if c is not None:
                by = f"{source}:{comments[c]}"
        if by is not None:
            yield finding(INFO, msg + f"; allowed by {by}", "nothing to do")
            continue
        yield finding(severity, msg,
                      f"exclude it ('{line or e.path}' in {source}) and pass it with RUN --mount=type=secret; "
                      f"or, if it is meant to be sent, allow it: --allow-secret {e.path} or "
                      f"'# ctxpack: allow-secret {e.path}' in {source}", edit)

def _source_state(view: ContextView, pattern: str) -> tuple[list[str], list[Rule | None]]:
    """For a COPY source: the paths it reads that are sent, and the rules
    keeping the others out (empty lists: nothing matches)."""
    from ctxpack.dockerfile.analysis import Selection  # loaded by the view already (its analysis)

    sel = Selection([pattern], view.ctx.root)
    literal = not any(c in pattern for c in "*?[\\")
    sent: list[str] = []
    keeping: list[Rule | None] = []
    if literal:
        e = view.entry(pattern)
        if e is not None:
            return ([pattern], []) if e.included else ([], [e.rule])
        if not os.path.lexists(os.path.join(view.ctx.root, pattern)):
            return [], []
        parts = pattern.split("/")
        for k in range(1, len(parts)):
            top = view.entry("/".join(parts[:k]))
            if top is not None and not top.included:
                return [], [top.rule]
        return [], [None]
    w = view.entries
    for path, code, rule in zip(w.paths, w.codes, w.rules):
        if sel.wants(path):
            if code & SENT:
                sent.append(path)
                return sent, keeping
            keeping.append(rule)
    for d in view.pruned():
        if sel.may_contain(d.path) and any(sel.wants(rel) for rel in view.subtree(d.path)):
            keeping.append(d.rule)
    return sent, keeping


def check_copy_sources(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """COPY/ADD/bind-mount sources that are missing or that the rules exclude."""
    an = view.analysis
    df = dockerfile_name(view.ctx)
    if an is None:
        if view.analysis_error and view.analysis_error != "no Dockerfile":
            yield Finding("dockerfile", INFO, f"cannot analyse the Dockerfile: {view.analysis_error}",
                          "fix the Dockerfile", file=df)
        return
    for src in an.sources:
        sent, keeping = _source_state(view, src.pattern)
        if sent:
            continue
        if not keeping:
            yield Finding("copy-source-missing", WARNING,
                          f"{src.instruction} source {src.pattern!r} (stage {src.stage}) matches nothing in the context: "
                          "the build fails with 'not found'", "create it or fix the path",
                          file=df, line=src.line, rule=src.pattern)
            continue
        rules = sorted({str(r) for r in keeping if r is not None})
        yield Finding("copy-source-excluded", ERROR,
                      f"{src.instruction} source {src.pattern!r} (stage {src.stage}) exists but the ignore rules "
                      f"exclude it ({', '.join(rules) or 'pruned'}): the build fails with 'not found'",
                      f"add an exception '!{src.pattern}' to {view.ctx.ignore_source or '.dockerignore'} or drop the COPY",
                      file=df, line=src.line, rule=src.pattern, edit=Edit("append", "!" + src.pattern))


def check_unused(view: ContextView, opts: LintOptions) -> Iterable[Finding]:
    """Sent paths no build stage reads, each at the highest directory with
    nothing read below it (never a directory a source reads inside)."""
    sel = view.reads
    if sel is None:
        return
    forced = view.forced | {".dockerignore"} | ({view.ctx.dockerfile} if view.ctx.dockerfile else set())
    groups: dict[str, int] = {}
    dirs: set[str] = set()
    inside = ""
    current = ""
    w = view.entries
    for path, code in zip(w.paths, w.codes):
        if not code & SENT:
            continue
        if inside and path.startswith(inside):
            groups[current] += 1
            continue
        if path in forced or sel.wants(path):
            continue
        if code == DIR_CODE | SENT:
            if sel.may_contain(path):
                continue
            current, inside = path, path + "/"
            dirs.add(path)
        else:
            current, inside = path, ""
        groups[current] = 1
    source = view.ctx.ignore_source or ".dockerignore"
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    for path, n in ranked[:opts.max_listed]:
        line = exclude_line(view, path)
        shown = path + "/" if path in dirs else path
        yield Finding("unused-by-build", INFO, f"{shown} is sent ({_n(n, 'entry', 'entries')}) but no build stage reads it",
                      f"add '{line or path}' to {source} (or pack with --minimal)", file=view.ctx.ignore_source,
                      path=path, edit=Edit("append", line) if line else None)
    if len(ranked) > opts.max_listed:
        rest = sum(n for _, n in ranked[opts.max_listed:])
        yield Finding("unused-by-build", INFO, f"{_n(len(ranked) - opts.max_listed, 'more path')} ({rest} entries) "
                      "are sent but no build stage reads them", "see ctxpack ls --minimal", file=view.ctx.ignore_source)


CHECKS: tuple[Check, ...] = (
    check_syntax, check_unreadable, check_habits, check_duplicates, check_dead_rules, check_exceptions,
    check_dialects, check_heavy, check_secrets, check_copy_sources, check_unused,
)


def _ignore_path(view: ContextView) -> str:
    ignore_file = view.opened.ignore_file
    source = view.ctx.ignore_source
    if ignore_file:
        return os.path.abspath(str(ignore_file))
    if source and source != ".dockerignore":
        return os.path.abspath(source)
    return os.path.join(view.ctx.root, ".dockerignore")


def _context_path(root: str, path: str) -> str:
    p = path.replace(os.sep, "/")
    if os.path.isabs(p):
        p = os.path.relpath(p, root).replace(os.sep, "/")
    return "/".join(x for x in p.split("/") if x not in ("", "."))


def lint(
    root: str | os.PathLike[str],
    *,
    dockerfile: str | None = None,
    dialect: Dialect | str = Dialect.BUILDKIT,
    ignore_file: str | None = None,
    allow_secrets: Iterable[str] = (),
    stdin_dockerfile: bytes | None = None,
    max_listed: int = 20,
    checks: tuple[Check, ...] = CHECKS,
) -> LintReport:
    """Lint the ignore file that applies to ``root`` for ``dialect``.

    ``allow_secrets`` lists context paths (files or directories) whose
    credentials are accepted: their findings become info.  Raises
    :class:`~ctxpack.errors.CtxpackError` subclasses for unusable input (no
    such directory, an unreadable ignore file).
    """
    view = open_view(root, dockerfile=dockerfile, dialect=Dialect(dialect), ignore_file=ignore_file,
                     stdin_dockerfile=stdin_dockerfile)
    opts = LintOptions(frozenset(_context_path(view.ctx.root, p) for p in allow_secrets), max_listed)
    findings = [f for check in checks for f in check(view, opts)]
    return LintReport(view.ctx.ignore_source, _ignore_path(view), merge_by_path(findings), view)
