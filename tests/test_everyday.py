"""Everyday paths of the command line (issue 10, "Everyday defects"): pack's
own output, explain's paths, a missing Dockerfile or directory, one error
style, size's tree, the cache's scope.  Each test is a real-world finding."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ctxpack.cli import main
from ctxpack.index.store import DB_NAME
from trees import make_tree


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, input: bytes | None = None) -> Any:
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(args), env=env, input=input)
    finally:
        os.chdir(old)


# -- pack -o FILE inside the context -------------------------------------------------


@pytest.mark.parametrize("parallel", ["0", "1"])
def test_pack_output_inside_the_context_is_never_packed(tmp_path: Path, parallel: str) -> None:
    root = make_tree(tmp_path / "app", {"Dockerfile": b"FROM scratch\nCOPY . /\n", "src/a.py": b"print(1)\n"})
    env = {"CTXPACK_PARALLEL": parallel}
    first = run("pack", "--reproducible", "-o", "ctx.tar", ".", cwd=root, env=env)
    assert first.exit_code == 0, first.output
    one = (root / "ctx.tar").read_bytes()
    second = run("pack", "--reproducible", "-o", "ctx.tar", ".", cwd=root, env=env)
    assert second.exit_code == 0, second.output
    assert (root / "ctx.tar").read_bytes() == one  # two reproducible runs, one result
    names = tarfile.open(root / "ctx.tar").getnames()
    assert names == ["Dockerfile", "src", "src/a.py"]
    assert not [n for n in os.listdir(root) if n.endswith(".tmp")]


def test_pack_output_in_a_subdirectory_through_a_symlink(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "app", {"Dockerfile": b"FROM scratch\n", "out/keep": b"k"})
    (tmp_path / "alias").symlink_to(root / "out")
    for _ in range(2):
        res = run("pack", "--reproducible", "-o", str(tmp_path / "alias" / "ctx.tar"), str(root))
        assert res.exit_code == 0, res.output
    assert tarfile.open(root / "out" / "ctx.tar").getnames() == ["Dockerfile", "out", "out/keep"]


@pytest.mark.docker_cli
def test_pack_output_inside_the_context_is_the_docker_cli_upload_without_it(tmp_path: Path, docker_cli: Any) -> None:
    root = make_tree(tmp_path / "app", {"Dockerfile": b"FROM scratch\n", "src/a.py": b"1", "README.md": b"r"},
                     dockerignore="*.md\n")
    res = run("pack", "--dialect", "classic", "-o", "ctx.tar", ".", cwd=root)
    assert res.exit_code == 0, res.output
    ours = (root / "ctx.tar").read_bytes()
    shutil.move(str(root / "ctx.tar"), str(tmp_path / "ctx.tar"))  # the root has no entry: its mtime is not in the tar
    cap = docker_cli.capture(root)
    assert cap.returncode == 0, cap.stderr
    assert ours == cap.tar


# -- explain: the current directory's context, paths outside it, paths that do not exist --


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "app", ["Dockerfile", "src/main.py", "node_modules/x/index.js", "app.log"],
                     dockerignore="node_modules\n*.log\n")


def test_explain_uses_the_current_directory_as_the_context(app: Path) -> None:
    res = run("explain", "app.log", "src/main.py", "./src/../app.log", str(app / "src"), cwd=app)
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [
        "app.log: excluded by .dockerignore:2:*.log",
        "src/main.py: included: no rule",
        "app.log: excluded by .dockerignore:2:*.log",
        "src: included: no rule",
    ]


def test_explain_dash_c_names_the_context(app: Path, tmp_path: Path) -> None:
    for flag in ("-C", "--context"):
        res = run("explain", flag, str(app), "node_modules", "src/main.py", cwd=tmp_path)
        assert res.exit_code == 0, res.output
        assert res.stdout.splitlines() == ["node_modules: excluded by .dockerignore:1:node_modules",
                                           "src/main.py: included: no rule"]


def test_explain_refuses_paths_outside_the_context_and_the_empty_path(app: Path) -> None:
    res = run("explain", "/etc/passwd", "", "../elsewhere", "src/main.py", cwd=app)
    assert res.exit_code == 2
    assert res.stdout.splitlines() == ["src/main.py: included: no rule"]  # the others are explained
    err = res.stderr.splitlines()
    assert err[0] == f"ctxpack: error: /etc/passwd: outside the context {app}"
    assert err[1] == "ctxpack: error: '': an empty path is not a path in the context"
    assert err[2] == f"ctxpack: error: ../elsewhere: outside the context {app}"


def test_explain_old_form_gets_a_hint(app: Path, tmp_path: Path) -> None:
    hint = "ctxpack: hint: PATHs are relative to the context, here the current directory; to explain paths of the context {}, say: ctxpack explain -C {} PATH..."
    res = run("explain", "app", "app.log", cwd=tmp_path)  # `explain DIR PATH`, the form before -C
    assert res.exit_code == 0
    assert res.stdout.splitlines()[1] == "app.log: included: no rule (no such file or directory)"
    assert hint.format("app", "app") in res.stderr
    (tmp_path / "elsewhere").mkdir()
    res = run("explain", str(app), "app.log", cwd=tmp_path / "elsewhere")
    assert res.exit_code == 2 and hint.format(app, app) in res.stderr
    assert "hint" not in run("explain", "src", "app.log", cwd=app).stderr  # both exist here: no hint


def test_explain_says_when_a_path_does_not_exist(app: Path) -> None:
    res = run("explain", "node_modules/y", "src/new.py", ".", cwd=app)
    assert res.exit_code == 0
    assert res.stdout.splitlines() == [
        "node_modules/y: excluded: directory 'node_modules' is excluded by .dockerignore:1:node_modules"
        " and not searched for exceptions (no such file or directory)",
        "src/new.py: included: no rule (no such file or directory)",
        ".: the context directory itself: the root of the upload",
    ]


def test_explain_library_refuses_outside_paths(app: Path) -> None:
    import ctxpack
    from ctxpack.errors import ContextError

    with pytest.raises(ContextError, match="outside the context"):
        ctxpack.explain(app, ["/etc/passwd"])
    ((mine, other),) = ctxpack.explain(app, [str(app / "app.log")])
    assert mine.path == "app.log" and not mine.sent and mine.exists


# -- an unreadable file or directory: every describing command says docker would fail --


from test_permissions import CASES, _make, as_nobody, world_tmp  # noqa: E402,F401  (world_tmp is a fixture)


def _as_nobody_cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    import ctxpack.tar.writer  # noqa: F401  (imported while we can still read the interpreter's files)

    def go() -> tuple[int, str, str]:
        res = run(*args, cwd=cwd)
        return res.exit_code, res.stdout, res.stderr

    status, value = as_nobody(go)
    assert status == "ok", value
    return value


@pytest.mark.parametrize("dialect", ["classic", "buildkit"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_describing_commands_say_docker_would_fail(world_tmp: Path, case: tuple[Any, ...], dialect: str) -> None:
    name, setup, ignore, classic_err, buildkit_err = case
    root = _make(world_tmp, name, setup, ignore)
    expected = (classic_err if dialect == "classic" else buildkit_err)
    bad = ("secret" if name.startswith("file") else "foo/bar" if name.startswith("forced")
           else "parent/priv" if "parent" in name else "priv")
    for args in (["ls"], ["size"], ["explain", bad, "ok.txt"]):
        code, out, err = _as_nobody_cli(root, *args, "--dialect", dialect)
        if expected is None:
            assert code == 0, (args, err)
            assert "would fail" not in out + err
        else:
            message = expected.format(root=root)
            assert code == 2, (args, out, err)
            if args[0] == "explain":
                assert f"{bad}: " in out and f"; docker build would fail: {message}" in out
            else:
                assert f"ctxpack: error: docker build would fail: {message}" in err
                assert ("ok.txt" in out) if args[0] == "ls" else ("Sends" in out)  # the rest is still described
    code, _, err = _as_nobody_cli(root, "pack", "--dialect", dialect, "-o", os.devnull)
    assert code == (0 if expected is None else 2), err  # pack stops, as docker does


def test_every_unreadable_path_is_named_once(world_tmp: Path) -> None:
    root = _make(world_tmp, "many", lambda r: None, "")
    for rel in ("a/secret", "b/secret"):
        (root / rel).parent.mkdir()
        (root / rel).write_text("x")
        (root / rel).chmod(0)
    (root / "c").mkdir()
    (root / "c" / "f").write_text("x")
    (root / "c").chmod(0)
    code, out, err = _as_nobody_cli(root, "ls", "--dialect", "classic")
    assert code == 2
    assert err.splitlines() == [
        f"ctxpack: error: docker build would fail: no permission to read from '{root}/a/secret'",
        f"ctxpack: error: docker build would fail: no permission to read from '{root}/b/secret'",
        f"ctxpack: error: docker build would fail: can't stat '{root}/c'",
    ]
    code, out, err = _as_nobody_cli(root, "size", "--json")
    import json

    assert code == 2
    assert json.loads(out)["unreadable"] == [
        {"path": "a/secret", "error": f"open {root}/a/secret: permission denied"},
        {"path": "b/secret", "error": f"open {root}/b/secret: permission denied"},
        {"path": "c", "error": f"open {root}/c: permission denied"},
    ]


# -- size: heaviest first at every level, column headers --------------------------------


def _sized_tree(root: Path, sizes: dict[str, int]) -> Path:
    return make_tree(root, {p: b"x" * n for p, n in sizes.items()})


def test_size_tree_never_hides_a_heavy_top_level_directory(tmp_path: Path) -> None:
    # As on the Python+Angular app: src-ui/ 80% with deep sub-directories, docs/ 7.7%.
    root = _sized_tree(tmp_path / "c", {
        "Dockerfile": 100,
        "src-ui/src/app/main.ts": 600_000, "src-ui/src/assets/logo.png": 15_000, "src-ui/e2e/t.ts": 21_000,
        "src-ui/x.json": 79_000, "docs/guide.md": 77_000, "scripts/a.sh": 10_000, "README.md": 197_900,
    })
    res = run("size", "--top", "4", str(root))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Heaviest directories" in line)
    rows = [line.split()[0] for line in lines[start + 1 : start + 5]]
    assert rows == ["src-ui/", "src/", "app/", "docs/"]  # docs/ (7.7%) before src-ui/e2e/ (2.1%)
    assert lines[start].split() == ["Heaviest", "directories", "size", "files", "share"]
    res = run("size", "--top", "10", "--json", str(root))
    import json

    dirs = [(d["path"], d["depth"]) for d in json.loads(res.stdout)["directories"]]
    assert dirs == [("src-ui", 0), ("src-ui/src", 1), ("src-ui/src/app", 2),
                    ("src-ui/e2e", 1), ("docs", 0), ("scripts", 0)]


def test_size_sections_have_column_headers(tmp_path: Path) -> None:
    root = _sized_tree(tmp_path / "c", {"Dockerfile": 10, "a/b.bin": 1000, "c.log": 50})
    (root / ".dockerignore").write_text("*.log\n")
    out = run("size", str(root)).stdout
    for title, columns in (("Heaviest directories", "size files share"), ("Largest files", "size"),
                           ("By extension", "size files"), ("Kept out by rule", "size files")):
        (line,) = [x for x in out.splitlines() if x.strip().startswith(title)]
        assert line.split()[len(title.split()):] == columns.split()
    assert "  .dockerignore:1:*.log" in out


# -- a missing Dockerfile or directory: docker's words, one error style ------------------


def _docker_says(cap: Any) -> str:
    (line,) = [x for x in cap.stderr.splitlines() if x.startswith("unable to prepare context")]
    return line


@pytest.fixture
def dotnet(tmp_path: Path) -> Path:
    # A .NET solution: the Dockerfile is src/Web/Dockerfile, built with -f from the root.
    return make_tree(tmp_path / "sln", {
        "App.sln": b"", "src/Web/Dockerfile": b"FROM scratch\n", "src/Web/Web.csproj": b"<Project/>",
        "src/Web/bin/Debug/Web.dll": b"x", "src/Worker/worker.Dockerfile": b"FROM scratch\n",
        "node_modules/x/Dockerfile": b"FROM scratch\n",  # never suggested
    })


def test_pack_without_a_dockerfile_fails_as_docker_does(dotnet: Path, tmp_path: Path) -> None:
    res = run("pack", "-o", str(tmp_path / "out.tar"), ".", cwd=dotnet)
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        "ctxpack: error: unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
        f"lstat {dotnet}/Dockerfile: no such file or directory",
        "ctxpack: hint: Dockerfiles in the context: -f src/Web/Dockerfile, -f src/Worker/worker.Dockerfile",
    ]
    assert not (tmp_path / "out.tar").exists()
    ok = run("pack", "-f", "src/Web/Dockerfile", "-o", str(tmp_path / "out.tar"), ".", cwd=dotnet)
    assert ok.exit_code == 0, ok.output


def test_describing_commands_go_on_without_a_dockerfile_with_a_note(dotnet: Path) -> None:
    for cmd in ("ls", "size"):
        res = run(cmd, ".", cwd=dotnet)
        assert res.exit_code == 0
        assert (f"ctxpack: note: no Dockerfile in {dotnet}: docker build would fail; "
                "Dockerfiles in the context: -f src/Web/Dockerfile, -f src/Worker/worker.Dockerfile") in res.stderr


@pytest.mark.docker_cli
def test_missing_dockerfile_and_directory_messages_are_the_docker_clis(dotnet: Path, tmp_path: Path, docker_cli: Any) -> None:
    cap = docker_cli.capture(".", cwd=dotnet)
    assert cap.returncode != 0 and cap.tar is None
    ours = run("pack", "-o", os.devnull, ".", cwd=dotnet)
    assert ours.exit_code == 2
    assert ours.stderr.splitlines()[0] == "ctxpack: error: " + _docker_says(cap)
    cap = docker_cli.capture(".", dockerfile="src/Web/Nope", cwd=dotnet)
    ours = run("pack", "-f", "src/Web/Nope", "-o", os.devnull, ".", cwd=dotnet)
    assert ours.stderr.splitlines()[0] == "ctxpack: error: " + _docker_says(cap)
    for bad in ("./x", "x", str(tmp_path / "nope"), "App.sln"):
        cap = docker_cli.capture(bad, cwd=dotnet)
        assert cap.returncode != 0
        for cmd in ("ls", "size", "pack", "fingerprint"):
            extra = ["-o", os.devnull] if cmd == "pack" else []
            ours = run(cmd, *extra, bad, cwd=dotnet)
            assert ours.exit_code == 2, (cmd, bad)
            assert ours.stderr.splitlines() == ["ctxpack: error: " + _docker_says(cap)], (cmd, bad)
        ours = run("explain", "-C", bad, "a", cwd=dotnet)
        assert ours.stderr.splitlines() == ["ctxpack: error: " + _docker_says(cap)]


@pytest.mark.parametrize("args,message,command", [
    (["ls", "--dialect", "kaniko"], "invalid value for '--dialect': 'kaniko' is not one of 'buildkit', 'classic'", "ls"),
    (["size", "--frobnicate"], "no such option '--frobnicate'", "size"),
    (["explain"], "missing argument 'PATH...'", "explain"),
    (["size", "--top", "0"], "invalid value for '--top': 0 is not in the range 1<=x<=1000", "size"),
    (["ls", "--target", "x"], "--target, --build-arg and --platform only make sense with --minimal", "ls"),
    (["nosuch"], "no such command 'nosuch'", None),
])
def test_usage_errors_in_one_style_with_a_hint(args: list[str], message: str, command: str | None) -> None:
    res = run(*args)
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert lines[0] == f"ctxpack: error: {message}"
    path = "ctxpack" + (f" {command}" if command else "")
    assert lines[1].startswith(f"ctxpack: hint: usage: {path} [OPTIONS]") and lines[1].endswith(f"; see '{path} --help'")
    assert len(lines) == 2 and "Usage:" not in res.output and "Error:" not in res.output


def test_help_and_version_still_exit_0() -> None:
    assert run("--help").exit_code == 0 and "Usage: ctxpack" in run("--help").stdout
    assert run("ls", "--help").exit_code == 0
    assert run("--version").exit_code == 0


# -- --minimal: ADD of a URL with an ARG, platform ARGs ---------------------------------


@pytest.fixture
def go_service(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "svc", {
        "Dockerfile": (b"FROM golang AS build\nARG TARGETOS TARGETARCH\nARG TOOL_VERSION\n"
                       b"ADD https://github.com/org/tool/releases/download/${TOOL_VERSION}/tool-${TARGETARCH}.tar.gz /opt/\n"
                       b"COPY go.mod go.sum ./\nCOPY cmd/ ./cmd/\nCOPY dist/$TARGETOS/$TARGETARCH/ /out/\n"),
        "go.mod": b"module x\n", "go.sum": b"", "cmd/main.go": b"package main\n",
        "dist/linux/amd64/app": b"a", "dist/linux/arm64/app": b"b", "docs/big.pdf": b"x" * 5000,
    })


def test_minimal_keeps_going_past_an_add_url_and_uses_the_platform(go_service: Path) -> None:
    res = run("ls", "--minimal", "--platform", "linux/arm64", ".", cwd=go_service)
    assert res.exit_code == 0, res.output
    assert "sending the whole context" not in res.stderr
    assert res.stdout.splitlines() == ["cmd/", "cmd/main.go", "dist/", "dist/linux/", "dist/linux/arm64/",
                                       "dist/linux/arm64/app", "go.mod", "go.sum"]
    both = run("ls", "--minimal", "--platform", "linux/amd64,linux/arm64", ".", cwd=go_service).stdout.splitlines()
    assert "dist/linux/amd64/app" in both and "dist/linux/arm64/app" in both and "docs/big.pdf" not in both
    default = run("ls", "--minimal", ".", cwd=go_service).stdout.splitlines()
    from ctxpack.dockerfile.analysis import host_platform

    assert [p for p in default if p.endswith("/app")] == [f"dist/{host_platform()}/app"]
    assert run("ls", "--platform", "linux/arm64", ".", cwd=go_service).exit_code == 2  # only with --minimal


# -- cache: clear one context by default, info creates nothing ---------------------------


def _cache_env(tmp_path: Path) -> dict[str, str]:
    return {"CTXPACK_CACHE_DIR": str(tmp_path / "cache")}


def test_cache_info_does_not_create_the_index(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    res = run("cache", "info", env=env)
    assert res.exit_code == 0
    assert res.stdout.strip() == f"{tmp_path}/cache/{DB_NAME}: no index yet (fingerprint, snapshot, diff and pack --snapshot create it)"
    import json

    assert json.loads(run("cache", "info", "--json", env=env).stdout)["exists"] is False
    assert not (tmp_path / "cache").exists()
    assert run("cache", "clear", "--all", env=env).exit_code == 0
    assert not (tmp_path / "cache").exists()


def test_cache_clear_forgets_only_the_current_context(tmp_path: Path) -> None:
    env = _cache_env(tmp_path)
    a = make_tree(tmp_path / "a", {"Dockerfile": b"FROM scratch\n", "x": b"1"})
    b = make_tree(tmp_path / "b", {"Dockerfile": b"FROM scratch\n", "y": b"2"})
    for root in (a, b):
        assert run("snapshot", ".", cwd=root, env=env).exit_code == 0
    res = run("cache", "clear", cwd=a, env=env)
    assert res.exit_code == 0 and res.stdout.strip().startswith(f"cleared the digests and snapshot of {a}")
    assert run("diff", ".", cwd=a, env=env).exit_code == 2  # a's snapshot is gone
    assert run("diff", ".", cwd=b, env=env).exit_code == 0  # b's is kept
    assert "holds nothing for" in run("cache", "clear", str(a), env=env).stdout
    res = run("cache", "clear", "--all", cwd=a, env=env)
    assert res.exit_code == 0 and "1 contexts, 1 snapshots" in res.stdout
    assert run("diff", ".", cwd=b, env=env).exit_code == 2


def test_cache_clear_help_says_what_it_removes() -> None:
    out = " ".join(run("cache", "clear", "--help").stdout.split())
    assert "file digests" in out and "snapshot" in out and "--all" in out


def test_heavy_directory_threshold_is_relative_to_the_context() -> None:
    from ctxpack.audit import heavy_enough

    assert not heavy_enough(194_000, 40_000_000)  # the 194 kB .git of the issue
    assert not heavy_enough(194_000, 300_000)  # never below 1 MB
    assert heavy_enough(30_000_000, 60_000_000)
    assert not heavy_enough(50_000_000, 5_000_000_000)  # 1% of a 5 GB context
    assert heavy_enough(1_000_000, 1_000_000)


# -- installing: every subpackage, and nothing left in the checkout ----------------------


def test_pip_install_leaves_the_checkout_clean_and_ships_every_package(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "checkout"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "_backend", "bin", "ctxpack"):
        if (repo / name).is_dir():
            shutil.copytree(repo / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(repo / name, src / name)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    out = tmp_path / "wheels"
    # Without build isolation where the installed setuptools can make wheels (no index needed).
    import importlib.util

    isolation = ["--no-build-isolation"] if importlib.util.find_spec("wheel") else []
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before  # no build/, no ctxpack.egg-info/
    (wheel,) = out.glob("ctxpack-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(repo)) for p in (repo / "ctxpack").rglob("__init__.py")}
    assert packages <= {n.rpartition("/")[0] for n in names if n.endswith("/__init__.py")}
    assert "ctxpack/cli/app.py" in names and "ctxpack/py.typed" in names
    import ctxpack

    assert f"ctxpack-{ctxpack.__version__}.data/scripts/ctxpack" in names  # the command (bin/ctxpack: tests/test_watch_script.py runs it)


def test_size_shows_a_chain_of_single_directories_as_one_row(tmp_path: Path) -> None:
    # The .NET tree: src/Web/bin/Debug/net8.0 holds all of bin's bytes.
    root = _sized_tree(tmp_path / "c", {
        "Dockerfile": 100, "src/Web/bin/Debug/net8.0/Web.dll": 4_000_000, "src/Web/obj/Debug/net8.0/Web.pdb": 2_500_000,
        "src/Web/Program.cs": 100_000, "src/Web/wwwroot/css/site.css": 300_000, "src/Web/wwwroot/js/site.js": 200_000,
    })
    res = run("size", "--top", "5", str(root))
    lines = res.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "Heaviest directories" in line)
    assert [line.split()[0] for line in lines[start + 1: start + 5]] == [
        "src/Web/", "bin/Debug/net8.0/", "obj/Debug/net8.0/", "wwwroot/"]
    assert lines[start + 2].startswith("    bin/Debug/net8.0/")  # one level below src/Web/
    import json

    dirs = json.loads(run("size", "--json", "--top", "5", str(root)).stdout)["directories"]
    assert [(d["path"], d["depth"]) for d in dirs] == [
        ("src/Web", 0), ("src/Web/bin/Debug/net8.0", 1), ("src/Web/obj/Debug/net8.0", 1), ("src/Web/wwwroot", 1),
        ("src/Web/wwwroot/css", 2)]


def test_several_platforms_and_the_engines_platform() -> None:
    from ctxpack.dockerfile.analysis import analyze, normalize_arch
    from ctxpack.engine.builder import engine_platform

    text = "FROM alpine\nARG TARGETARCH\nCOPY dist/$TARGETARCH /app\n"
    assert analyze(text, platform="linux/amd64, linux/arm64").patterns == ["dist/amd64", "dist/arm64"]
    assert normalize_arch("x86_64") == "amd64" and normalize_arch("aarch64") == "arm64" and normalize_arch("armv7l") == "arm/v7"

    class FakeEngine:
        def __init__(self, info: dict[str, str]) -> None:
            self._info = info

        def info(self) -> dict[str, str]:
            return self._info

    assert engine_platform(FakeEngine({"Os": "linux", "Arch": "arm64"})) == "linux/arm64"  # type: ignore[arg-type]
    assert engine_platform(FakeEngine({})) is None  # type: ignore[arg-type]
