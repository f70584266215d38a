"""Assembling the self-contained HTML page for ``ctxpack size --html``.

One file, nothing fetched: the style (``page.css``) and the script
(``treemap.js``) are inlined from this package, the fonts are the system's,
and the data is one JSON document in a ``<script type="application/json">``
element, the same document :meth:`ReportModel.to_json` returns (so a test
can read it back and compare it with ``size --json``).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any

from ctxpack.report.model import ReportModel

__all__ = ["render_html", "embedded_data"]

_DATA_ID = "ctxpack-data"


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_json(doc: dict[str, Any]) -> str:
    """JSON that is safe inside a <script> element and valid UTF-8."""
    try:
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Undecodable file names (surrogate escapes): \udcXX escapes instead.
        text = json.dumps(doc, separators=(",", ":"))
    # "</script>" or "<!--" in a file name must not end the element early.
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(model: ReportModel) -> str:
    """The whole page as one string."""
    doc = model.to_json()
    title = f"ctxpack · {model.size.context}"
    return _TEMPLATE.format(
        title=html.escape(title.encode("utf-8", "replace").decode("utf-8")),
        css=_asset("page.css"),
        js=_asset("treemap.js").replace("</script", "<\\/script"),
        data_id=_DATA_ID,
        data=_script_json(doc),
    )


def embedded_data(page: str) -> dict[str, Any]:
    """Read the data document back out of a page :func:`render_html` made."""
    start_tag = f'<script type="application/json" id="{_DATA_ID}">'
    i = page.index(start_tag) + len(start_tag)
    j = page.index("</script>", i)
    data: dict[str, Any] = json.loads(page[i:j])
    return data


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<meta name="generator" content="ctxpack size --html">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<header>
  <div>
    <div class="brand">ctxpack &middot; build context</div>
    <h1 id="ctx"></h1>
    <div id="ctx-meta"></div>
  </div>
  <div id="stats"></div>
</header>
<div class="toolbar">
  <span class="seg-label">view</span>
  <span class="seg" role="group" aria-label="view">
    <button type="button" data-view="sent" class="on">Sent</button>
    <button type="button" data-view="out">Kept out</button>
    <button type="button" data-view="all">Both</button>
  </span>
  <span class="seg-label">colour</span>
  <span class="seg" role="group" aria-label="colour">
    <button type="button" data-colour="ext" class="on">Extension</button>
    <button type="button" data-colour="top">Top-level directory</button>
  </span>
</div>
<nav id="crumbs" aria-label="zoom"></nav>
<div id="map" role="img" aria-label="treemap of the build context"></div>
<div id="legend"></div>
<main>
  <section id="rules"></section>
  <section id="reads"></section>
  <section id="findings"></section>
  <section id="largest"></section>
  <section id="exts"></section>
</main>
<footer>Made by <code>ctxpack size --html</code>. Sizes are the bytes the upload carries (regular files); click a directory to zoom in, the path above or Esc to zoom out.</footer>
<div id="tip" role="tooltip"></div>
<script type="application/json" id="{data_id}">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""
