"""Unreadable files and directories (semantics note §7), per dialect, checked
against the docker CLI run as an unprivileged user.

Root reads everything, so both ctxpack and docker run as ``nobody`` here:
ctxpack in a forked child that drops privileges, docker through ``setpriv``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ctxpack
from ctxpack.cli import main
from dockercli import CaptureServer, docker_cli_missing_reason
from privileges import NOBODY, as_nobody

ON_CI = os.environ.get("CI", "").lower() == "true"


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if ON_CI:
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def world_tmp() -> Iterator[Path]:
    _need(hasattr(os, "fork") and os.geteuid() == 0, "needs root to drop privileges to nobody")
    d = Path(tempfile.mkdtemp(prefix="ctxpack-perm-"))
    os.chmod(d, 0o755)
    yield d
    for dirpath, dirnames, _ in os.walk(d):
        for n in dirnames:
            os.chmod(os.path.join(dirpath, n), 0o755)
    shutil.rmtree(d, ignore_errors=True)


def _unreadable_file(root: Path, rel: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("x")
    p.chmod(0)


def _unreadable_dir(root: Path, rel: str) -> None:
    p = root / rel
    p.mkdir(parents=True)
    (p / "f").write_text("x")
    p.chmod(0)


# (name, setup, .dockerignore, classic error or None, buildkit error or None)
CASES = [
    ("file_kept", lambda r: _unreadable_file(r, "secret"), "", "no permission to read from '{root}/secret'", "open {root}/secret: permission denied"),
    ("file_excluded", lambda r: _unreadable_file(r, "secret"), "secret\n", None, None),
    ("dir_excluded_by_name", lambda r: _unreadable_dir(r, "priv"), "priv\n", "can't stat '{root}/priv'", None),
    ("dir_excluded_by_glob", lambda r: _unreadable_dir(r, "priv"), "pri*\n", "can't stat '{root}/priv'", None),
    ("dir_under_excluded_parent", lambda r: _unreadable_dir(r, "parent/priv"), "parent\n", None, None),
    ("dir_kept", lambda r: _unreadable_dir(r, "priv"), "", "can't stat '{root}/priv'", "open {root}/priv: permission denied"),
    # An excluded directory that an exception makes the walkers read, but
    # unreadable (issue 16; moby/patternmatcher + fsutil tables): BuildKit
    # skips it (fsutil filter.go, TestWalkerPermissionDenied); the classic
    # CLI's validation never enters `foo` (MOPM prunes it) and its tar step
    # logs "Tar: Can't stat file" and uploads the rest ...
    ("forced_dir_under_excluded_parent", lambda r: _unreadable_dir(r, "foo/bar"), "foo\n!foo/bar/baz\n", None, None),
    # ... while with `**/bar` the validation lists `foo` and fails on `foo/bar`.
    ("forced_dir_excluded_by_glob", lambda r: _unreadable_dir(r, "foo/bar"), "**/bar\n!foo/bar/baz\n",
     "can't stat '{root}/foo/bar'", None),
]


def _make(base: Path, name: str, setup: Callable[[Path], None], ignore: str) -> Path:
    root = base / name
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / ".dockerignore").write_text(ignore)
    (root / "ok.txt").write_text("fine")
    setup(root)
    return root


@pytest.mark.parametrize("dialect", ["classic", "buildkit"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_unreadable(world_tmp: Path, case: tuple[Any, ...], dialect: str) -> None:
    name, setup, ignore, classic_err, buildkit_err = case
    root = _make(world_tmp, name, setup, ignore)
    expected = classic_err if dialect == "classic" else buildkit_err

    def listing() -> list[str]:
        return [e.name for e in ctxpack.list_entries(ctxpack.open_context(root, dialect=dialect))]

    status, value = as_nobody(listing)
    if expected is None:
        assert status == "ok", value
        assert "ok.txt" in value
    else:
        assert status == "error"
        assert "ContextError" in value and expected.format(root=root) in value


@pytest.mark.docker_cli
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_unreadable_matches_docker_cli(world_tmp: Path, case: tuple[Any, ...]) -> None:
    reason = docker_cli_missing_reason()
    _need(reason is None, f"docker CLI unavailable: {reason}")
    _need(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed to run docker as nobody")
    name, setup, ignore, classic_err, _ = case
    root = _make(world_tmp, name, setup, ignore)
    sockdir = tempfile.mkdtemp(prefix="ctxpack-sock-")
    os.chmod(sockdir, 0o755)
    cfg = tempfile.mkdtemp(prefix="ctxpack-cfg-")
    os.chmod(cfg, 0o777)
    with CaptureServer(socket_dir=sockdir) as srv:
        os.chmod(srv.socket_path, 0o777)
        docker = shutil.which("docker")
        assert docker
        proc = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", docker, "build", str(root)],
            env={"DOCKER_BUILDKIT": "0", "DOCKER_HOST": srv.docker_host, "DOCKER_CONFIG": cfg, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        records = srv.take()
    shutil.rmtree(sockdir, ignore_errors=True)
    shutil.rmtree(cfg, ignore_errors=True)
    if classic_err is None:
        assert proc.returncode == 0, proc.stderr
        uploaded = [r for r in records if r.path == "/build"]
        assert len(uploaded) == 1
        docker_names = [m.name + ("/" if m.isdir() else "") for m in tarfile.open(fileobj=io.BytesIO(uploaded[0].body))]
        status, ours = as_nobody(lambda: [e.name for e in ctxpack.list_entries(ctxpack.open_context(root, dialect="classic"))])
        assert status == "ok", ours
        assert ours == docker_names
    else:
        assert proc.returncode != 0
        assert classic_err.format(root=root) in proc.stderr


def test_cli_reports_unreadable_path_with_exit_2(world_tmp: Path) -> None:
    root = _make(world_tmp, "cli", lambda r: _unreadable_file(r, "secret"), "")

    def run() -> tuple[int, str]:
        res = CliRunner().invoke(main, ["ls", "--dialect", "classic", str(root)])
        return res.exit_code, res.output

    status, value = as_nobody(run)
    assert status == "ok", value
    code, output = value
    assert code == 2
    assert f"no permission to read from '{root}/secret'" in output


def test_cli_warns_where_the_docker_cli_only_logs(world_tmp: Path) -> None:
    root = _make(world_tmp, "warn", lambda r: _unreadable_dir(r, "foo/bar"), "foo\n!foo/bar/baz\n")

    def run() -> tuple[int, str, str]:
        res = CliRunner().invoke(main, ["ls", "--dialect", "classic", str(root)])
        return res.exit_code, res.stdout, res.stderr

    status, value = as_nobody(run)
    assert status == "ok", value
    code, out, err = value
    assert code == 0, err
    assert out.split() == [".dockerignore", "Dockerfile", "ok.txt"]
    assert "foo/bar: cannot read the directory (permission denied)" in err and "Tar: Can't stat file" in err
