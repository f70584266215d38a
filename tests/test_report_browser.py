"""The HTML report in a real browser: headless Chromium over the DevTools pipe.

Each test writes a report for a known tree, loads it from a file:// URL (the
page must need nothing else), and checks what a person would: the treemap
drew rectangles with the expected labels, nothing went to the console as an
error, hovering tells path/size/share/files, clicking a directory zooms in,
the breadcrumb zooms out, the views and colour modes switch.  Screenshots go
to ``$CTXPACK_TEST_ARTIFACTS`` (default ``test-output/`` at the repository
root) as ``report-*.png``.

Chromium comes from Debian's package (tests/chromium.py installs it when
missing and root); without it these tests skip with the reason, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import time

import pytest

import ctxpack
from ctxpack.audit import format_size
from ctxpack.report import build_model, render_html

from chromium import Browser, find_chromium
from test_report import make_tree

ARTIFACTS = os.environ.get("CTXPACK_TEST_ARTIFACTS") or os.path.join(os.path.dirname(os.path.dirname(__file__)), "test-output")


@pytest.fixture(scope="module")
def browser():
    exe, why = find_chromium(install=True)
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"chromium required on CI: {why}", pytrace=False)
        pytest.skip(why or "no chromium")
    with Browser(exe, width=1280, height=820) as b:
        yield b


def open_report(browser: Browser, path: str, root: str, findings: list | None = None, **ctx_options) -> dict:
    model = build_model(ctxpack.open_context(root, **ctx_options), findings=findings)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(model))
    browser.events.clear()
    browser.navigate("file://" + path)
    assert browser.evaluate("document.documentElement.dataset.ready") == "1"
    return model.to_json()


def shot(browser: Browser, name: str, full_page: bool = False) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    out = os.path.join(ARTIFACTS, f"report-{name}.png")
    browser.screenshot(out, full_page=full_page)
    return out


CELLS = "[...document.querySelectorAll('#map .cell')].map(e => [e.dataset.path, e.className, (e.querySelector('.name') || {}).textContent || ''])"


def cell_box(browser: Browser, path: str) -> dict:
    box = browser.evaluate(
        f"(() => {{ const e = document.querySelector('#map .cell[data-path=' + JSON.stringify({path!r}) + ']');"
        " if (!e) return null; const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })()"
    )
    assert box, f"no rectangle for {path!r}"
    return box


def tip_text(browser: Browser, x: float, y: float) -> str:
    browser.hover(x, y)
    return browser.evaluate("document.getElementById('tip').style.display === 'block' ? document.getElementById('tip').innerText : ''")


@pytest.fixture
def tree(tmp_path):
    return make_tree(str(tmp_path / "ctx"))


def test_treemap_draws_the_known_tree(browser, tree, tmp_path):
    from ctxpack.report import size_findings

    data = open_report(browser, str(tmp_path / "r.html"), tree, findings=size_findings(tree))
    cells = {p: (cls, label) for p, cls, label in browser.evaluate(CELLS)}
    assert cells["app"][0].split()[:2] == ["cell", "dir"]
    assert browser.evaluate("document.querySelector('#map .cell[data-path=\"app\"] .head .name').textContent") == "app/"
    assert cells["assets/big.bin"][1] == "big.bin"
    assert cells["app/main.py"][1] == "main.py"
    assert cells["app/static"][0].startswith("cell dir")
    assert "node_modules" not in cells  # excluded: not in the "sent" view
    # the numbers shown are the measured ones (size --json's)
    stats = browser.evaluate("document.getElementById('stats').innerText")
    assert format_size(data["size"]["bytes"]) in stats
    assert f"{data['size']['files']} files" in stats
    # the lint secret (too small for a rectangle of its own at this zoom) is
    # flagged on the directory that holds it, as an error
    assert "flagged" in cells["deploy"][0] and "deploy/id_rsa" not in cells
    assert browser.evaluate("document.querySelector('#map .cell[data-path=deploy] .badge').className") == "badge error"
    assert browser.errors() == []
    shot(browser, "known-tree")


def test_hover_tells_path_size_share_and_files(browser, tree, tmp_path):
    open_report(browser, str(tmp_path / "r.html"), tree)
    b = cell_box(browser, "app/main.py")
    text = tip_text(browser, b["x"] + b["w"] / 2, b["y"] + b["h"] / 2)
    assert "app/main.py" in text and "300.0 kB" in text and "1 file" in text
    assert "of the total" in text and "of app/" in text
    b = cell_box(browser, "app")
    text = tip_text(browser, b["x"] + 20, b["y"] + 8)
    assert "710.0 kB" in text and "4 files" in text and "click to zoom in" in text
    assert browser.errors() == []


def test_click_zooms_and_breadcrumb_zooms_out(browser, tree, tmp_path):
    open_report(browser, str(tmp_path / "r.html"), tree)
    b = cell_box(browser, "app")
    browser.click(b["x"] + 20, b["y"] + 8)  # the directory's header strip
    assert browser.evaluate("ctxpackReport.current()") == "app"
    assert browser.evaluate("location.hash") == "#app"
    assert browser.evaluate("document.getElementById('crumbs').innerText").split()[:3] == ["ctx/", "\u203a", "app/"]
    paths = [p for p, _, _ in browser.evaluate(CELLS)]
    assert paths and all(p.startswith("app/") for p in paths)
    assert "app/static/logo.png" in paths
    # zoomed in, the files get room for their labels
    cells = {p: label for p, _, label in browser.evaluate(CELLS)}
    assert cells["app/static/style.css"] == "style.css"
    shot(browser, "zoomed")
    # a file's click zooms to its directory, one more level
    b = cell_box(browser, "app/static/logo.png")
    browser.click(b["x"] + b["w"] / 2, b["y"] + b["h"] / 2)
    assert browser.evaluate("ctxpackReport.current()") == "app/static"
    # the breadcrumb's first link goes back to the top
    x, y = browser.evaluate("(() => { const r = document.querySelector('#crumbs a').getBoundingClientRect(); return [r.x + 5, r.y + r.height / 2]; })()")
    browser.click(x, y)
    time.sleep(0.1)  # hashchange is asynchronous
    assert browser.evaluate("ctxpackReport.current()") == ""
    assert "assets/big.bin" in [p for p, _, _ in browser.evaluate(CELLS)]
    assert browser.errors() == []


def test_kept_out_view_shows_rules(browser, tree, tmp_path):
    open_report(browser, str(tmp_path / "r.html"), tree)
    x, y = browser.evaluate("(() => { const r = document.querySelector('[data-view=out]').getBoundingClientRect(); return [r.x + 5, r.y + 5]; })()")
    browser.click(x, y)
    cells = {p: cls for p, cls, _ in browser.evaluate(CELLS)}
    assert set(cells) == {"node_modules", "debug.log"}
    assert all("ghost" in c for c in cells.values())
    b = cell_box(browser, "node_modules")
    text = tip_text(browser, b["x"] + b["w"] / 2, b["y"] + b["h"] / 2)
    assert "kept out: 800.0 kB, 2 files" in text and ".dockerignore:1:**/node_modules" in text
    rules = browser.evaluate("document.getElementById('rules').innerText")
    assert ".dockerignore:1:**/node_modules" in rules and "800.0 kB" in rules and ".dockerignore:2:*.log" in rules
    shot(browser, "kept-out")
    # "both": sent rectangles and ghosted kept-out ones together
    browser.evaluate("ctxpackReport.view('all')")
    cells = {p: cls for p, cls, _ in browser.evaluate(CELLS)}
    assert "ghost" in cells["node_modules"] and "ghost" not in cells["assets/big.bin"]
    assert browser.errors() == []


def test_colour_toggle_changes_the_legend(browser, tree, tmp_path):
    open_report(browser, str(tmp_path / "r.html"), tree)
    legend = browser.evaluate("document.getElementById('legend').innerText")
    assert ".py" in legend and ".bin" in legend
    x, y = browser.evaluate("(() => { const r = document.querySelector('[data-colour=top]').getBoundingClientRect(); return [r.x + 5, r.y + 5]; })()")
    browser.click(x, y)
    legend = browser.evaluate("document.getElementById('legend').innerText")
    assert "app/" in legend and "assets/" in legend and ".py" not in legend
    assert browser.errors() == []


def test_finding_links_reveal_their_path(browser, tree, tmp_path):
    from ctxpack.report import size_findings

    open_report(browser, str(tmp_path / "r.html"), tree, findings=size_findings(tree))
    text = browser.evaluate("document.getElementById('findings').innerText")
    assert "deploy/id_rsa" in text and "values not shown" in text
    browser.evaluate("document.querySelector('#findings a.path').scrollIntoView()")
    x, y = browser.evaluate("(() => { const q = document.querySelector('#findings a.path').getClientRects()[0]; return [q.x + 3, q.y + q.height / 2]; })()")
    browser.click(x, y)
    assert browser.evaluate("ctxpackReport.current()") == "deploy"
    assert "flash" in browser.evaluate("document.querySelector('#map .cell[data-path=\"deploy/id_rsa\"]').className")
    assert browser.errors() == []


def test_minimal_report_lists_instructions(browser, tree, tmp_path):
    open_report(browser, str(tmp_path / "r.html"), tree, minimal=True)
    text = browser.evaluate("document.getElementById('reads').innerText")
    assert "COPY\t2\tapp" in text and "assets/big.bin" in text and "710.0 kB" in text
    # hovering a row highlights what that instruction reads
    browser.evaluate("document.querySelector('#reads tr:nth-child(2)').dispatchEvent(new MouseEvent('mouseenter'))")
    cells = {p: cls for p, cls, _ in browser.evaluate(CELLS)}
    assert "dim" not in cells["app/main.py"] and "dim" in cells["assets/big.bin"]
    assert "saved by --minimal" in browser.evaluate("document.getElementById('stats').innerText")
    assert browser.errors() == []
    shot(browser, "minimal", full_page=True)


def test_many_files_stay_small_and_fast(browser, tmp_path):
    root = tmp_path / "many"
    for d in range(100):
        sub = root / f"pkg{d:03d}" / "src"
        sub.mkdir(parents=True)
        for i in range(100):
            (sub / f"mod{i:03d}.js").write_bytes(b"a" * (200 + 37 * ((d * 100 + i) % 97)))
    (root / "blob.bin").write_bytes(b"b" * 3_000_000)
    path = str(tmp_path / "many.html")
    data = open_report(browser, path, str(root))
    assert data["size"]["files"] == 10_001
    assert os.path.getsize(path) < 600_000
    ms = browser.evaluate("ctxpackReport.renderMs")
    cells = browser.evaluate("ctxpackReport.cells")
    assert 50 < cells <= 6000
    assert ms < 5000, f"first render took {ms:.0f} ms"
    labels = [label for _, cls, label in browser.evaluate(CELLS) if "agg" in cls]
    assert any(label.endswith("small files") for label in labels)
    assert browser.errors() == []
    shot(browser, "many-files")
