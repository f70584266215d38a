"""Rules and the evaluators Docker uses to decide a path.

A :class:`Rule` is a compiled pattern with its origin (file, line, text), so
every decision can say which rule made it.  :class:`Matcher` holds the rules
in file order and offers Docker's three evaluators (semantics note §4):

* :meth:`Matcher.decide` — the walker's incremental evaluation with
  per-pattern results inherited from the parent directory
  (``MatchesUsingParentResults``): this decides what is *sent*;
* :meth:`Matcher.matches_or_parent_matches` — ``MatchesOrParentMatches``, used
  by the classic CLI's context validation;
* :meth:`Matcher.matches_single_parent` — the deprecated ``Matches`` the
  classic CLI still uses to decide whether to re-add the Dockerfile.

Patterns are compiled once; a pattern Docker can only reject at evaluation
time raises :class:`~ctxpack.errors.PatternError` (naming file and line) the
first time it is evaluated, exactly when Docker would fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ctxpack._go.strings import go_trim_space
from ctxpack.errors import BrokenPattern, PatternError, PatternSyntaxError
from ctxpack.ignore.dialect import Dialect
from ctxpack.ignore.reader import RawRule, parse_lines
from ctxpack.ignore.pattern import Pattern, compile_pattern

__all__ = ["Rule", "Decision", "Matcher", "DirPlan", "Descent", "NO_RULE"]


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule and where it came from.

    ``source`` is the ignore file (or ``"<docker cli>"`` for exceptions the
    classic CLI appends itself), ``line`` its 1-based line (0 if synthetic),
    ``text`` the line as written.
    """

    pattern: Pattern
    source: str
    line: int
    text: str
    index: int

    @property
    def exception(self) -> bool:
        return self.pattern.exception

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.text}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The walker's verdict on one path: excluded or not, and by which rule.

    ``rule`` is the last rule that matched (an exclusion when ``excluded``,
    an exception that re-included the path otherwise), or ``None`` when no
    rule matched.  ``bits`` are the per-rule results handed to children.
    """

    excluded: bool
    rule: Rule | None
    bits: int


#: No rule decides: the path is sent and hands no results to its children.
NO_RULE = Decision(False, None, 0)


class DirPlan:
    """Which rules can matter for the children of one directory.

    Built once per directory: the rules whose result the directory passes
    down, plus the rules that could match a direct child at all (by literal
    prefix and depth).  Evaluating only these gives the same answers as
    evaluating every rule, because a skipped rule could only ever record
    "no hit".
    """

    __slots__ = ("candidates", "bits")

    def __init__(self, candidates: tuple[int, ...], bits: int):
        self.candidates = candidates
        self.bits = bits


class Matcher:
    """An ordered list of rules with Docker's evaluators."""

    def __init__(self, rules: Sequence[Rule]):
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._pats = tuple(r.pattern for r in self.rules)
        self._match = tuple(p.matches for p in self._pats)
        self._exc = tuple(p.exception for p in self._pats)
        self.has_exceptions = any(self._exc)

    # --- construction ------------------------------------------------------
    @classmethod
    def from_raw(cls, raw: Iterable[RawRule]) -> Matcher:
        """Compile parsed ignore-file lines.

        Raises :class:`PatternError` naming the file and line for a pattern
        Docker refuses at load time.
        """
        rules: list[Rule] = []
        for r in raw:
            if not go_trim_space(r.pattern):
                continue  # patternmatcher.New skips an empty pattern (semantics note §3.1 step 1)
            try:
                pat = compile_pattern(r.pattern)
            except PatternSyntaxError as e:
                raise PatternError(str(e), r.source, r.line, r.text) from None
            rules.append(Rule(pat, r.source, r.line, r.text, len(rules)))
        return cls(rules)

    @classmethod
    def from_lines(cls, lines: Iterable[str], source: str = "<lines>") -> Matcher:
        """Compile ignore-file lines (see :func:`~ctxpack.ignore.reader.parse_lines`).

        >>> m = Matcher.from_lines(["*.log", "!keep.log"])
        >>> m.match("keep.log").excluded, str(m.match("keep.log").rule)
        (False, '<lines>:2:!keep.log')
        """
        return cls.from_raw(parse_lines(lines, source))

    def match(self, path: str) -> Decision:
        """The walker's decision on ``path`` (relative to the context,
        ``/``-separated): excluded or not, and the deciding rule.

        Evaluated as Docker's walker does, with the results of each ancestor
        directory inherited.  Whether an excluded parent hides the path
        altogether depends on the dialect: ask :func:`ctxpack.explain_path`.
        """
        parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
        if not parts:
            return NO_RULE
        return self.decide_path("/".join(parts))[-1][1]

    def with_extra(self, extra: Iterable[str]) -> Matcher:
        """A matcher with synthetic rules appended (the classic CLI's re-adds)."""
        rules = list(self.rules)
        for text in extra:
            try:
                pat = compile_pattern(text)
            except PatternSyntaxError as e:
                # A Dockerfile name that is not a valid pattern: the CLI's
                # tar step fails on it the same way.
                raise PatternError(str(e), "<docker cli>", None, text) from None
            rules.append(Rule(pat, "<docker cli>", 0, text, len(rules)))
        return Matcher(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def _eval(self, i: int, path: str) -> bool:
        try:
            return self._match[i](path)
        except BrokenPattern as e:
            r = self.rules[i]
            raise PatternError(str(e), r.source, r.line, r.text) from None

    # --- walker semantics ----------------------------------------------------
    def plan(self, directory: str, bits: int, child_depth: int) -> DirPlan:
        """Prepare the evaluation of ``directory``'s children (``""`` = root)."""
        cands = tuple(
            i
            for i, p in enumerate(self._pats)
            if (bits >> i) & 1 or p.can_match_below(directory, child_depth)
        )
        return DirPlan(cands, bits)

    def decide(self, path: str, plan: DirPlan) -> Decision:
        """``MatchesUsingParentResults`` for ``path`` given its parent's plan."""
        if not plan.candidates:
            return NO_RULE  # no rule can match here: included, nothing inherited
        excluded = False
        rec = 0
        rule = -1
        parent = plan.bits
        exc = self._exc
        for i in plan.candidates:
            if (parent >> i) & 1:
                hit = True
            else:
                if exc[i] != excluded:
                    continue  # lazily skipped: recorded as no hit
                try:
                    hit = self._match[i](path)
                except BrokenPattern as e:
                    r = self.rules[i]
                    raise PatternError(str(e), r.source, r.line, r.text) from None
            if hit:
                rec |= 1 << i
                excluded = not exc[i]
                rule = i
        return Decision(excluded, self.rules[rule] if rule >= 0 else None, rec)

    def decide_path(self, path: str) -> list[tuple[str, Decision]]:
        """Walker decisions for ``path`` and each of its ancestors, top down."""
        parts = path.split("/")
        out: list[tuple[str, Decision]] = []
        bits = 0
        for k in range(1, len(parts) + 1):
            sub = "/".join(parts[:k])
            parent = "/".join(parts[: k - 1])
            d = self.decide(sub, self.plan(parent, bits, k))
            out.append((sub, d))
            bits = d.bits
        return out

    # --- other evaluators ----------------------------------------------------
    def matches_or_parent_matches(self, path: str) -> tuple[bool, Rule | None]:
        """``MatchesOrParentMatches``: each rule tested on the path and all ancestors."""
        excluded = False
        rule: Rule | None = None
        parts = path.split("/")
        ancestors = ["/".join(parts[:k]) for k in range(1, len(parts))]
        for i, p in enumerate(self._pats):
            if p.exception != excluded:
                continue
            hit = self._eval(i, path)
            if not hit:
                for a in ancestors:
                    try:
                        if p.matches(a):
                            hit = True
                            break
                    except BrokenPattern:
                        pass  # Docker ignores errors on ancestors
            if hit:
                excluded = not p.exception
                rule = self.rules[i]
        return excluded, rule

    def self_or_ancestor_bits(self, path: str, parent_bits: int) -> int:
        """Bit i set when rule i matches ``path`` or one of its ancestors
        (``parent_bits`` is the same for the parent directory).  Errors count
        as no match, as ``MatchesOrParentMatches`` ignores them on ancestors."""
        bits = parent_bits
        for i, m in enumerate(self._match):
            if not (bits >> i) & 1:
                try:
                    if m(path):
                        bits |= 1 << i
                except BrokenPattern:
                    pass
        return bits

    def matches_or_parent_matches_with(self, path: str, ancestor_bits: int) -> bool:
        """:meth:`matches_or_parent_matches` given the parent's
        :meth:`self_or_ancestor_bits`: evaluates only the path itself."""
        excluded = False
        exc = self._exc
        for i, m in enumerate(self._match):
            if exc[i] != excluded:
                continue
            hit = self._eval(i, path) or bool((ancestor_bits >> i) & 1)
            if hit:
                excluded = not exc[i]
        return excluded

    def matches_single_parent(self, path: str) -> bool:
        """Deprecated ``Matches``: only the ancestor as deep as the pattern.

        Errors make it answer ``False``, as ``TrimBuildFilesFromExcludes``
        discards them.
        """
        excluded = False
        parts = path.split("/")
        parent_dirs = parts[:-1]
        for p in self._pats:
            if p.exception != excluded:
                continue
            try:
                hit = p.matches(path)
            except BrokenPattern:
                return False
            if not hit and parent_dirs:
                ndirs = p.text.count("/") + 1
                if ndirs <= len(parent_dirs):
                    try:
                        hit = p.matches("/".join(parent_dirs[:ndirs]))
                    except BrokenPattern:
                        hit = False
            if hit:
                excluded = not p.exception
        return excluded

    # --- pruning ---------------------------------------------------------------
    def exception_texts(self) -> list[str]:
        return [p.text for p in self._pats if p.exception]

    def descent(self, dialect: Dialect) -> Descent:
        """Which excluded directories ``dialect``'s walker still reads."""
        return Descent(self, dialect)


def _prefix_only(texts: list[str]) -> tuple[bool, list[str]]:
    """fsutil: are all exceptions literal paths, bar a trailing ``/*``/``/**``?"""
    stripped = []
    only = True
    for t in texts:
        s = t
        if s.endswith("/**"):
            s = s[:-3]
        if s.endswith("/*"):
            s = s[:-2]
        if any(c in s for c in "*?[]^\\"):
            only = False
        stripped.append(s)
    return only, stripped


class Descent:
    """Whether an excluded directory must still be read, per dialect.

    An excluded directory is read only when an exception could re-include
    something below it (semantics note §4.5-4.6).  The classic CLI
    (go-archive) reads it when an exception's literal text starts with
    ``dir/``; BuildKit (fsutil) does the same when every exception is
    "prefix-only" and otherwise reads every excluded directory.
    """

    __slots__ = ("_any", "_all_dirs", "_prefixes", "_exceptions")

    def __init__(self, matcher: Matcher, dialect: Dialect):
        texts = matcher.exception_texts()
        self._any = bool(texts)
        self._exceptions = tuple(r.pattern for r in matcher.rules if r.exception)
        if dialect is Dialect.CLASSIC:
            self._all_dirs = False
            self._prefixes = tuple(t + "/" for t in texts)
        else:
            only, stripped = _prefix_only(texts)
            self._all_dirs = self._any and not only
            self._prefixes = tuple(t + "/" for t in stripped)

    def literal_dirs(self) -> list[str] | None:
        """Every directory :meth:`reads` can say yes to, when that is a
        finite list (no exceptions, or literal prefixes only: the prefixes'
        leading directories); ``None`` when it is not."""
        if not self._any:
            return []
        if self._all_dirs:
            return None
        out: set[str] = set()
        for p in self._prefixes:
            parts = p.rstrip("/").split("/")
            out.update("/".join(parts[:k]) for k in range(1, len(parts) + 1))
        return sorted(out)

    def reads(self, path: str) -> bool:
        """Whether the walker reads the excluded directory ``path``."""
        if not self._any:
            return False
        if self._all_dirs:
            # fsutil reads every excluded directory here.  Only an exception
            # that can match a path below this one can re-include anything
            # (the rest inherit the directory's verdict), so skip the others:
            # same result, without statting all of node_modules.
            return any(p.can_match_inside(path) for p in self._exceptions)
        d = path + "/"
        return any(p.startswith(d) for p in self._prefixes)

