"""`ctxpack lint` on realistic trees (tests/lint_trees.py), and each real-world
finding of issue 10 as a regression test.

Where ``--fix`` writes, the docker CLI's upload before and after is compared:
the build's sources and the paths the user's ``!`` rules re-include must
arrive unchanged.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import lint_trees
from ctxpack.cli import main
from ctxpack.linter import lint, plan_fixes
from lint_trees import MB, blob
from trees import make_tree


def by_kind(report: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for f in report.findings:
        for k in (f.kind, *f.also):
            out.setdefault(k, []).append(f)
    return out


def fix_yes(root: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["lint", "--fix", "--yes", "--dialect", "classic", *args, str(root)])


def upload(docker_cli: Any, root: Path, dockerfile: Path | None = None) -> set[str]:
    return set(docker_cli.capture(root, dockerfile=dockerfile).check().names)


def under(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p.rstrip("/") + "/") for p in prefixes)}


# --- realistic trees -------------------------------------------------------------

def test_monorepo(tmp_path: Path, docker_cli: Any) -> None:
    root = lint_trees.monorepo(tmp_path / "mono")
    before = upload(docker_cli, root)
    found = by_kind(lint(root, dialect="classic"))
    habit = {f.rule: f for f in found["gitignore-habit"]}
    # node_modules: the two nested ones are sent and no other rule decides them.
    assert "lets through 2 paths" in habit["node_modules"].message
    assert "packages/web/node_modules (3.0 MB)" in habit["node_modules"].message
    assert "packages/api/.env" in habit[".env"].message
    secrets = {f.path: f for f in found["secret"]}
    assert secrets["packages/api/.env"].severity == "error"
    assert "Zq8vK2mPw9xL" not in secrets["packages/api/.env"].message
    assert secrets["packages/web/.env.production"].severity == "info"   # a public URL: by content, not by name
    assert ".env" not in secrets                                         # excluded by the root rule
    res = fix_yes(root)
    assert res.exit_code == 1                                            # the real secret stays an error
    assert "it would exclude packages/api/node_modules, which COPY packages/api (Dockerfile:4, stage 0) reads" in res.output
    text = (root / ".dockerignore").read_text()
    assert "**/node_modules" not in text and text.startswith("node_modules\n.env\n")
    after = upload(docker_cli, root)
    reads = ("package.json", "yarn.lock", "packages/api", "Dockerfile", ".dockerignore")
    assert under(after, *reads[:3]) == under(before, *reads[:3])
    assert under(after, "packages/web", "docs") == set()                 # unread: excluded by the fix


def test_python_app_guards_kept(tmp_path: Path, docker_cli: Any) -> None:
    # A clean checkout: no .venv, no .idea; the rules guard a developer's machine.
    root = lint_trees.python_app(tmp_path / "py")
    for p in sorted(root.glob(".venv/**/*"), reverse=True) + [root / ".venv"]:
        p.rmdir() if p.is_dir() else p.unlink()
    report = lint(root, dialect="classic")
    lines = {f.line for f in report.findings if f.file == ".dockerignore" and f.line}
    assert 1 not in lines and 5 not in lines                             # .venv, .idea/: never obsolete
    habit = {f.rule: f for f in by_kind(report)["gitignore-habit"]}
    assert "app/__pycache__" in habit["__pycache__"].message and "tests/__pycache__" in habit["__pycache__"].message
    before = upload(docker_cli, root)
    res = fix_yes(root)
    assert "it would exclude app/__pycache__, which COPY app (Dockerfile:4, stage 0) reads" in res.output
    text = (root / ".dockerignore").read_text()
    assert text.startswith(".venv\n__pycache__\n*.pyc\n.pytest_cache\n.idea/\n")  # guards untouched
    after = upload(docker_cli, root)
    assert under(after, "app", "pyproject.toml") == under(before, "app", "pyproject.toml")
    assert under(after, "tests", ".mypy_cache") == set()


def test_dotnet_two_level_bin_obj(tmp_path: Path, docker_cli: Any) -> None:
    root = lint_trees.dotnet(tmp_path / "net")
    df = root / "src/Web/Dockerfile"
    before = upload(docker_cli, root, df)
    report = lint(root, dockerfile=str(df), dialect="classic")
    habit = {f.rule: f for f in by_kind(report)["gitignore-habit"]}
    assert habit["*/bin"].fix == "use '**/bin' to match at any depth"
    assert "src/Web/bin (3.0 MB), src/Lib/bin (1.5 MB)" in habit["*/bin"].message
    assert "src/Web/obj (800.0 kB)" in habit["*/obj"].message
    heavy = {f.path for f in by_kind(report)["heavy-directory"]}
    assert {"src/Web/bin", "src/Lib/bin"} <= heavy and "tools/bin" not in heavy   # no .csproj next to tools/bin
    res = fix_yes(root, "-f", str(df))
    assert res.exit_code == 0, res.output
    assert (root / ".dockerignore").read_text().startswith("**/bin\n**/obj\n.vs\n")
    after = upload(docker_cli, root, df)
    sources = ("src/Web/Web.csproj", "src/Lib/Lib.csproj", "src/Web/Program.cs", "src/Lib/Lib.cs")
    assert under(after, *sources) == under(before, *sources) == set(sources)
    assert not any("/bin/" in n or "/obj/" in n for n in after)


def test_rust_deliberate_git(tmp_path: Path, docker_cli: Any) -> None:
    root = lint_trees.rust(tmp_path / "rs")
    before = upload(docker_cli, root)
    report = lint(root, dialect="classic")
    (git,) = [f for f in report.findings if f.path == ".git"]
    assert git.severity == "info" and git.rule == "!.git" and git.line == 3
    plan = plan_fixes(report)
    assert [o.reason for o in plan.refused if o.finding is git] == [
        "it would exclude .git, which .dockerignore:3:!.git re-includes on purpose"]
    fix_yes(root)
    assert under(upload(docker_cli, root), ".git") == under(before, ".git") != set()


# --- issue 10's real-world findings ------------------------------------------------

def test_copy_reading_inside_a_directory_keeps_it(tmp_path: Path, docker_cli: Any) -> None:
    """`COPY ./docker/rootfs /` reads 169 files below `docker`: never append `docker`."""
    files = {f"docker/rootfs/etc/s6/svc{i}/run": b"#!/bin/sh\n" for i in range(169)}
    files.update({"Dockerfile": b"FROM alpine\nCOPY ./docker/rootfs /\nCOPY app /app\n", "app/main.sh": b"x",
                  "docker/Makefile": b"all:\n", "docker/compose.yml": b"services: {}\n", "docs/x.md": b"d"})
    root = make_tree(tmp_path / "c", files)
    unused = {f.path for f in by_kind(lint(root, dialect="classic"))["unused-by-build"]}
    assert "docker" not in unused and {"docker/Makefile", "docker/compose.yml", "docs"} <= unused
    before = upload(docker_cli, root)
    fix_yes(root)
    lines = (root / ".dockerignore").read_text().splitlines()
    assert "docker" not in lines and "docker/Makefile" in lines
    after = upload(docker_cli, root)
    assert under(after, "docker/rootfs") == under(before, "docker/rootfs") and len(under(after, "docker/rootfs")) > 169


def test_rooted_data_is_deliberate(tmp_path: Path) -> None:
    """`./data` is rooted on purpose: no habit, and never `**/data` (it would take Angular source)."""
    files = {"Dockerfile": b"FROM node\nCOPY src-ui /src-ui\n", "data/big.csv": blob(MB),
             "src-ui/src/app/data/model.ts": b"export {}\n", "src-ui/src/main.ts": b"x"}
    root = make_tree(tmp_path / "c", files, dockerignore="./data\n")
    assert "gitignore-habit" not in by_kind(lint(root))
    root2 = make_tree(tmp_path / "d", files, dockerignore="data\n")
    report = lint(root2)
    (habit,) = by_kind(report)["gitignore-habit"]
    assert "src-ui/src/app/data" in habit.message
    (o,) = [o for o in plan_fixes(report).outcomes if o.finding is habit]
    assert not o.applied and o.reason.startswith("it would exclude src-ui/src/app/data, which COPY src-ui")


@pytest.mark.parametrize("dockerfile,reason", [
    (b"FROM golang\nCOPY . /src\nRUN go build\n", "the analysis cannot tell what the build reads"),
    (b"FROM golang\nCOPY tpl /src/tpl\nCOPY main.go /src/\n", "it would exclude tpl/embedded/shortcodes.md, which COPY tpl"),
])
def test_md_rule_keeps_go_embed_files(tmp_path: Path, dockerfile: bytes, reason: str) -> None:
    """`*.md` -> `**/*.md` would take out files a `//go:embed` needs."""
    root = make_tree(tmp_path / "c", {"Dockerfile": dockerfile, "README.md": b"r", "main.go": b"package main\n",
                                      "tpl/embedded/shortcodes.md": b"//go:embed\n"}, dockerignore="*.md\n")
    report = lint(root)
    (habit,) = by_kind(report)["gitignore-habit"]
    plan = plan_fixes(report)
    (o,) = [o for o in plan.outcomes if o.finding is habit]
    assert not o.applied and o.reason.startswith(reason)
    assert "**/*.md" not in plan.new


def test_reincluded_env_and_git_are_kept(tmp_path: Path, docker_cli: Any) -> None:
    """`!.env.production` / `!.git` are deliberate (a Vite build reads them;
    build.rs runs git describe): no fix overrides them, and their content is
    still checked and reported with the rule."""
    key = b"AKIA" + b"Q7XK2M4PLZ8RWN3V"
    root = make_tree(tmp_path / "c", {
        "Dockerfile": b"FROM node:20\nWORKDIR /app\nCOPY . .\nRUN npx vite build\n", "index.html": b"<html>",
        ".env.production": b"VITE_API_URL=https://api.example.com\n", ".env.development": b"VITE_API_URL=http://localhost\n",
        ".env.local": b"SECRET_KEY=Vh3kQ9zLm2Xp7RtY\n", ".env.staging": b"AWS_ACCESS_KEY_ID=" + key + b"\n",
        **lint_trees.git_dir(), ".git/objects/pack/pack-1.pack": lint_trees.blob(2_000_000),  # heavy: 1 MB and 2%
    }, dockerignore=".env*\n!.env.production\n!.env.development\n!.env.staging\n.git\n!.git\n")
    before = upload(docker_cli, root)
    report = lint(root, dialect="classic")
    found = {f.path: f for f in report.findings if f.path}
    assert found[".env.production"].severity == "info" and found[".env.production"].rule == "!.env.production"
    staging = found[".env.staging"]
    assert staging.severity == "error" and staging.rule == "!.env.staging" and "an AWS access key id" in staging.message
    assert key.decode() not in staging.message
    assert ".env.local" not in found                                     # excluded: not sent
    res = fix_yes(root)
    assert "it would exclude .env.staging, which .dockerignore:4:!.env.staging re-includes on purpose" in res.output
    assert "it would exclude .git, which .dockerignore:6:!.git re-includes on purpose" in res.output
    assert upload(docker_cli, root) == before


def test_venv_only_rule_is_never_removed(tmp_path: Path) -> None:
    """The project's only rule `.venv` matches nothing in a clean checkout."""
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM python\nCOPY app /app\n", "app/x.py": b"x"},
                     dockerignore=".venv\n")
    report = lint(root)
    assert not [f for f in report.findings if f.line == 1 and f.file == ".dockerignore"]
    assert all(o.finding.line != 1 for o in plan_fixes(report).outcomes)
    res = CliRunner().invoke(main, ["lint", "--fix", "--yes", str(root)])
    assert res.exit_code == 0 and (root / ".dockerignore").read_text() == ".venv\n"


# --- rules that match nothing -------------------------------------------------------

def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


def test_matches_nothing_only_for_mistakes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "old/report.pdf": b"x", "node_modules/a": b"x",
                                      "src/app.py": b"x"},
                     dockerignore="old/report.pdf\nnode_module\nsecrets.json\n.idea\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "one")
    (root / "old/report.pdf").unlink()
    _git(root, "commit", "-qam", "two")
    found = {f.line: f for f in lint(root).findings if f.kind == "matches-nothing"}
    assert 1 not in found                                  # in git history: deliberate, if obsolete
    assert "did you mean 'node_modules'?" in found[2].message
    assert found[3].severity == "warning" and "nor in its git history" not in found[3].message
    assert "in the tree or in its git history" in found[3].message
    assert 4 not in found                                  # a guard of local state
    assert all(f.edit is None for f in found.values())     # never a reason to delete


def test_text_output_names_the_rule_next_to_its_line(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\n", "web/node_modules/x.js": b"x"},
                     dockerignore="# deps\nnode_modules\n")
    res = CliRunner().invoke(main, ["lint", str(root)])
    assert res.output.startswith(".dockerignore:2:node_modules: warning: 'node_modules' only matches at the context root")


def test_diff_prints_only_the_diff(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY src /src\n", "src/a": b"x", "docs/x": b"y"})
    res = CliRunner().invoke(main, ["lint", "--diff", str(root)])
    assert res.exit_code == 0
    assert res.stdout.startswith("--- a/") and "+docs\n" in res.stdout and "warning" not in res.stdout
    assert not (root / ".dockerignore").exists()


def test_fix_asks_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxpack.cli import linting

    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY src /src\n", "src/a": b"x", "docs/x": b"y"})
    monkeypatch.setattr(linting, "on_terminal", lambda: True)
    res = CliRunner().invoke(main, ["lint", "--fix", str(root)], input="n\n")
    assert "Write these changes to" in res.output and not (root / ".dockerignore").exists()
    res = CliRunner().invoke(main, ["lint", "--fix", "--json", str(root)], input="y\n")
    assert (root / ".dockerignore").read_text() == "# added by ctxpack lint --fix\ndocs\n"
    import json
    doc = json.loads(res.stdout[res.stdout.index("{"):])
    assert doc["fixes"] == [{"kind": "unused-by-build", "where": "docs", "applied": True, "safe": True, "reason": ""}]


def test_whole_context_fallback_allows_only_syntactic_fixes(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nARG DIR\nCOPY ${DIR} /x\n", "a/b.log": b"x",
                                      "node_modules/x": b"x" * 2_000_000},
                     dockerignore="*.log\n[\ndist\ndist\n")
    plan = plan_fixes(lint(root))
    applied = {(o.finding.kind, o.edit.line) for o in plan.outcomes if o.applied}
    assert applied == {("syntax", 2), ("duplicate", 4)}
    refused = {o.finding.kind: o.reason for o in plan.refused}
    assert refused["gitignore-habit"].startswith("the analysis cannot tell what the build reads (")
    assert "heavy-directory" in refused
    assert plan.new == "*.log\n# ctxpack: invalid pattern: [\ndist\n# ctxpack: same as line 3: dist\n"
