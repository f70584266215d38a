"""What lint reports: findings (where, how bad, what, how to fix), the edits
``--fix`` may make for them, and the report that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the view is only needed by --fix planning
    from ctxpack.linter.view import ContextView

__all__ = ["ERROR", "WARNING", "INFO", "Edit", "Finding", "LintReport", "merge_by_path"]

ERROR, WARNING, INFO = "error", "warning", "info"
_RANK = {ERROR: 0, WARNING: 1, INFO: 2}


@dataclass(frozen=True)
class Edit:
    """One change to the ignore file that would resolve a finding.

    ``op`` is ``"replace"`` (line ``line`` becomes ``text``), ``"comment"``
    (line ``line`` is commented out, ``text`` says why) or ``"append"``
    (``text`` is added as a new last line).  ``syntactic`` edits cannot
    change what any builder sends (a line docker refuses, an exact
    duplicate); every other edit is applied only when re-running the
    analysis proves the build reads the same files (:mod:`ctxpack.linter.fixes`).
    """

    op: str
    text: str
    line: int | None = None
    syntactic: bool = False


@dataclass
class Finding:
    """One finding: where, how bad, what is wrong, and how to fix it.

    ``file``/``line``/``rule`` name an ignore-file line (or a Dockerfile
    line for COPY findings); ``path`` a context path.  ``also`` lists the
    kinds of other findings about the same path that were merged into this
    one.  ``edit`` is what ``--fix`` would do (never serialised).
    """

    kind: str
    severity: str
    message: str
    fix: str
    file: str | None = None
    line: int | None = None
    rule: str | None = None
    path: str | None = None
    also: list[str] = field(default_factory=list)
    edit: Edit | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind, "severity": self.severity, "message": self.message, "fix": self.fix,
            "file": self.file, "line": self.line, "rule": self.rule, "path": self.path, "also": list(self.also),
        }

    @property
    def where(self) -> str:
        """``file:line:rule`` for a rule (as ``explain`` names rules), else the path."""
        if self.line is not None and self.file is not None:
            head = f"{self.file}:{self.line}:{self.rule}" if self.rule is not None else f"{self.file}:{self.line}"
            return f"{self.path} ({head})" if self.path else head
        return self.path or self.file or ""


@dataclass
class LintReport:
    """The findings for one context, most severe first.

    ``ignore_file`` names the ignore file in use (``None`` when there is
    none); ``ignore_path`` is the file ``--fix`` writes (it may not exist
    yet).  ``view`` is the context as lint saw it, for fix planning.
    """

    ignore_file: str | None
    ignore_path: str | None
    findings: list[Finding]
    view: ContextView | None = field(default=None, repr=False)

    @property
    def errors(self) -> int:
        return sum(f.severity == ERROR for f in self.findings)


def sort_key(f: Finding) -> tuple[int, int, bool, str, str]:
    # A finding about no path and no line ("9 more paths ...") sums up those
    # listed before it, so it comes after them (trial finding S23: it led).
    return (_RANK[f.severity], f.line if f.line is not None else 10**9, f.path is None and f.line is None,
            f.path or "", f.kind)


def merge_by_path(findings: list[Finding]) -> list[Finding]:
    """One finding per context path (and per rule line): the most severe
    leads, the others' kinds go to ``also`` and their messages are appended
    (a secret that is also heavy and unused is one finding, not three)."""
    out: list[Finding] = []
    groups: dict[object, list[Finding]] = {}
    for f in findings:
        if f.path is not None:
            groups.setdefault(("path", f.path), []).append(f)
        elif f.line is not None:
            groups.setdefault(("line", f.file, f.line), []).append(f)
        else:
            out.append(f)
    for group in groups.values():
        group.sort(key=sort_key)
        lead = group[0]
        for other in group[1:]:
            if other.kind not in lead.also and other.kind != lead.kind:
                lead.also.append(other.kind)
            if other.message not in lead.message:
                lead.message += f"; also: {other.message}"
            if lead.edit is None and other.edit is not None:
                lead.edit, lead.fix = other.edit, other.fix
            if lead.line is None and other.line is not None:
                lead.file, lead.line, lead.rule = other.file, other.line, other.rule
        out.append(lead)
    out.sort(key=sort_key)
    return out
