"""`ctxpack lint`: each finding kind, its fix applied and re-linted clean."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxpack.cli import main
from ctxpack.linter import lint, plan_fixes
from trees import make_tree

DF = b"FROM scratch\n"


def kinds(root: Path, **kw: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in lint(root, **kw).findings:
        out.setdefault(f.kind, []).append(f)
    return out


def fix_and_relint(root: Path, **kw: Any) -> dict[str, list[Any]]:
    plan = plan_fixes(lint(root, **kw))
    assert plan.changed, [(o.finding.kind, o.reason) for o in plan.refused]
    Path(plan.path).write_text(plan.new)
    return kinds(root, **kw)


def test_gitignore_habit(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, "app.log": b"x", "svc/x.log": b"x", "web/node_modules/a.js": b"x"},
                     dockerignore="# logs\n*.log\nnode_modules\n")
    found = kinds(root)["gitignore-habit"]
    by_line = {f.line: f for f in found}
    assert by_line[2].rule == "*.log"
    assert "it lets through 1 path that no other rule decides" in by_line[2].message and "svc/x.log" in by_line[2].message
    assert by_line[2].fix == "use '**/*.log' to match at any depth"
    assert "web/node_modules" in by_line[3].message
    after = fix_and_relint(root)
    assert "gitignore-habit" not in after
    text = (root / ".dockerignore").read_text()
    assert text.startswith("# logs\n**/*.log\n**/node_modules\n")   # comments and order kept


def test_rules_without_effect(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, "a/x.txt": b"x", "b.md": b"x", "README.md": b"x", "keep/k": b"x"},
                     dockerignore="nothing\na/x.txt\na\n*.md\n!README.md\n!keep/k\n")
    found = kinds(root)
    assert [f.line for f in found["matches-nothing"]] == [1]      # not a guard, no git history
    assert found["matches-nothing"][0].edit is None                # never a reason to delete
    assert [f.line for f in found["redundant"]] == [2]            # decided by the later 'a'
    assert [f.line for f in found["useless-exception"]] == [6]    # keep/k was never excluded
    assert "useless-exception" not in {k for k, v in found.items() if any(f.line == 5 for f in v)}
    after = fix_and_relint(root)
    assert "redundant" not in after
    assert "# ctxpack: redundant: a/x.txt" in (root / ".dockerignore").read_text()


def test_classic_ignores_wildcard_exception(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, "dir/keep": b"x", "dir/other": b"x"}, dockerignore="dir\n!**/keep\n")
    classic = kinds(root, dialect="classic")
    assert classic["useless-exception"][0].line == 2
    assert "literal text" in classic["useless-exception"][0].message
    diff = kinds(root)["dialect-difference"]
    assert [f.path for f in diff] == ["dir/keep"]
    assert "only buildkit sends this path" in diff[0].message


@pytest.mark.parametrize(
    "ignore,severity,needle",
    [("ok\n[\n", "error", "docker refuses this file: syntax error in pattern"),
     ("!\n", "error", 'illegal exclusion pattern: "!"'),
     ("a*[\n", "error", "fails with 'syntax error in pattern' when it first evaluates it")],
)
def test_syntax_findings(tmp_path: Path, ignore: str, severity: str, needle: str) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, "abc": b"x"}, dockerignore=ignore)
    (f,) = kinds(root)["syntax"]
    assert f.severity == severity and needle in f.message and f.line == ignore.count("\n")
    res = CliRunner().invoke(main, ["lint", str(root)])
    assert res.exit_code == 1
    assert "syntax" not in fix_and_relint(root)


def test_heavy_directories(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, ".git/objects/p": b"\0" * 1_500_000,
                                      "pkg/node_modules/big.js": b"x" * 2_000_000, "dist/small": b"x"})
    found = kinds(root)["heavy-directory"]
    assert {f.path for f in found} == {".git", "pkg/node_modules"}   # dist is under the size threshold
    assert "2.0 MB" in next(f.message for f in found if f.path == "pkg/node_modules")
    assert "heavy-directory" not in fix_and_relint(root)
    assert "pkg" in (root / ".dockerignore").read_text().splitlines()   # wider first: pkg/node_modules is then moot


def test_error_exit_code_survives_a_closed_pipe(tmp_path: Path) -> None:
    """`ctxpack lint | head` (pipefail): error-level findings exit 1 even when
    the reader went away before the last one (found in a trial: exit 0 then)."""
    import os
    import subprocess
    import sys

    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY . /\n",
                                      ".env": b"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"})
    r, w = os.pipe()
    os.close(r)  # every write to stdout fails with EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "ctxpack.cli", "lint", str(root)],
                              stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_added_rule_for_a_root_path_is_rooted_when_the_name_is_also_deeper(tmp_path: Path) -> None:
    """Found in a trial (full-stack-fastapi-template's backend): `lint --fix`
    appended 'build' for an unused build/, and the next lint warned about its
    own rule ('build' only matches at the context root ... use '**/build'),
    a fix that would drop app/email-templates/build, which COPY app reads.
    Written '/build' (rooted on purpose) it is no gitignore habit."""
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY app /app\n",
                                      "build/lib/x.py": b"x" * 10,
                                      "app/main.py": b"print()\n",
                                      "app/email-templates/build/new.html": b"<p>hi</p>\n"},
                     dockerignore="*.pyc\n")
    [unused] = [f for f in kinds(root)["unused-by-build"] if f.path == "build"]
    assert unused.edit is not None and unused.edit.text == "/build", unused
    assert "add '/build' to .dockerignore" in unused.fix
    after = fix_and_relint(root)
    assert "/build" in (root / ".dockerignore").read_text().splitlines()
    assert "gitignore-habit" not in after, after["gitignore-habit"]
    assert "unused-by-build" not in after or all(f.path != "build" for f in after["unused-by-build"])


def test_secrets_are_errors_and_never_printed(tmp_path: Path) -> None:
    key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETSTUFF\n-----END OPENSSH PRIVATE KEY-----\n"
    root = make_tree(tmp_path / "c", {
        "Dockerfile": DF, ".env": b"TOKEN=SECRETSTUFF9\n", ".env.example": b"TOKEN=\n",
        "deploy/server.pem": key, "cert/public.pem": b"-----BEGIN CERTIFICATE-----\n",
        ".npmrc": b"//registry.npmjs.org/:_authToken=SECRETSTUFF\n", "web/.npmrc": b"save-exact=true\n",
        "home/.aws/credentials": b"[default]\naws_secret_access_key=SECRETSTUFF\n",
    })
    found = [f for f in kinds(root)["secret"] if f.severity != "info"]
    assert {f.path for f in found} == {".env", "deploy/server.pem", ".npmrc", "home/.aws/credentials"}
    assert all(f.severity == "error" for f in found)
    res = CliRunner().invoke(main, ["lint", "--json", str(root)])
    assert res.exit_code == 1 and "SECRETSTUFF" not in res.output
    doc = json.loads(res.stdout)
    assert set(doc["findings"][0]) == {"kind", "severity", "message", "fix", "file", "line", "rule", "path", "also"}
    allow = [a for p in (".env", "deploy", ".npmrc", "home/.aws/credentials") for a in ("--allow-secret", p)]
    assert CliRunner().invoke(main, ["lint", *allow, str(root)]).exit_code == 0
    assert "secret" not in {k for k, v in fix_and_relint(root).items() if any(f.severity != "info" for f in v)}


def test_old_allow_secrets_flag_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF})
    res = CliRunner().invoke(main, ["lint", "--allow-secrets", str(root)])
    assert res.exit_code == 2 and "--allow-secret PATH" in res.output


def test_cli_fix_shows_diff_and_exits_clean(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY a /a\n", "a/b.log": b"x", "b.log": b"x"},
                     dockerignore="*.log\n")
    res = CliRunner().invoke(main, ["lint", "--fix", str(root)])
    assert "-*.log\n+**/*.log" not in res.output          # a/b.log is read by COPY a: refused
    assert "it would exclude a/b.log, which COPY a (Dockerfile:2, stage 0) reads" in res.output
    root2 = make_tree(tmp_path / "d", {"Dockerfile": b"FROM scratch\nCOPY src /src\n", "src/x": b"x", "a/b.log": b"x"},
                      dockerignore="*.log\n")
    res = CliRunner().invoke(main, ["lint", "--fix", str(root2)])
    assert "-*.log\n+**/*.log" in res.output
    assert "not changed: no terminal to ask; pass --yes" in res.output
    assert (root2 / ".dockerignore").read_text() == "*.log\n"
    res = CliRunner().invoke(main, ["lint", "--fix", "--yes", str(root2)])
    assert (root2 / ".dockerignore").read_text().startswith("**/*.log\n")
    res = CliRunner().invoke(main, ["lint", str(root2)])
    assert "gitignore-habit" not in res.output and res.exit_code == 0


def test_pre_commit_hook_is_declared() -> None:
    text = (Path(__file__).resolve().parent.parent / ".pre-commit-hooks.yaml").read_text()
    assert "id: ctxpack-lint" in text and "entry: ctxpack lint" in text


def test_copy_sources_and_unused_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY src /src\nCOPY missing /m\n",
                                      "src/a.py": b"x", "docs/x.md": b"d", "README": b"r"}, dockerignore="src\n")
    found = kinds(root)
    (excl,) = found["copy-source-excluded"]
    assert excl.severity == "error" and excl.line == 2 and ".dockerignore:1:src" in excl.message
    (missing,) = found["copy-source-missing"]
    assert missing.line == 3
    assert {f.path for f in found["unused-by-build"]} == {"docs", "README"}
    after = fix_and_relint(root)
    assert "copy-source-excluded" not in after and "unused-by-build" not in after
    assert set((root / ".dockerignore").read_text().splitlines()[-3:]) == {"!src", "docs", "README"}


def test_minimal_warns_before_upload(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY src /src\n", "src/a.py": b"x"},
                     dockerignore="src\n")
    res = CliRunner().invoke(main, ["ls", "--minimal", str(root)])
    assert res.exit_code == 0
    assert "Dockerfile:2: COPY source 'src' is excluded (excluded by .dockerignore:1:src)" in res.stderr


def test_duplicate_rule_reported_once(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, "public/uploads/a.png": b"x", "src/x": b"y"},
                     dockerignore="public/uploads\npublic/uploads/\n*.tmp\n")
    found = kinds(root)
    (dup,) = found["duplicate"]
    assert dup.line == 2 and dup.message == "repeats line 1 (public/uploads)"
    assert "redundant" not in found
    after = fix_and_relint(root)
    assert "duplicate" not in after
    assert (root / ".dockerignore").read_text().startswith("public/uploads\n# ctxpack: same as line 1: public/uploads/\n")


def test_heavy_directory_sums_its_whole_subtree_and_nothing_beside_it(tmp_path: Path) -> None:
    """A heavy directory's size is everything below it, nested heavy
    directories included (one finding), and nothing of the siblings whose
    names it begins (``node_modules-x`` sorts right after its subtree)."""
    from ctxpack.audit import format_size

    files = {"Dockerfile": DF, "node_modules/a.js": b"x" * 1_000_000, "node_modules/z/z.js": b"x" * 300_000,
             "node_modules/a/node_modules/b/c.js": b"x" * 500_000, "node_modules/.bin/t": b"x" * 7,
             "node_modules-x/big": b"x" * 3_000_000, "node_modules.bak/big": b"x" * 3_000_000}
    root = make_tree(tmp_path / "c", files)
    found = kinds(root)["heavy-directory"]
    assert [f.path for f in found] == ["node_modules"]
    assert f"({'installed npm packages'}, {format_size(1_800_007)})" in found[0].message


def test_heavy_directory_reincluded_in_part_is_deliberate(tmp_path: Path) -> None:
    """`.git` + `!.git/HEAD` (a build that reads the commit): BuildKit sends
    .git as the parent of HEAD; that is on purpose, so info with the rule."""
    root = make_tree(tmp_path / "c", {"Dockerfile": DF, ".git/HEAD": b"ref: x\n" * 250_000, ".git/objects/p": b"x" * 10},
                     dockerignore=".git\n!.git/HEAD\n")
    (f,) = [f for f in lint(root).findings if f.path == ".git"]  # heavy only by what is sent: a 1.75 MB HEAD
    assert f.severity == "info" and f.rule == "!.git/HEAD" and "re-includes it on purpose" in f.message


def test_docs_heavy_directory_row_says_what_the_check_does() -> None:
    """docs/lint.md's heavy-directory row names every heavy name the check
    knows and its threshold, .git included (it said "any size" after issue
    10 made .git follow the 1 MB and 2% rule)."""
    from ctxpack.audit import HEAVY_MIN_BYTES, HEAVY_MIN_SHARE
    from ctxpack.linter.guards import HEAVY

    docs = (Path(__file__).resolve().parent.parent / "docs" / "lint.md").read_text()
    (row,) = [line for line in docs.splitlines() if line.startswith("| `heavy-directory` |")]
    assert "any size" not in row
    assert f"{HEAVY_MIN_BYTES // 1_000_000} MB" in row and f"{HEAVY_MIN_SHARE:.0%}" in row
    named = {name for name in HEAVY if f"`{name}`" in row or f"`{name}/" in row or f"/`{name}`" in row}
    caches = {n for n in HEAVY if n.endswith("_cache") or n in (".angular", ".terraform")}  # "caches (...)"
    assert set(HEAVY) - named - caches == set(), sorted(set(HEAVY) - named - caches)


def test_a_small_git_is_no_heavy_directory_but_a_large_one_is(tmp_path: Path) -> None:
    # issue 10: the 194 kB .git warning was noise; the threshold is 1 MB and 2% of what is sent.
    small = tmp_path / "small"
    (small / ".git" / "objects").mkdir(parents=True)
    (small / ".git" / "objects" / "pack").write_bytes(b"x" * 194_000)
    (small / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (small / "big.bin").write_bytes(b"y" * 3_000_000)
    kinds = [f.kind for f in lint(small).findings]
    assert "heavy-directory" not in kinds
    (small / ".git" / "objects" / "pack").write_bytes(b"x" * 2_000_000)
    found = [f for f in lint(small).findings if f.kind == "heavy-directory"]
    assert [f.path for f in found] == [".git"]


def test_the_more_paths_summary_follows_the_paths_it_sums_up(tmp_path: Path) -> None:
    # Trial finding S23 (fastapi template): "9 more paths ... are sent but no build stage
    # reads them" was printed before the 20 paths it adds to, as it has no path to sort by.
    files = {"Dockerfile": b"FROM scratch\nCOPY src /src\n", "src/a.py": b"x"}
    files.update({f"doc{i:02}.md": b"d" for i in range(25)})
    root = make_tree(tmp_path / "c", files)
    res = CliRunner().invoke(main, ["lint", str(root)])
    lines = [ln for ln in res.output.splitlines() if "[unused-by-build]" in ln]
    assert len(lines) == 21 and "5 more paths (5 entries) are sent" in lines[-1], res.output
    assert all("more paths" not in ln for ln in lines[:-1])
