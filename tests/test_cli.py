"""The command line: output format, exit codes, Dockerfile and ignore-file choice."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ctxpack
from ctxpack.cli import main
from trees import make_tree, tar_names


def run(*args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input)


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "ctx",
        ["Dockerfile", "src/main.py", "src/util.py", "node_modules/x/index.js", "app.log", "logs/a.log"],
        dockerignore="# deps\nnode_modules\n*.log\n!keep.log\n",
    )


def test_ls_lists_in_upload_order(ctx: Path) -> None:
    res = run("ls", str(ctx))
    assert res.exit_code == 0
    assert res.output.splitlines() == [".dockerignore", "Dockerfile", "logs/", "logs/a.log", "src/", "src/main.py", "src/util.py"]


def test_ls_null_separated(ctx: Path) -> None:
    res = run("ls", "-0", str(ctx))
    assert res.stdout_bytes.split(b"\0")[:2] == [b".dockerignore", b"Dockerfile"]
    assert b"\n" not in res.stdout_bytes


def test_ls_excluded_names_the_rule(ctx: Path) -> None:
    res = run("ls", "--excluded", str(ctx))
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert "app.log\t.dockerignore:3:*.log" in lines
    assert "node_modules/\t.dockerignore:2:node_modules" in lines


def test_ls_writes_undecodable_names_as_bytes(tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\n")
    with open(os.path.join(os.fsencode(root), b"caf\xe9"), "wb") as f:
        f.write(b"x")
    res = run("ls", str(root))
    assert b"caf\xe9\n" in res.stdout_bytes


def test_explain(ctx: Path) -> None:
    res = run("explain", "-C", str(ctx), "app.log", "logs/a.log", "node_modules/x/index.js", "src/main.py")
    assert res.exit_code == 0
    out = res.output.splitlines()
    assert out[0] == "app.log: excluded by .dockerignore:3:*.log"
    assert out[1] == "logs/a.log: included: no rule"
    assert out[2].startswith("node_modules/x/index.js: excluded: directory 'node_modules' is excluded by .dockerignore:2:node_modules")
    assert out[3] == "src/main.py: included: no rule"


def test_explain_reports_dialect_difference(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "c", ["Dockerfile", "dir/keep", "dir/other"], dockerignore="dir\n!**/keep\n")
    res = run("explain", "--context", str(root), "dir/keep")
    assert res.output.strip() == (
        "dir/keep: included by .dockerignore:2:!**/keep [classic does not send it: excluded: "
        "directory 'dir' is excluded by .dockerignore:1:dir and not searched for exceptions]"
    )


@pytest.mark.parametrize(
    "ignore,message",
    [
        ("ok\n[\n", ".dockerignore:2: syntax error in pattern: '['"),
        ("!\n", '.dockerignore:1: illegal exclusion pattern: "!"'),
        ("a*[\n", ".dockerignore:1: syntax error in pattern"),
    ],
)
def test_bad_patterns_exit_2_with_file_and_line(tmp_path: Path, ignore: str, message: str) -> None:
    root = make_tree(tmp_path / "c", ["Dockerfile", "abc"], dockerignore=ignore)
    res = run("ls", str(root))
    assert res.exit_code == 2
    assert message in res.output
    assert res.output.startswith("ctxpack: error: ")


def test_missing_directory_exits_2(tmp_path: Path) -> None:
    res = run("ls", str(tmp_path / "nope"))
    assert res.exit_code == 2


def test_missing_explicit_dockerfile_exits_2(ctx: Path) -> None:
    res = run("ls", "-f", str(ctx / "Nope.Dockerfile"), str(ctx))
    assert res.exit_code == 2 and f"unable to evaluate symlinks in Dockerfile path: lstat {ctx}/Nope.Dockerfile: no such file or directory" in res.output


def test_unknown_dialect_is_usage_error(ctx: Path) -> None:
    assert run("ls", "--dialect", "kaniko", str(ctx)).exit_code == 2


def test_ignore_file_option(ctx: Path, tmp_path: Path) -> None:
    alt = tmp_path / "alt.ignore"
    alt.write_text("src\n")
    res = run("ls", "--ignore-file", str(alt), str(ctx))
    assert "src/" not in res.output.splitlines() and "app.log" in res.output.splitlines()
    res = run("ls", "--ignore-file", str(tmp_path / "missing"), str(ctx))
    assert res.exit_code == 2


def test_per_dockerfile_ignore_is_buildkit_only(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "c",
        {"docker/app.Dockerfile": b"FROM scratch\n", "docker/app.Dockerfile.dockerignore": b"secret\n",
         "secret": b"s", "other": b"o"},
        dockerignore="other\n",
    )
    df = str(root / "docker/app.Dockerfile")
    bk = [e.path for e in ctxpack.list_entries(ctxpack.open_context(root, dockerfile=df, dialect="buildkit"))]
    cl = [e.path for e in ctxpack.list_entries(ctxpack.open_context(root, dockerfile=df, dialect="classic"))]
    assert "secret" not in bk and "other" in bk
    assert "secret" in cl and "other" not in cl
    # The default Dockerfile's own ignore file: Dockerfile.dockerignore at the root.
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "Dockerfile.dockerignore").write_text("secret\n")
    ctx = ctxpack.open_context(root, dialect="buildkit")
    assert ctx.ignore_source is not None and ctx.ignore_source.endswith("Dockerfile.dockerignore")


_INJECTED = re.compile(r"^\.dockerfile\.[0-9a-f]{20}$")


def _normalize(names: list[str]) -> list[str]:
    return [".dockerfile.*" if _INJECTED.match(n) else n for n in names]


@pytest.mark.docker_cli
@pytest.mark.parametrize("where", ["sub", "outside", "stdin"])
@pytest.mark.parametrize("has_ignore", [True, False])
def test_dockerfile_location_matches_docker_cli(tmp_path: Path, where: str, has_ignore: bool, docker_cli: Any) -> None:
    root = make_tree(tmp_path / "ctx", ["a.txt", "sub/b.txt"], dockerignore="sub\n" if has_ignore else None)
    if where == "sub":
        (root / "sub/Dockerfile").write_text("FROM scratch\n")
        df, stdin = str(root / "sub/Dockerfile"), None
    elif where == "outside":
        (tmp_path / "Outside.Dockerfile").write_text("FROM scratch\n")
        df, stdin = str(tmp_path / "Outside.Dockerfile"), None
    else:
        df, stdin = "-", b"FROM scratch\n"
    cap = docker_cli.capture(root, dockerfile=df, stdin=stdin)
    assert cap.members is not None, cap.stderr
    ctx = ctxpack.open_context(root, dockerfile=df, dialect="classic")
    ours = [e.name for e in ctxpack.list_entries(ctx)]
    theirs = tar_names(cap.members)
    # Entries the CLI injects come last, in Go map order: compare them as a set.
    n = len([x for x in ours if not x.startswith(".dockerfile.")]) - (0 if has_ignore or where == "sub" else 1)
    assert _normalize(ours[:n]) == _normalize(theirs[:n])
    assert sorted(_normalize(ours[n:])) == sorted(_normalize(theirs[n:]))


def test_public_api_is_importable() -> None:
    """Every name in ctxpack.__all__ resolves (lazy ones included)."""
    for name in ctxpack.__all__:
        assert getattr(ctxpack, name) is not None, name


def test_minimal_warns_about_a_missing_copy_source_but_others_load_no_explainer(tmp_path: Path) -> None:
    """open_ctx says a --minimal context's missing COPY source before the
    output; without --minimal there is no analysis to warn from, and
    fingerprint does not import the explainer at all (start-up)."""
    import subprocess
    import sys

    root = make_tree(tmp_path / "c", {"Dockerfile": b"FROM scratch\nCOPY missing.txt /\nCOPY src /src\n", "src/a": b"a"})
    res = run("ls", "--minimal", str(root))
    assert res.exit_code == 0, res.output
    assert "Dockerfile:2: COPY source 'missing.txt' does not exist: the build will fail with 'not found'" in res.stderr
    assert "does not exist" not in run("ls", str(root)).stderr
    code = ("import sys\nfrom ctxpack.cli import main\nsys.argv = ['ctxpack', 'fingerprint', sys.argv[1]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('explainer' in ' '.join(sys.modules), file=sys.stderr)")
    env = dict(os.environ, CTXPACK_CACHE_DIR=str(tmp_path / "cache"), CTXPACK_PARALLEL="0")
    p = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=env, timeout=60)
    assert p.stderr.strip().splitlines()[-1] == "False", p.stderr
