"""A linear-time matcher for the regexes whose backtracking could explode.

Docker matches patterns with Go's RE2, whose time is linear in the path.
Python's ``re`` backtracks: ``*a*a*a*a*a*a*ab`` (``^[^/]*a[^/]*a…b$``)
against a long name takes time polynomial in the name with the number of
``*`` as the exponent.  For those patterns (``risky``) ctxpack matches with
this module instead: the Python expression that :mod:`ctxpack._go.re2`
emits is read back with the standard library's own regex parser (so both
matchers see one syntax tree and decide alike), turned into a Thompson NFA,
and run as a DFA built lazily, one state set per step: every path is read
once, each character costing one dictionary look-up once its transition is
known.  The cache of DFA states is bounded; when full it starts again.

Only what the translator emits is supported (literals, classes, ``.``,
groups, alternation, repetition, ``^``, ``\\A``, ``\\Z``, the never-matching
``(?!)``); anything else (word boundaries) raises :class:`NotLinear` and the
caller keeps ``re``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

if sys.version_info >= (3, 11):  # pragma: no cover - version switch
    from re import _constants as _c  # type: ignore[attr-defined,unused-ignore]
    from re import _parser as _p  # type: ignore[attr-defined,unused-ignore]
else:  # pragma: no cover - version switch
    import sre_constants as _c
    import sre_parse as _p

__all__ = ["NotLinear", "LinearMatcher", "risky"]

MAX_NFA_STATES = 20_000
MAX_DFA_STATES = 4_000


class NotLinear(Exception):
    """The expression uses something this matcher does not model."""


# --- NFA -------------------------------------------------------------------
# A state is a list [kind, arg, out1, out2]; kinds:
_CHAR, _SPLIT, _EPS, _BOL, _EOL, _MATCH, _FAIL = range(7)

_CATEGORY_RX = {
    _c.CATEGORY_DIGIT: re.compile(r"\d"), _c.CATEGORY_NOT_DIGIT: re.compile(r"\D"),
    _c.CATEGORY_SPACE: re.compile(r"\s"), _c.CATEGORY_NOT_SPACE: re.compile(r"\S"),
    _c.CATEGORY_WORD: re.compile(r"\w"), _c.CATEGORY_NOT_WORD: re.compile(r"\W"),
}


def _class_test(items: list[tuple[Any, Any]]) -> Callable[[str], bool]:
    """A predicate for an ``IN`` node (LITERAL, RANGE, CATEGORY, NEGATE)."""
    negate = False
    singles: set[int] = set()
    ranges: list[tuple[int, int]] = []
    cats: list[re.Pattern[str]] = []
    for op, av in items:
        if op is _c.NEGATE:
            negate = True
        elif op is _c.LITERAL:
            singles.add(av)
        elif op is _c.RANGE:
            ranges.append(av)
        elif op is _c.CATEGORY and av in _CATEGORY_RX:
            cats.append(_CATEGORY_RX[av])
        else:
            raise NotLinear(f"class item {op}")

    def test(ch: str) -> bool:
        cp = ord(ch)
        hit = cp in singles or any(lo <= cp <= hi for lo, hi in ranges) or any(r.match(ch) for r in cats)
        return hit != negate

    return test


def _is(cp: int) -> Callable[[str], bool]:
    return lambda ch: ord(ch) == cp


def _is_not(cp: int) -> Callable[[str], bool]:
    return lambda ch: ord(ch) != cp


class _Builder:
    def __init__(self) -> None:
        self.states: list[list[Any]] = []

    def new(self, kind: int, arg: Any = None) -> int:
        if len(self.states) >= MAX_NFA_STATES:
            raise NotLinear("expression too large")
        self.states.append([kind, arg, None, None])
        return len(self.states) - 1

    # Each fragment is (start, list of (state, slot) holes to patch).
    def seq(self, nodes: Any) -> tuple[int, list[tuple[int, int]]]:
        start = self.new(_EPS)
        holes = [(start, 2)]
        for op, av in nodes:
            s, h = self.node(op, av)
            self.patch(holes, s)
            holes = h
        return start, holes

    def patch(self, holes: list[tuple[int, int]], target: int) -> None:
        for st, slot in holes:
            self.states[st][slot] = target

    def char(self, test: Callable[[str], bool]) -> tuple[int, list[tuple[int, int]]]:
        s = self.new(_CHAR, test)
        return s, [(s, 2)]

    def node(self, op: Any, av: Any) -> tuple[int, list[tuple[int, int]]]:
        if op is _c.LITERAL:
            return self.char(_is(av))
        if op is _c.NOT_LITERAL:
            return self.char(_is_not(av))
        if op is _c.ANY:
            return self.char(lambda ch: ch != "\n")  # no DOTALL in what re2.py emits
        if op is _c.IN:
            return self.char(_class_test(av))
        if op is _c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags & ~_c.SRE_FLAG_ASCII or del_flags:
                raise NotLinear("group flags")
            return self.seq(sub)
        if op is _c.BRANCH:
            frags = [self.seq(alt) for alt in av[1]]
            holes = [hole for _, h in frags for hole in h]
            entry = frags[-1][0]
            for s, _ in reversed(frags[:-1]):
                split = self.new(_SPLIT)
                self.states[split][2] = s
                self.states[split][3] = entry
                entry = split
            return entry, holes
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):  # greediness never changes yes/no
            lo, hi, sub = av
            start = self.new(_EPS)
            holes = [(start, 2)]
            for _ in range(lo):
                s, h = self.seq(sub)
                self.patch(holes, s)
                holes = h
            if hi == _c.MAXREPEAT:
                split = self.new(_SPLIT)
                self.patch(holes, split)
                s, h = self.seq(sub)
                self.states[split][2] = s
                self.patch(h, split)
                return start, [(split, 3)]
            out: list[tuple[int, int]] = []
            for _ in range(hi - lo):
                split = self.new(_SPLIT)
                self.patch(holes, split)
                s, h = self.seq(sub)
                self.states[split][2] = s
                out.append((split, 3))
                holes = h
            return start, holes + out
        if op is _c.AT:
            if av in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING):
                s = self.new(_BOL)
            elif av is _c.AT_END_STRING:
                s = self.new(_EOL)
            else:
                raise NotLinear(f"assertion {av}")
            return s, [(s, 2)]
        if op is _c.ASSERT_NOT and len(av[1]) == 0:  # (?!): the class with no member
            return self.new(_FAIL), []
        raise NotLinear(f"node {op}")


# --- lazy DFA --------------------------------------------------------------
class _DState:
    __slots__ = ("chars", "matched", "mid", "end")

    def __init__(self, chars: tuple[int, ...], matched: bool):
        self.chars = chars
        self.matched = matched
        self.mid: dict[str, _DState] = {}  # transitions on a character not the last
        self.end: dict[str, _DState] = {}  # on the last character


class LinearMatcher:
    """``search`` for one emitted expression, in time linear in the subject."""

    def __init__(self, python_regex: str):
        b = _Builder()
        start, holes = b.seq(_p.parse(python_regex))
        b.patch(holes, b.new(_MATCH))
        self._states = b.states
        self._start = start
        self._reset()

    def _reset(self) -> None:
        self._dstates: dict[tuple[frozenset[int], bool, bool], _DState] = {}

    def _state(self, kernel: frozenset[int], bol: bool, eol: bool) -> _DState:
        key = (kernel, bol, eol)
        d = self._dstates.get(key)
        if d is not None:
            return d
        if len(self._dstates) >= MAX_DFA_STATES:
            self._reset()
        states = self._states
        seen: set[int] = set()
        chars: list[int] = []
        matched = False
        stack = list(kernel)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            kind, _arg, o1, o2 = states[i]
            if kind == _CHAR:
                chars.append(i)
            elif kind == _MATCH:
                matched = True
            elif kind == _EPS:
                stack.append(o1)
            elif kind == _SPLIT:
                stack.append(o2)
                stack.append(o1)
            elif kind == _BOL:
                if bol:
                    stack.append(o1)
            elif kind == _EOL:
                if eol:
                    stack.append(o1)
        d = _DState(tuple(sorted(chars)), matched)
        self._dstates[key] = d
        return d

    def _step(self, d: _DState, ch: str, last: bool) -> _DState:
        states = self._states
        kernel = {states[i][2] for i in d.chars if states[i][1](ch)}
        kernel.add(self._start)  # search: a match may start at any position
        nd = self._state(frozenset(kernel), False, last)
        (d.end if last else d.mid)[ch] = nd
        return nd

    def search(self, subject: str) -> bool:
        """Whether the expression matches anywhere in ``subject`` (``re.search``)."""
        n = len(subject)
        d = self._state(frozenset((self._start,)), True, n == 0)
        if d.matched:
            return True
        step = self._step
        for i in range(n - 1):
            ch = subject[i]
            nd = d.mid.get(ch)
            d = step(d, ch, False) if nd is None else nd
            if d.matched:
                return True
        if n:
            ch = subject[n - 1]
            nd = d.end.get(ch)
            d = step(d, ch, True) if nd is None else nd
        return d.matched


def risky(python_regex: str) -> bool:
    """Could ``re`` backtrack badly on this expression?

    Three or more unbounded repetitions (``^[^/]*a[^/]*a[^/]*b$``: time
    grows like the path's length to that power; one inside ``{n}`` counts
    ``n`` times), many optional parts (``a{0,1}`` eight times), or a
    repetition that may run more than once holding another repetition or an
    alternation (``(a*)*``, ``(a|aa){2,9}``).  Two unbounded stars
    (``**/*.pyc``, the common case) stay on ``re``: quadratic at worst, in a
    path of at most ``PATH_MAX`` characters.
    """
    unbounded = 0
    optional = 0

    def walk(nodes: Any, mult: int, inside_multi: bool) -> bool:
        nonlocal unbounded, optional
        for op, av in nodes:
            if op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
                lo, hi, sub = av
                if inside_multi and hi > 1:
                    return True
                if hi == _c.MAXREPEAT:
                    unbounded += mult
                elif hi != lo:
                    optional += mult
                if walk(sub, min(mult * max(hi, 1), 1000), inside_multi or hi > 1):
                    return True
            elif op is _c.SUBPATTERN:
                if walk(av[3], mult, inside_multi):
                    return True
            elif op is _c.BRANCH:
                if inside_multi:
                    return True
                for alt in av[1]:
                    if walk(alt, mult, inside_multi):
                        return True
        return False

    return walk(_p.parse(python_regex), 1, False) or unbounded >= 3 or optional >= 8
