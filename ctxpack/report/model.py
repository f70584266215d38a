"""The data behind ``ctxpack size --html``: one measurement, as a tree.

The report's numbers are ``size --json``'s numbers: :func:`build_model`
runs the same measurement (:func:`ctxpack.explainer.size`) and builds the treemap's
tree from the entries that measurement counted (its ``on_entry`` hook), so
the page embeds ``SizeReport.to_json()`` unchanged next to a tree whose
totals are that report's totals.

The tree is kept small enough to draw on a 100k-file context: a node is kept
only if it holds at least ``1/budget`` of its view's bytes (sent bytes for
the "sent" view, excluded bytes for the "kept out" view); what falls below is
folded into one "N small files" node per directory, and a directory below the
threshold becomes a single leaf that still carries its file count.  So at
most about ``budget`` nodes per depth survive, whatever the tree's size.

Node encoding (compact, because a big tree is thousands of nodes): a dict
with ``n`` name, ``s``/``f`` sent bytes/files, ``xs``/``xf`` excluded
bytes/files, ``k`` kind (``d`` directory, ``c`` collapsed directory, ``a``
aggregate of small files, absent for a file), ``c`` children, ``r`` the
index in ``size.rules`` of the rule that kept it out (``-1``: several),
``e`` dominant extension of an aggregate, ``u`` indices in ``reads`` of
the Dockerfile sources that read it.  Zero-valued keys are left out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ctxpack import explainer
from ctxpack.audit import SizeReport
from ctxpack.context import BuildContext
from ctxpack.dockerfile.analysis import Selection
from ctxpack.linter import lint
from ctxpack.walker import Entry, EntryKind, Progress

__all__ = ["ReportModel", "build_model", "size_findings", "SIZE_FINDING_KINDS", "DEFAULT_BUDGET"]

#: Lint kinds the report shows: the ones about what the context weighs or leaks.
SIZE_FINDING_KINDS = frozenset({"heavy-directory", "secret", "unused-by-build", "large-file"})

#: Default node budget: each kept node holds at least 1/DEFAULT_BUDGET of its view.
DEFAULT_BUDGET = 2500

#: Directories deeper than this are drawn collapsed.  A treemap cannot show
#: more levels than it has pixels, and the page's tree (its JSON and the
#: script that lays it out) must stay well inside Python's and the browser's
#: recursion limits: a context may nest thousands of directories deep.
MAX_DEPTH = 64


@dataclass
class _Dir:
    children: dict[str, _Dir | _Leaf] = field(default_factory=dict)
    s: int = 0
    f: int = 0
    xs: int = 0
    xf: int = 0


@dataclass
class _Leaf:
    s: int = 0
    f: int = 0
    xs: int = 0
    xf: int = 0
    rule: int = -1
    reads: tuple[int, ...] = ()
    is_dir: bool = False  # an excluded directory, pruned: one leaf for all of it


@dataclass
class ReportModel:
    """Everything the page shows; :meth:`to_json` is what it embeds."""

    size: SizeReport
    tree: dict[str, Any]
    reads: list[dict[str, Any]] = field(default_factory=list)
    whole_context: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    budget: int = DEFAULT_BUDGET
    nodes: int = 0
    linted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The page's data: ``size`` is exactly ``size --json``'s document."""
        return {
            "version": 1,
            "size": self.size.to_json(),
            "tree": self.tree,
            "reads": self.reads,
            "whole_context": self.whole_context,
            "findings": self.findings,
            "budget": self.budget,
            "nodes": self.nodes,
            "lint": self.linted,
        }


class _TreeBuilder:
    """Collects the entries ``measure`` counted into a directory tree."""

    def __init__(self, readers: list[Selection]) -> None:
        self.root = _Dir()
        self.dirs: dict[str, _Dir] = {"": self.root}
        self.rule_index: dict[str, int] = {}  # filled after measuring: str(rule) -> position in size.rules
        self.rules: dict[str, str] = {}
        self.readers = readers  # one Selection per Dockerfile source
        self.read_totals = [[0, 0] for _ in readers]

    def _dir(self, path: str) -> _Dir:
        # Entries come in walk order, so a file's directory is nearly always
        # known; when it is not, climb to the nearest known ancestor and
        # create the chain below it (a loop: the chain can be thousands deep).
        d = self.dirs.get(path)
        if d is not None:
            return d
        missing = [path]
        head = path.rpartition("/")[0]
        while head not in self.dirs:
            missing.append(head)
            head = head.rpartition("/")[0]
        parent = self.dirs[head]
        for p in reversed(missing):
            name = p.rpartition("/")[2]
            old = parent.children.get(name)
            d = self.dirs[p] = _Dir()
            if isinstance(old, _Leaf):  # an excluded directory listed before its exceptions
                d.xs, d.xf = old.xs, old.xf
            parent.children[name] = d
            parent = d
        return parent

    def __call__(self, e: Entry, files: int, nbytes: int) -> None:
        if e.included and (e.kind != EntryKind.FILE):
            if e.kind == EntryKind.DIR:
                self._dir(e.path)  # empty directories show too (with no area)
            return
        head, _, name = e.path.rpartition("/")
        parent = self._dir(head)
        leaf = _Leaf()
        if e.included:
            leaf.s, leaf.f = nbytes, files
            if self.readers:
                hits = tuple(i for i, sel in enumerate(self.readers) if sel.wants(e.path))
                leaf.reads = hits
                for i in hits:
                    self.read_totals[i][0] += 1
                    self.read_totals[i][1] += nbytes
        else:
            leaf.xs, leaf.xf = nbytes, files
            leaf.is_dir = e.kind == EntryKind.DIR
            key = str(e.rule) if e.rule is not None else ""
            self.rules[e.path] = key
        old = parent.children.get(name)
        if isinstance(old, _Dir):
            # An excluded directory that is also a directory of sent paths:
            # its excluded part is the directory node's own excluded share.
            old.xs += leaf.xs
            old.xf += leaf.xf
            return
        parent.children[name] = leaf


def _sum(root: _Dir) -> None:
    """Add each directory's children into it, deepest first (no recursion)."""
    order: list[_Dir] = []
    stack = [root]
    while stack:
        d = stack.pop()
        order.append(d)
        stack.extend(c for c in d.children.values() if isinstance(c, _Dir))
    for d in reversed(order):  # every child directory comes after its parent in ``order``
        for c in d.children.values():
            d.s += c.s
            d.f += c.f
            d.xs += c.xs
            d.xf += c.xf


def _extension(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


class _Compactor:
    """Turns the full tree into the page's nodes, folding what is below the thresholds."""

    def __init__(self, t_sent: int, t_out: int, builder: _TreeBuilder, keep: set[str]) -> None:
        self.ts = t_sent
        self.tx = t_out
        self.b = builder
        self.count = 0
        # paths a finding points at (and their directories) are never folded
        self.keep = set(keep)
        for p in keep:
            while "/" in p:
                p = p.rsplit("/", 1)[0]
                self.keep.add(p)

    def big(self, n: _Dir | _Leaf, path: str) -> bool:
        return (n.s > 0 and n.s >= self.ts) or (n.xs > 0 and n.xs >= self.tx) or path in self.keep

    def leaf_rule(self, path: str) -> int:
        return self.b.rule_index.get(self.b.rules.get(path, ""), -1)

    def node(self, name: str, path: str, n: _Dir | _Leaf, *, root: bool = False, depth: int = 0) -> dict[str, Any]:
        self.count += 1
        out: dict[str, Any] = {"n": name}
        for k in ("s", "f", "xs", "xf"):
            v = getattr(n, k)
            if v:
                out[k] = v
        if isinstance(n, _Leaf):
            if n.is_dir:
                out["k"] = "c"
            if n.xf or n.xs or path in self.b.rules:
                out["r"] = self.leaf_rule(path)
            if n.reads:
                out["u"] = list(n.reads)
            return out
        if not root and (depth >= MAX_DEPTH or not self.big(n, path)):
            out["k"] = "c"
            self._summarise(out, path, n)
            return out
        out["k"] = "d"
        kids: list[dict[str, Any]] = []
        small_sent = _Leaf()
        small_out = _Leaf()
        small_ext: dict[str, int] = {}
        out_ext: dict[str, int] = {}
        sent_reads: set[int] = set()
        out_rules: set[int] = set()
        for cname in sorted(n.children, key=lambda c: c.encode("utf-8", "surrogateescape")):
            c = n.children[cname]
            cpath = f"{path}/{cname}" if path else cname
            if isinstance(c, _Dir) or self.big(c, cpath):
                kids.append(self.node(cname, cpath, c, depth=depth + 1))
                continue
            # a small file: folded into this directory's aggregate for its view
            if c.f or c.s:
                small_sent.s += c.s
                small_sent.f += c.f
                small_ext[_extension(cname)] = small_ext.get(_extension(cname), 0) + c.s
                sent_reads.update(c.reads)
            if c.xf or c.xs or cpath in self.b.rules:
                small_out.xs += c.xs
                small_out.xf += max(c.xf, 0)
                out_ext[_extension(cname)] = out_ext.get(_extension(cname), 0) + c.xs
                out_rules.add(self.leaf_rule(cpath))
        if small_sent.f:
            self.count += 1
            agg: dict[str, Any] = {"n": "", "k": "a", "s": small_sent.s, "f": small_sent.f}
            agg["e"] = max(small_ext.items(), key=lambda kv: (kv[1], kv[0]))[0]
            if sent_reads:
                agg["u"] = sorted(sent_reads)
            kids.append(agg)
        if small_out.xf or small_out.xs:
            self.count += 1
            agg = {"n": "", "k": "a", "xs": small_out.xs, "xf": small_out.xf}
            agg["e"] = max(out_ext.items(), key=lambda kv: (kv[1], kv[0]))[0]
            agg["r"] = out_rules.pop() if len(out_rules) == 1 else -1
            kids.append(agg)
        if kids:
            out["c"] = kids
        return out

    def _summarise(self, out: dict[str, Any], path: str, d: _Dir) -> None:
        """A collapsed directory: which rule(s) and readers its content has."""
        rules: set[int] = set()
        reads: set[int] = set()
        ext: dict[str, int] = {}
        stack: list[tuple[str, _Dir]] = [(path, d)]
        while stack:
            p, cur = stack.pop()
            for cname, c in cur.children.items():
                cp = f"{p}/{cname}"
                if isinstance(c, _Dir):
                    stack.append((cp, c))
                    continue
                if cp in self.b.rules:
                    rules.add(self.leaf_rule(cp))
                reads.update(c.reads)
                x = _extension(cname)
                ext[x] = ext.get(x, 0) + c.s + c.xs
        if ext:
            out["e"] = max(ext.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if d.xf or d.xs:
            out["r"] = rules.pop() if len(rules) == 1 else -1
        if reads:
            out["u"] = sorted(reads)


def build_model(
    ctx: BuildContext,
    *,
    top: int = 10,
    budget: int = DEFAULT_BUDGET,
    findings: list[dict[str, Any]] | None = None,
    progress: Progress | None = None,
) -> ReportModel:
    """Measure ``ctx`` once and shape the result for the HTML page.

    ``findings`` are lint findings (``Finding.to_json()`` dicts); only the
    kinds in :data:`SIZE_FINDING_KINDS` are kept.  With a ``--minimal``
    context, ``reads`` lists each Dockerfile source (instruction, line,
    pattern) with the sent files and bytes it reads.
    """
    sources = list(ctx.analysis.sources) if ctx.analysis is not None else []
    readers = [Selection([s.pattern], ctx.root) for s in sources]
    builder = _TreeBuilder(readers)
    rep = explainer.size(ctx, top=top, progress=progress, compare_full=ctx.selection is not None, on_entry=builder)
    builder.rule_index.update({r.rule: i for i, r in enumerate(rep.rules)})
    _sum(builder.root)
    budget = max(1, budget)
    kept = [f for f in (findings or []) if _about_size(f)]
    comp = _Compactor(max(1, rep.bytes // budget), max(1, rep.excluded_bytes // budget), builder,
                      {f["path"] for f in kept if f.get("path")})
    tree = comp.node(os.path.basename(ctx.root) or ctx.root, "", builder.root, root=True)
    reads = [
        {"instruction": s.instruction, "line": s.line, "pattern": s.pattern, "stage": s.stage,
         "files": builder.read_totals[i][0], "bytes": builder.read_totals[i][1]}
        for i, s in enumerate(sources)
    ]
    whole = list(ctx.analysis.reasons) if ctx.analysis is not None and ctx.analysis.whole_context else []
    return ReportModel(rep, tree, reads, whole, kept, budget, comp.count, findings is not None)


def size_findings(
    root: str | os.PathLike[str],
    *,
    dockerfile: str | None = None,
    dialect: str = "buildkit",
    ignore_file: str | None = None,
    stdin_dockerfile: bytes | None = None,
) -> list[dict[str, Any]]:
    """``ctxpack lint``'s findings about sizes and secrets, as JSON dicts.

    Secret findings name the path and the kind of secret, never the content
    (lint reads the file only to recognise it).
    """
    report = lint(root, dockerfile=dockerfile, dialect=dialect, ignore_file=ignore_file, stdin_dockerfile=stdin_dockerfile)
    return [d for d in (f.to_json() for f in report.findings) if _about_size(d)]


def _about_size(finding: dict[str, Any]) -> bool:
    # lint merges the findings about one path: a secret may ride in ``also``
    kinds = {finding.get("kind"), *(finding.get("also") or [])}
    return not kinds.isdisjoint(SIZE_FINDING_KINDS)
