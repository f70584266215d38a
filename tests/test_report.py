"""``ctxpack size --html``: the page's data, its numbers, and the CLI option.

The browser side (does the treemap draw, zoom, show no errors) is in
test_report_browser.py; here the page is read as text and its embedded
JSON document checked against ``size --json``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

import ctxpack
from ctxpack.report import build_model, embedded_data, render_html, size_findings
from trees import make_chain, remove_chain

SECRET_MARKER = "hunter2-do-not-leak-7f3a"


def make_tree(root: str) -> str:
    """A small known context: sources, a big binary, excluded node_modules
    and logs, and a private key that is sent (a lint secret)."""

    def write(rel: str, size: int | None = None, text: str | None = None) -> None:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w" if text is not None else "wb") as f:
            f.write(text if text is not None else b"x" * (size or 0))

    write("Dockerfile", text="FROM scratch\nCOPY app/ /app\nCOPY assets/big.bin /data/\nCOPY deploy /deploy\n")
    write(".dockerignore", text="**/node_modules\n*.log\n")
    write("app/main.py", 300_000)
    write("app/util.py", 200_000)
    write("app/static/logo.png", 150_000)
    write("app/static/style.css", 60_000)
    write("assets/big.bin", 900_000)
    write("docs/readme.md", 40_000)
    write("node_modules/pkg/index.js", 700_000)
    write("node_modules/pkg/lib/a.js", 100_000)
    write("debug.log", 50_000)
    write("deploy/id_rsa", text=f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET_MARKER}\n-----END OPENSSH PRIVATE KEY-----\n")
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(str(tmp_path / "ctx"))


def run_cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", *args], capture_output=True, cwd=cwd, timeout=120)


def leaves(node: dict):
    kids = node.get("c")
    if not kids:
        yield node
        return
    for c in kids:
        yield from leaves(c)


@pytest.mark.parametrize("extra", [[], ["--dialect", "classic"], ["--minimal"], ["--top", "3"]])
def test_embedded_numbers_are_size_json(tree, tmp_path, extra):
    """One source of truth: the page embeds exactly what `size --json` prints."""
    out = str(tmp_path / "report.html")
    j = run_cli("size", tree, "--json", *extra)
    h = run_cli("size", tree, "--html", out, *extra)
    assert j.returncode == 0, j.stderr
    assert h.returncode == 0, h.stderr
    with open(out, encoding="utf-8") as f:
        data = embedded_data(f.read())
    assert data["size"] == json.loads(j.stdout)
    assert b"wrote " + out.encode() in h.stderr
    # ... and the text report still goes to stdout
    assert h.stdout.startswith(b"Context ")


def test_html_with_json_prints_the_same_document(tree, tmp_path):
    out = str(tmp_path / "r.html")
    r = run_cli("size", tree, "--json", "--html", out)
    assert r.returncode == 0, r.stderr
    with open(out, encoding="utf-8") as f:
        assert embedded_data(f.read())["size"] == json.loads(r.stdout)


def test_tree_totals_are_the_measured_totals(tree):
    m = build_model(ctxpack.open_context(tree))
    t, s = m.tree, m.size
    assert (t["s"], t["f"], t["xs"], t["xf"]) == (s.bytes, s.files, s.excluded_bytes, s.excluded_files)
    ls = list(leaves(t))
    assert sum(n.get("s", 0) for n in ls) == s.bytes
    assert sum(n.get("f", 0) for n in ls) == s.files
    assert sum(n.get("xs", 0) for n in ls) == s.excluded_bytes
    assert sum(n.get("xf", 0) for n in ls) == s.excluded_files


def test_excluded_rectangles_name_their_rule_and_rule_savings_add_up(tree):
    m = build_model(ctxpack.open_context(tree))
    rules = [r.rule for r in m.size.rules]
    by_name = {n["n"]: n for n in m.tree["c"]}
    nm = by_name["node_modules"]
    assert nm["k"] == "c" and rules[nm["r"]] == ".dockerignore:1:**/node_modules"
    assert (nm["xs"], nm["xf"]) == (800_000, 2)
    log = by_name["debug.log"]
    assert rules[log["r"]] == ".dockerignore:2:*.log" and log["xs"] == 50_000
    # what each rule saved, from the rectangles, is what the rules table says
    saved: dict[int, int] = {}
    for n in leaves(m.tree):
        if n.get("xs"):
            saved[n["r"]] = saved.get(n["r"], 0) + n["xs"]
    assert {rules[i]: b for i, b in saved.items()} == {r.rule: r.bytes for r in m.size.rules}


def test_minimal_lists_what_each_instruction_reads(tree):
    m = build_model(ctxpack.open_context(tree, minimal=True))
    reads = {(r["instruction"], r["line"], r["pattern"]): (r["files"], r["bytes"]) for r in m.reads}
    assert reads == {
        ("COPY", 2, "app"): (4, 710_000),
        ("COPY", 3, "assets/big.bin"): (1, 900_000),
        ("COPY", 4, "deploy"): (1, os.path.getsize(os.path.join(tree, "deploy/id_rsa"))),
    }
    # docs/ is not read by any instruction: not sent with --minimal
    assert "docs" not in {n["n"] for n in m.tree["c"]}
    main = next(n for n in leaves(m.tree) if n["n"] == "main.py")
    assert [m.reads[i]["pattern"] for i in main["u"]] == ["app"]
    assert m.size.full_bytes is not None and m.size.full_bytes > m.size.bytes


def test_minimal_whole_context_says_which_instruction(tmp_path):
    root = make_tree(str(tmp_path / "ctx"))
    with open(os.path.join(root, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY . /src\n")
    m = build_model(ctxpack.open_context(root, minimal=True))
    assert m.reads == [] and len(m.whole_context) == 1
    assert ":2: COPY reads the whole context" in m.whole_context[0]


def test_findings_are_size_and_secret_ones_and_never_the_secret(tree, tmp_path):
    out = str(tmp_path / "r.html")
    r = run_cli("size", tree, "--html", out)
    assert r.returncode == 0, r.stderr
    with open(out, encoding="utf-8") as f:
        page = f.read()
    data = embedded_data(page)
    kinds = {k for f in data["findings"] for k in [f["kind"], *f.get("also", [])]}
    assert "secret" in kinds
    assert all({f["kind"], *f.get("also", [])} & {"heavy-directory", "secret", "unused-by-build", "large-file"}
               for f in data["findings"])
    secret = next(f for f in data["findings"] if f["kind"] == "secret")
    assert secret["path"] == "deploy/id_rsa"
    assert SECRET_MARKER not in page
    assert "PRIVATE KEY-----" not in page
    assert data["lint"] is True


def test_size_findings_filters_lint(tree):
    fs = size_findings(tree)
    assert fs and all({f["kind"], *f.get("also", [])} & {"heavy-directory", "secret", "unused-by-build", "large-file"} for f in fs)


def test_page_is_self_contained(tree):
    page = render_html(build_model(ctxpack.open_context(tree)))
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert not re.search(r"https?://", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("<script") == 2  # the data and the inline script, no src=


def test_html_to_stdout(tree):
    r = run_cli("size", tree, "--html", "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"<!DOCTYPE html>")
    assert embedded_data(r.stdout.decode("utf-8"))["size"]["files"] == 9


def test_dockerfile_from_stdin_still_gets_findings(tree, tmp_path):
    out = str(tmp_path / "r.html")
    r = subprocess.run([sys.executable, "-m", "ctxpack.cli", "size", tree, "-f", "-", "--html", out],
                       input=b"FROM scratch\nCOPY deploy /deploy\n", capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(out, encoding="utf-8") as f:
        data = embedded_data(f.read())
    assert data["lint"] is True
    assert any(f["path"] == "deploy/id_rsa" for f in data["findings"])


def test_html_stdout_and_json_conflict(tree):
    r = run_cli("size", tree, "--html", "-", "--json")
    assert r.returncode == 2
    assert b"--html - and --json" in r.stderr


def test_budget_gate_still_applies_and_page_is_written(tree, tmp_path):
    out = str(tmp_path / "r.html")
    r = run_cli("size", tree, "--html", out, "--max-size", "1kB")
    assert r.returncode == 1
    assert b"over budget" in r.stderr
    assert os.path.getsize(out) > 1000


def test_unwritable_output_is_an_output_error(tree, tmp_path):
    r = run_cli("size", tree, "--html", str(tmp_path / "missing-dir" / "r.html"))
    assert r.returncode == 3, r.stderr
    assert b"ctxpack: error:" in r.stderr


def test_odd_names_survive_the_embedding(tmp_path):
    root = tmp_path / "ctx"
    root.mkdir()
    names = ["<script>alert(1)<!--.txt", "a&b \"q\" 'q'.js", "ünï\u2028code.py"]
    for n in names:
        (root / n).write_bytes(b"y" * 5000)
    bad = os.path.join(os.fsencode(root), b"bad-\xff.bin")
    with open(bad, "wb") as f:
        f.write(b"z" * 5000)
    page = render_html(build_model(ctxpack.open_context(str(root))))
    assert "<script>alert" not in page.split('<script type="application/json"', 1)[1]
    page.encode("utf-8")  # valid UTF-8 despite the undecodable name
    got = {n["n"] for n in embedded_data(page)["tree"]["c"]}
    assert set(names) | {"bad-\udcff.bin"} <= got


def test_small_files_are_folded_so_the_page_stays_small(tmp_path):
    root = tmp_path / "ctx"
    for d in range(40):
        sub = root / f"pkg{d:02d}" / "lib"
        sub.mkdir(parents=True)
        for i in range(50):
            (sub / f"f{i}.js").write_bytes(b"a" * (100 + i))
    (root / "big.bin").write_bytes(b"b" * 2_000_000)
    m = build_model(ctxpack.open_context(str(root)), budget=50)
    assert m.size.files == 2001
    assert m.nodes < 200  # 2001 files, 2081 directories in all
    ls = list(leaves(m.tree))
    assert sum(n.get("f", 0) for n in ls) == 2001 and sum(n.get("s", 0) for n in ls) == m.size.bytes
    big = [n for n in ls if n["n"] == "big.bin"]
    assert big and big[0]["s"] == 2_000_000
    folded = [n for n in ls if n.get("k") in ("a", "c")]
    assert folded and sum(n["f"] for n in folded) == 2000
    # the default budget keeps more detail, still bounded
    full = build_model(ctxpack.open_context(str(root)))
    assert m.nodes < full.nodes <= 2 * 2081 + 2001


def test_a_context_nested_deeper_than_the_recursion_limit_is_drawn(tmp_path):
    # 1,500 levels (~3,000 bytes of path: inside PATH_MAX) is past Python's
    # default recursion limit of 1,000; the page collapses what is below
    # MAX_DEPTH and keeps every total.
    from ctxpack.report.model import MAX_DEPTH

    root = tmp_path / "ctx"
    root.mkdir()
    make_chain(root, 1500)  # os.makedirs recurses once per level
    try:
        deep = os.path.join(str(root), *["d"] * 1500)
        with open(os.path.join(deep, "leaf.txt"), "wb") as f:
            f.write(b"b" * 70_000)
        (root / "top.txt").write_bytes(b"t" * 30_000)
        m = build_model(ctxpack.open_context(str(root)))
        assert m.size.files == 2 and m.size.bytes == 100_000
        page = render_html(m)
        tree = embedded_data(page)["tree"]
        ls = list(leaves(tree))
        assert sum(n.get("s", 0) for n in ls) == 100_000

        def depth(node: dict) -> int:
            d = 0
            while node.get("c"):
                node = max(node["c"], key=lambda c: c.get("s", 0))
                d += 1
            return d

        assert depth(tree) == MAX_DEPTH  # the node at MAX_DEPTH is drawn collapsed
        r = run_cli("size", "--html", str(tmp_path / "deep.html"), str(root))
        assert r.returncode == 0, r.stderr.decode()
    finally:
        remove_chain(root / "d")  # shutil.rmtree (pytest's clean-up) recurses once per level
