"""The public API holds (issue 11): ``__all__`` is pinned; importing every
submodule changes no public name; the README's library examples run, after
every submodule has been imported; the version is written once."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import tarfile
import io
from pathlib import Path
from typing import Any

import pytest

import ctxpack
from dockercli import CaptureServer

ROOT = Path(__file__).resolve().parent.parent

# Changing this list is an API change: say so in CHANGELOG.md.
PUBLIC = [
    "BuildContext", "ChangedDuringReadError", "ClosedPipeError", "ContextError", "CtxpackError",
    "Decision", "Dialect", "DockerfileError", "DockerfileSyntaxError", "Entry", "EntryKind",
    "Explanation", "IgnoreFileError", "InputError", "InternalError", "Matcher", "OutputError",
    "PatternError", "RawRule", "Rule", "TransportError", "explain", "explain_path", "list_entries",
    "open_context", "parse_ignore", "parse_lines", "read_ignore_file", "walk", "walk_all",
    # loaded on first use
    "pack", "iter_tar", "PackOptions", "PackStats", "Sink", "FdSink", "CallbackSink",
    "fingerprint", "snapshot", "diff", "Fingerprint", "Delta", "Change", "lint", "LintReport",
    "Finding", "analyze", "parse_dockerfile", "size", "SizeReport",
    "build", "BuildOptions", "BuildResult", "Engine",
]


def all_submodules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(ctxpack.__path__, prefix="ctxpack."):
        names.append(info.name)
    return sorted(names)


def test_all_is_pinned() -> None:
    assert sorted(ctxpack.__all__) == sorted(PUBLIC)
    assert len(set(ctxpack.__all__)) == len(ctxpack.__all__)


def test_every_public_name_is_documented_and_typed() -> None:
    for name in ctxpack.__all__:
        obj = getattr(ctxpack, name)
        assert inspect.getdoc(obj), f"ctxpack.{name} has no docstring"
        if inspect.isfunction(obj):
            hints = obj.__annotations__
            params = [p for p in inspect.signature(obj).parameters if p not in ("self", "cls")]
            assert "return" in hints and all(p in hints for p in params), f"ctxpack.{name} is not fully typed"
    assert (ROOT / "ctxpack" / "py.typed").exists()


def test_importing_every_submodule_changes_no_public_name() -> None:
    before = {name: getattr(ctxpack, name) for name in ctxpack.__all__}
    mods = all_submodules()
    assert "ctxpack.compat.dockerpy" in mods and "ctxpack.cli.app" in mods
    for mod in mods:
        importlib.import_module(mod)
    for name in ctxpack.__all__:
        value = getattr(ctxpack, name)
        assert not inspect.ismodule(value), f"ctxpack.{name} became a module after importing the submodules"
        assert value is before[name], name
    # No module shares its name with a public function (issue 11).
    leaves = {m.rsplit(".", 1)[-1] for m in mods}
    assert not leaves & {n for n in ctxpack.__all__ if callable(getattr(ctxpack, n)) and n[0].islower()}


def test_packages_installed_are_the_packages_on_disk() -> None:
    # `pip install .` must carry every subpackage (not only the top level).
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=["ctxpack*"]))
    on_disk = {m for m in all_submodules() if (ROOT / m.replace(".", "/") / "__init__.py").exists()} | {"ctxpack"}
    assert found == on_disk
    text = (ROOT / "pyproject.toml").read_text()
    assert '[tool.setuptools.packages.find]' in text and 'include = ["ctxpack*"]' in text


def _readme_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def _example_context(root: Path) -> Path:
    (root / "node_modules").mkdir(parents=True)
    (root / "node_modules" / "x.js").write_text("x")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "notes.md").write_text("n\n")
    (root / ".dockerignore").write_text("node_modules\n*.md\n")
    (root / "Dockerfile").write_text(
        "FROM busybox AS build\nARG APP\nCOPY src/ /src/\n"
        "FROM busybox AS runtime\nCOPY --from=build /src /app\nCOPY src/${APP}.py /x.py\n"
    )
    return root


def test_readme_library_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in all_submodules():  # the defect of issue 11: examples broke after this
        importlib.import_module(mod)
    blocks = _readme_blocks("Library")
    assert blocks, "README has no python example under '## Library'"
    ctx_dir = _example_context(tmp_path / "ctx")
    monkeypatch.chdir(ctx_dir)
    # `ctxpack.build` talks to the engine the docker CLI would use: here a
    # fake one that records the upload (tests/dockercli.py).
    server = CaptureServer().start()
    monkeypatch.setenv("DOCKER_HOST", server.docker_host)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    sent: list[bytes] = []
    out = io.StringIO()
    namespace: dict[str, Any] = {"send": sent.append, "print": lambda *a, **k: print(*a, file=out, **k)}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
        assert [r.path for r in server.requests_since(0.0) if r.method == "POST"][-1:] == ["/build"]
    finally:
        server.stop()
    import gzip

    names = tarfile.open(fileobj=io.BytesIO(gzip.decompress(b"".join(sent)))).getnames()
    assert names == [".dockerignore", "Dockerfile", "src", "src/app.py"]
    printed = out.getvalue()
    assert "excluded by .dockerignore:1:node_modules" in printed
    assert re.search(r"^[0-9a-f]{16,}$", printed, re.M), printed  # the fingerprint


def test_one_version_everywhere() -> None:
    version = ctxpack.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc|\.dev)\d+)?", version)
    proc = subprocess.run([sys.executable, "-m", "ctxpack", "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"ctxpack, version {version}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "ctxpack.__version__"' in pyproject
    assert not re.search(r'^version\s*=\s*"', pyproject, re.M)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## \[?(\d+\.\d+\.\d+\S*?)\]?(?:\s|$)", changelog, re.M)
    assert first and first.group(1) == version, "CHANGELOG.md's newest entry is not ctxpack.__version__"
