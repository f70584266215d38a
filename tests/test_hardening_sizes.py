"""Contexts at the size extremes (issue 16): nesting deeper than ``PATH_MAX``.

A directory chain whose absolute path passes the kernel's ``PATH_MAX``
(4096 bytes with the NUL) cannot be sent by the docker CLI: its validation
walk ``lstat``s full paths and stops with ``error checking context: lstat
PATH: file name too long``.  BuildKit's fsutil walker uses full paths too.
ctxpack decides as Docker does for what it sends: every command stops at the
same first path (``ls``, ``size``, ``fingerprint``, ``pack``: exit 2 naming
it; ``lint``: an ``unreadable`` finding, exit 1; ``pack -o`` leaves no
file).  The 1M-entry directory and the 8 GiB sparse file are measured by
``bench/bench_extremes.py`` (peak RSS), too slow for the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trees import make_chain, remove_chain

ROOT = Path(__file__).resolve().parents[1]
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")  # 4096 on Linux, the NUL included


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A context with ``a.txt`` and a chain of one-letter directories
    crossing ``PATH_MAX`` by a few levels (some 2,000: deep enough for any
    recursion to show); yields it and the first absolute path the kernel
    refuses.  Shared: making and removing the chain is most of the cost."""
    ctx = tmp_path_factory.mktemp("deep") / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (ctx / "a.txt").write_text("a\n")
    base = len(os.fsencode(ctx))
    depth = (PATH_MAX - base) // 2 + 3
    make_chain(ctx, depth)
    # ctx/d (base+2), ctx/d/d (base+4), ...: the first one of PATH_MAX bytes.
    k = next(k for k in range(1, depth + 1) if base + 2 * k >= PATH_MAX)
    first = str(ctx) + "/d" * k
    try:
        yield ctx, first
    finally:
        remove_chain(ctx)


def ctxpack(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTXPACK_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", [["ls"], ["size"], ["fingerprint"], ["pack", "--compress", "gzip"]])
def test_nesting_past_path_max_fails_naming_the_first_path(deep: tuple[Path, str], command: list[str],
                                                            tmp_path: Path) -> None:
    ctx, first = deep
    out = tmp_path / "out.tar"
    extra = ["-o", str(out)] if command[0] == "pack" else []
    p = ctxpack(*command, *extra, str(ctx), cache=tmp_path / "cache")
    assert p.returncode == 2, p.stderr[-500:]
    assert f"'{first}'" in p.stderr and "File name too long" in p.stderr, p.stderr[-300:]
    assert f"'{first}/d'" not in p.stderr  # the first such path, not a deeper one
    assert "Traceback" not in p.stderr
    assert not out.exists() and not list(tmp_path.glob("out.tar*"))  # nothing partial left


def test_nesting_past_path_max_is_a_lint_finding(deep: tuple[Path, str], tmp_path: Path) -> None:
    ctx, first = deep
    p = ctxpack("lint", str(ctx), cache=tmp_path / "cache")
    assert p.returncode == 1, p.stdout[-500:] + p.stderr[-500:]
    rel = first[len(str(ctx)) + 1:]
    assert f"{rel}: error: docker fails on this path" in p.stdout and "[unreadable]" in p.stdout, p.stdout[-500:]


@pytest.mark.docker_cli
def test_the_docker_cli_fails_on_the_same_path(deep: tuple[Path, str]) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from dockercli import capture_context, docker_cli_missing_reason

    reason = docker_cli_missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    ctx, first = deep
    cap = capture_context(ctx)
    assert cap.returncode != 0 and not cap.uploaded
    assert f"error checking context: lstat {first}: file name too long" in cap.stderr, cap.stderr[-300:]


def _peak_rss_kib(argv: list[str], env: dict[str, str]) -> int:
    """GNU time's %M for ``argv`` (its own and its reaped children's peak)."""
    import tempfile

    if not os.access("/usr/bin/time", os.X_OK):
        pytest.skip("needs GNU time (/usr/bin/time) to measure peak RSS")
    with tempfile.NamedTemporaryFile("r") as out:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name, *argv], env=env, timeout=1800,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr[-500:]
        return int(out.read().split()[-1])


@pytest.mark.big
def test_memory_stays_flat_at_the_extremes(tmp_path: Path) -> None:
    """An 8.5 GiB sparse file costs pack and fingerprint no more memory than
    an empty context; a 200k-entry directory costs ``ls``, ``pack``, ``size``
    and ``lint`` less per name than the docker CLI's 379 bytes
    (bench/results/extremes.md)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTXPACK_CACHE_DIR": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "ctxpack.cli"]
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "Dockerfile").write_text("FROM scratch\n")
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    (sparse / "Dockerfile").write_text("FROM scratch\n")
    with open(sparse / "huge.bin", "wb") as f:
        f.truncate(int(8.5 * (1 << 30)))
    wide = tmp_path / "wide"
    (wide / "many").mkdir(parents=True)
    (wide / "Dockerfile").write_text("FROM scratch\n")
    n = 200_000
    fd = os.open(wide / "many", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(n):
            os.close(os.open(f"f{i:07d}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    for command in (["pack", "--compress", "zstd"], ["fingerprint"]):
        base = _peak_rss_kib([*cli, *command, str(tiny)], env)
        assert _peak_rss_kib([*cli, *command, str(sparse)], env) < base + 16 * 1024, command
    for command in (["ls"], ["pack"], ["size"], ["lint"]):
        base = _peak_rss_kib([*cli, *command, str(tiny)], env)
        per_name = (_peak_rss_kib([*cli, *command, str(wide)], env) - base) * 1024 / n
        assert per_name < 379, (command, per_name)
