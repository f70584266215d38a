"""The package is ``mypy --strict`` clean (config: pyproject.toml [tool.mypy]),
and a user's strictly typed program sees the public API with real types
(the lazily loaded names included)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

USER_PROGRAM = '''
import io
import ctxpack
from ctxpack.compat import dockerpy

ctx: ctxpack.BuildContext = ctxpack.open_context(".", dialect="classic", minimal=False)
names: list[str] = [e.name for e in ctxpack.list_entries(ctx)]
m = ctxpack.Matcher.from_lines(["*.log"])
rule: ctxpack.Rule | None = m.match("a.log").rule
stats: ctxpack.PackStats = ctxpack.pack(ctx, ctxpack.CallbackSink(io.BytesIO().write), ctxpack.PackOptions(compress="gzip"))
chunks: list[bytes] = list(ctxpack.iter_tar(ctx))
fp: str = ctxpack.fingerprint(ctx).fingerprint
report: ctxpack.LintReport = ctxpack.lint(".")
kept: set[str] = dockerpy.exclude_paths(".", ["*.log"])
f = dockerpy.tar(".", gzip=True)
data: bytes = f.read()
try:
    pass
except ctxpack.CtxpackError as e:
    code: int = e.exit_code
'''


def _mypy() -> list[str]:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mypy is required on CI (pip install -e '.[test]')", pytrace=False)
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    return [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]


def test_package_is_mypy_strict_clean(tmp_path: Path) -> None:
    user = tmp_path / "user_program.py"
    user.write_text(textwrap.dedent(USER_PROGRAM))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MYPYPATH": str(ROOT)}
    proc = subprocess.run(
        [*_mypy(), "--cache-dir", str(tmp_path / "cache"), str(ROOT / "ctxpack"), str(user)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"mypy --strict found problems:\n{proc.stdout}{proc.stderr}"
