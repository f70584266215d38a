"""From a context to the report file: measure, lint, render, write.

The one entry point the CLI needs (``ctxpack size --html FILE|-``).  A file
is written all or nothing (:func:`ctxpack.fs.atomic_output`); ``-`` writes
to standard output.
"""

from __future__ import annotations

import os
import sys

from ctxpack.walker import Progress
from ctxpack.context import BuildContext
from ctxpack.fs import atomic_output, output_error
from ctxpack.report.model import DEFAULT_BUDGET, ReportModel, build_model, size_findings
from ctxpack.report.page import render_html

__all__ = ["html_report", "write_html"]


def html_report(
    ctx: BuildContext,
    *,
    dockerfile: str | None = None,
    ignore_file: str | None = None,
    top: int = 10,
    budget: int = DEFAULT_BUDGET,
    with_lint: bool = True,
    progress: Progress | None = None,
) -> tuple[ReportModel, bytes]:
    """Measure ``ctx`` once, add lint's size and secret findings, render the page.

    ``dockerfile`` and ``ignore_file`` are the ``-f`` and ``--ignore-file``
    values ``ctx`` was opened with: lint opens the context again with them
    (a Dockerfile read from stdin is handed over from ``ctx``).
    """
    findings = None
    if with_lint:
        findings = size_findings(ctx.root, dockerfile=dockerfile, dialect=ctx.dialect.value, ignore_file=ignore_file,
                                 stdin_dockerfile=ctx.dockerfile_data if dockerfile == "-" else None)
    model = build_model(ctx, top=top, budget=budget, findings=findings, progress=progress)
    return model, render_html(model).encode("utf-8")


def _write_all(fd: int, data: bytes, what: str) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise output_error(e, what) from None


def write_html(page: bytes, out: str) -> None:
    """Write the page to the file ``out`` (all or nothing), or to stdout for ``-``."""
    if out == "-":
        sys.stdout.flush()
        _write_all(sys.stdout.fileno(), page, "the report")
        return
    with atomic_output(out) as fd:
        _write_all(fd, page, out)
