"""Lint findings about a ``.dockerignore`` and the context it shapes."""

from ctxpack.linter.checks import Finding, LintReport, apply_fixes, lint

__all__ = ["Finding", "LintReport", "apply_fixes", "lint"]
