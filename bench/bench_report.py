#!/usr/bin/env python3
"""`ctxpack size --html` on the 100k-file tree: time, page size, render time.

    python bench/bench_report.py [--tree DIR] [--runs 3] [--out bench/results/report.md]

For the full context (no ignore file) and the typical ``.dockerignore``
(``DIR/.dockerignore.typical``), medians of ``--runs`` runs (subprocesses,
warm page cache) of:

* ``ctxpack size DIR --json`` (the plain audit: the reference the report is
  compared with; both variants pass ``--ignore-file``, an empty one for the
  full context, so the tree's own ``.dockerignore`` does not matter) and ``ctxpack size DIR --html FILE`` (measure + lint +
  page), and the report without lint (``html_report(with_lint=False)``) to
  show what lint costs;
* the page: bytes, rectangles kept (the node budget), and in headless
  Chromium (tests/chromium.py, Debian's package) the first render (script
  start to treemap drawn, ``ctxpackReport.renderMs``), the load event, the
  cells drawn, and a zoom's redraw into the top-level directory with the
  most files.

The tree comes from ``bench/gen_tree.py`` (made when missing: ~35 s, 1.4 GB).
Writes the table to ``--out`` and the raw numbers next to it as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from benchutil import compile_ctxpack, cpu_model, loadavg, log, summary  # noqa: E402
from chromium import Browser, find_chromium  # noqa: E402

NO_LINT = (
    "import sys, ctxpack; from ctxpack.report import html_report, write_html;"
    "ign = sys.argv[2];"
    "ctx = ctxpack.open_context(sys.argv[1], ignore_file=ign);"
    "m, page = html_report(ctx, ignore_file=ign, with_lint=False); write_html(page, sys.argv[3])"
)


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process.

    The CPU time is what to compare on a shared machine: the wall time also
    counts the time other people's processes held the two cores.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_variant(tree: str, ignore: str, runs: int, browser: Browser | None, work: str) -> dict:
    base = [sys.executable, "-m", "ctxpack.cli", "size", tree, "--ignore-file", ignore]
    page = os.path.join(work, "report.html")
    t: dict[str, list[tuple[float, float]]] = {"json": [], "html": [], "nolint": []}
    for _ in range(runs):
        t["json"].append(timed(base + ["--json"]))
        t["html"].append(timed(base + ["--html", page]))
        t["nolint"].append(timed([sys.executable, "-c", NO_LINT, tree, ignore, page + ".nolint.html"]))
    with open(page, encoding="utf-8") as f:
        text = f.read()
    start = text.index('<script type="application/json" id="ctxpack-data">')
    data = json.loads(text[start:].split(">", 1)[1].split("</script>", 1)[0])
    out: dict = {
        "ignore": os.path.basename(ignore),
        "files": data["size"]["files"], "bytes": data["size"]["bytes"],
        "excluded_files": data["size"]["excluded"]["files"],
        **{f"{k}_wall_s": summary([w for w, _ in v]) for k, v in t.items()},
        **{f"{k}_cpu_s": summary([c for _, c in v]) for k, v in t.items()},
        "page_bytes": len(text.encode("utf-8")), "rectangles": data["nodes"],
    }
    if browser is not None:
        first, load, zoom = [], [], []
        cells = 0
        for _ in range(runs):
            browser.events.clear()
            browser.navigate("file://" + page)
            first.append(browser.evaluate("ctxpackReport.renderMs"))
            load.append(browser.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            cells = browser.evaluate("ctxpackReport.cells")
            # the top-level directory with the most files (the most rectangles), zoomed into
            top = browser.evaluate(
                "ctxpackReport.data.tree.c.filter(c => c.k === 'd' && c.c).sort((a, b) => b.f - a.f)[0].n")
            browser.evaluate(f"ctxpackReport.zoom({json.dumps(top)})")
            zoom.append(browser.evaluate("ctxpackReport.lastRenderMs"))
        errors = browser.errors()
        out.update(first_render_ms=summary(first), load_event_ms=summary(load), zoom_redraw_ms=summary(zoom),
                   cells_drawn=cells, zoomed_into=top, console_errors=errors)
    return out


def ratio(r: dict, key: str) -> str:
    return f"{r[key + '_cpu_s']['median'] / r['json_cpu_s']['median']:.1f}"


def fmt_s(s: dict) -> str:
    return f"{s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f})"


def fmt_ms(s: dict) -> str:
    return f"{s['median']:.0f} ms ({s['min']:.0f}–{s['max']:.0f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tree", default=os.path.join(os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench"), "tree-full"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "report.md"))
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.tree, ".bench-tree.json")):
        log(f"generating {a.tree} ...")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_tree.py"), a.tree], check=True)
    compile_ctxpack()
    exe, why = find_chromium(install=False)
    if exe is None:
        log(f"no browser timings: {why}")
    results = []
    with tempfile.TemporaryDirectory(prefix="ctxpack-bench-report-") as work:
        browser = Browser(exe, width=1400, height=900) if exe else None
        try:
            # Both variants name their ignore file: the tree's own .dockerignore may
            # have been switched by another script (bench/set_ignore.py).
            empty = os.path.join(work, "no-rules.dockerignore")
            open(empty, "w").close()
            for ignore in (empty, os.path.join(a.tree, ".dockerignore.typical")):
                log(f"variant: {ignore}")
                results.append(run_variant(a.tree, ignore, a.runs, browser, work))
        finally:
            if browser is not None:
                browser.close()
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# `ctxpack size --html` on the 100k-file tree ({now})",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}; load {tuple(loadavg())}",
        f"- tree: `{a.tree}` (bench/gen_tree.py); {a.runs} runs, medians (min–max), subprocesses, warm page cache",
        "- browser: headless Chromium (Debian), 1400×900, file:// URL; first render = script start to treemap drawn",
        "",
        "| | full context | typical .dockerignore |",
        "|---|---:|---:|",
    ]
    rows = [
        ("files sent", lambda r: f"{r['files']:,} ({r['bytes'] / 1e9:.2f} GB)"),
        ("files kept out", lambda r: f"{r['excluded_files']:,}"),
        ("`size --json` CPU", lambda r: fmt_s(r["json_cpu_s"])),
        ("`size --html FILE` CPU", lambda r: fmt_s(r["html_cpu_s"]) + f", {ratio(r, 'html')}× `--json`"),
        ("report without lint CPU", lambda r: fmt_s(r["nolint_cpu_s"]) + f", {ratio(r, 'nolint')}× `--json`"),
        ("`size --json` wall", lambda r: fmt_s(r["json_wall_s"])),
        ("`size --html FILE` wall", lambda r: fmt_s(r["html_wall_s"])),
        ("report without lint wall", lambda r: fmt_s(r["nolint_wall_s"])),
        ("page size", lambda r: f"{r['page_bytes'] / 1e3:.0f} kB"),
        ("rectangles in the data", lambda r: f"{r['rectangles']:,}"),
    ]
    if results and "first_render_ms" in results[0]:
        rows += [
            ("first render", lambda r: fmt_ms(r["first_render_ms"])),
            ("load event", lambda r: fmt_ms(r["load_event_ms"])),
            ("cells drawn", lambda r: f"{r['cells_drawn']:,}"),
            ("zoom redraw", lambda r: fmt_ms(r["zoom_redraw_ms"]) + f" (into `{r['zoomed_into']}/`)"),
            ("console errors", lambda r: str(len(r["console_errors"]))),
        ]
    for name, f in rows:
        lines.append(f"| {name} | " + " | ".join(f(r) for r in results) + " |")
    lines += [
        "",
        "`size --html` runs `ctxpack lint` for the size and secret findings; the row without lint",
        "shows what the measurement, the tree and the page cost on their own. CPU seconds (user +",
        "system of the child) are the numbers to compare on a shared machine; wall seconds also",
        "count the time other processes held the cores (see the load above).",
        "",
    ]
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=2)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
