"""The HTML report of ``ctxpack size --html``: a zoomable treemap of the context.

``html_report`` does it all for the CLI; ``build_model`` measures a context once (the numbers of ``size --json``) and
shapes a small tree for drawing; ``render_html`` turns that into one
self-contained page (style, script and data inline; nothing fetched).
"""

from .model import DEFAULT_BUDGET, SIZE_FINDING_KINDS, ReportModel, build_model, size_findings
from .output import html_report, write_html
from .page import embedded_data, render_html

__all__ = ["html_report", "write_html", "ReportModel", "build_model", "size_findings", "render_html", "embedded_data", "SIZE_FINDING_KINDS", "DEFAULT_BUDGET"]
