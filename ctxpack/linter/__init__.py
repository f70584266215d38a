"""Lint findings about a ``.dockerignore`` and the context it shapes, and
the ``--fix`` edits that provably leave what the build reads unchanged."""

from ctxpack.linter.checks import CHECKS, lint
from ctxpack.linter.findings import Edit, Finding, LintReport
from ctxpack.linter.fixes import FixOutcome, FixPlan, plan_fixes

__all__ = ["CHECKS", "Edit", "Finding", "FixOutcome", "FixPlan", "LintReport", "lint", "plan_fixes"]
