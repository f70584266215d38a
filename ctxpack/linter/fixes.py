"""``lint --fix``: edits to the ignore file, each applied only when it
provably leaves what the build reads unchanged.

Every proposed edit is tried on the file as fixed so far: the context is
walked again with the edited rules and compared with the original walk.
An edit is refused, with the reason, when it would

* exclude a path that a ``!`` rule of the user re-includes;
* change anything sent while the Dockerfile analysis cannot say what the
  build reads (no Dockerfile, or a fallback to the whole context, such as
  ``COPY . .``): there only syntactic edits are made (a line docker
  refuses, an exact duplicate);
* exclude a path a COPY/ADD source or a bind mount of the stages that run
  reads (or that the classic builder always reads: Dockerfile, .dockerignore);
* send a path that no build stage reads.

Comments, order and line endings are kept: lines are replaced or
commented out in place, new lines appended at the end under one comment.
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxpack.errors import CtxpackError
from ctxpack.ignore.reader import parse_ignore
from ctxpack.linter.findings import Edit, Finding, LintReport
from ctxpack.linter.view import ContextView, dockerfile_name, split_rules, walk_entries

__all__ = ["APPENDED_HEADER", "FixOutcome", "FixPlan", "apply_edit", "describe_edit", "plan_fixes"]

APPENDED_HEADER = "# added by ctxpack lint --fix"
# The verdict on an added rule that changes nothing any more.
NOTHING_LEFT = "nothing left to change: the edits above already do it"


@dataclass(frozen=True)
class FixOutcome:
    """What became of one finding's edit: applied, or refused and why."""

    finding: Finding
    edit: Edit
    applied: bool
    reason: str = ""


@dataclass
class FixPlan:
    """The ignore file before (``old``) and after (``new``) the applied edits."""

    path: str
    old: str
    new: str
    outcomes: list[FixOutcome]

    @property
    def changed(self) -> bool:
        return self.new != self.old

    @property
    def refused(self) -> list[FixOutcome]:
        return [o for o in self.outcomes if not o.applied]


def apply_edit(text: str, edit: Edit) -> str:
    """``text`` with ``edit`` made (unchanged when it does not apply)."""
    if edit.op == "append":
        lines = [line.strip() for line in text.splitlines()]
        if edit.text in lines:
            last = len(lines) - 1 - lines[::-1].index(edit.text)
            if not any(line.startswith("!") for line in lines[last + 1:]):
                return text  # the rule is there already, and nothing after it re-includes
        out = text if not text or text.endswith("\n") else text + "\n"
        if APPENDED_HEADER not in lines:
            out += APPENDED_HEADER + "\n"
        return out + edit.text + "\n"
    lines = text.splitlines(keepends=True)
    if edit.line is None or not 0 < edit.line <= len(lines):
        return text
    cur = lines[edit.line - 1]
    body = cur.rstrip("\r\n")
    end = cur[len(body):]
    if edit.op == "replace":
        lines[edit.line - 1] = edit.text + end
    elif edit.op == "comment" and not body.startswith("#"):
        lines[edit.line - 1] = f"# ctxpack: {edit.text}: {body}{end}"
    return "".join(lines)


def _reader(view: ContextView, path: str) -> str | None:
    """Who in the build reads ``path`` (``None``: nobody)."""
    assert view.reads is not None and view.analysis is not None
    if path in view.forced:
        return "the classic builder (it always reads it)"
    df = dockerfile_name(view.ctx)
    for src in view.analysis.sources:
        from ctxpack.dockerfile.analysis import Selection  # loaded by the view already (its analysis)

        if Selection([src.pattern]).wants(path):
            return f"{src.instruction} {src.pattern} ({df}:{src.line}, stage {src.stage})"
    return None


def _is_read(view: ContextView, path: str, is_dir: bool) -> bool:
    assert view.reads is not None
    if path in view.forced or view.reads.wants(path):
        return True
    return is_dir and view.reads.may_contain(path)


def _verdict(view: ContextView, text: str, edit: Edit, reincluded: dict[str, str],
             current: set[str]) -> tuple[str | None, set[str]]:
    """Why the ignore file ``text`` must not replace the original (``None``:
    it may), and what it sends.  ``current`` is what the file as fixed so
    far sends."""
    ctx = view.ctx
    good, _ = split_rules(parse_ignore(text.encode("utf-8", "surrogateescape"), ctx.ignore_source or ".dockerignore"))
    try:
        new_ctx = view.reopen(rules=good)
    except CtxpackError as e:
        return f"the edited file cannot be used: {e}", current
    entries, errors = walk_entries(new_ctx)
    if errors and not view.errors:
        return f"the builder would fail with the edited file: {errors[0]}", current
    sent = entries.sent()
    dirs = entries.dirs() | view.entries.dirs()
    if edit.op == "append" and not edit.syntactic and sent == current:
        return NOTHING_LEFT, sent  # an earlier edit already excluded it
    removed = sorted(view.sent - sent)
    added = sorted(sent - view.sent)
    if not removed and not added:
        if edit.syntactic or view.reads is not None:
            return None, sent
    elif edit.syntactic:
        return f"it would change what is sent ({(removed or added)[0]})", sent
    for p in removed:
        if p in reincluded:
            return f"it would exclude {p}, which {reincluded[p]} re-includes on purpose", sent
    if view.reads is None:
        why = view.analysis_error or "; ".join(view.analysis.reasons if view.analysis else [])
        return f"the analysis cannot tell what the build reads ({why}): only syntactic fixes are applied", sent
    for p in removed:
        if _is_read(view, p, p in dirs):
            reader = _reader(view, p) or "the build"
            return f"it would exclude {p}, which {reader} reads", sent
    for p in added:
        if not _is_read(view, p, p in dirs):
            return f"it would also send {p}, which no build stage reads", sent
    return None, sent


def _order(f: Finding) -> tuple[bool, bool, int]:
    assert f.edit is not None
    append = f.edit.op == "append"
    return (not f.edit.syntactic, append, len(f.edit.text) if append else 0)


def plan_fixes(report: LintReport) -> FixPlan:
    """The ignore file with every edit of ``report`` that provably changes
    nothing the build reads, and the reasons for the others."""
    view = report.view
    if view is None or report.ignore_path is None:
        raise ValueError("plan_fixes needs a report made by lint()")
    old = view.ignore_text or ""
    reincluded = {e.path: str(e.rule) for e in view.entries if e.included and view.user_exception(e.rule)}
    pending = [f for f in report.findings if f.edit is not None]
    # Syntactic edits first, then in-place edits, then added rules, wider
    # (shorter) ones first so that a narrower one left with nothing to do is dropped.
    pending.sort(key=_order)
    outcomes: list[FixOutcome] = []
    current = old
    current_sent = view.sent
    for f in pending:
        edit = f.edit
        assert edit is not None
        candidate = apply_edit(current, edit)
        if candidate == current:
            continue  # another finding's edit already did it
        reason, sent = _verdict(view, candidate, edit, reincluded, current_sent)
        if reason == NOTHING_LEFT:
            continue
        if reason is None:
            current, current_sent = candidate, sent
            outcomes.append(FixOutcome(f, edit, True))
        else:
            outcomes.append(FixOutcome(f, edit, False, reason))
    return FixPlan(report.ignore_path, old, current, outcomes)


def describe_edit(edit: Edit) -> str:
    """A short human description of ``edit``."""
    if edit.op == "append":
        return f"append {edit.text!r}"
    if edit.op == "replace":
        return f"line {edit.line}: replace with {edit.text!r}"
    return f"line {edit.line}: comment out ({edit.text})"

