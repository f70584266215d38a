"""Special files and links never block or leak (issue 16): FIFOs, sockets,
symlink loops, absolute links and links out of the context, through every
command that describes or sends the context.  Each command runs in a child
process under a timeout: a FIFO opened for reading would block forever."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MARKER = b"OUTSIDE-SECRET-7f3a9c"
COMMANDS = [
    ["ls"], ["ls", "--excluded"], ["ls", "--dialect", "classic"], ["size"], ["size", "--json"], ["lint"],
    ["fingerprint"], ["snapshot"], ["explain", "fifo", "loop", "abs", "out"],
    ["pack", "-o", "{out}"], ["pack", "--dialect", "classic", "-o", "{out}"], ["pack", "--minimal", "-o", "{out}"],
]


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(MARKER)
    root = tmp_path / "ctx"
    (root / "sub").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    (root / "sub" / "ok.txt").write_text("fine")
    os.mkfifo(root / "fifo")
    os.mkfifo(root / "sub" / "fifo2")
    os.symlink("loop", root / "loop")  # a link to itself
    os.symlink(str(outside / "secret.txt"), root / "abs")
    os.symlink("../outside/secret.txt", root / "out")
    os.symlink("../outside", root / "outdir")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    return root


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_no_command_blocks_or_reads_outside(hostile: Path, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "out.tar"
    argv = [a.format(out=out) for a in args]
    if argv[0] == "explain":
        argv = ["explain", "-C", str(hostile), *argv[1:]] if _explain_takes_c() else ["explain", str(hostile), *argv[1:]]
    else:
        argv = [*argv, str(hostile)]
    env = {**os.environ, "CTXPACK_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "ctxpack.cli", *argv], capture_output=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode in (0, 1), proc.stderr.decode(errors="replace")
    assert MARKER not in proc.stdout and MARKER not in proc.stderr
    if out.exists():
        data = out.read_bytes()
        assert MARKER not in data  # links are stored as links, never followed
        if "--minimal" not in args:
            assert b"../outside/secret.txt" in data  # ... and stored


def _explain_takes_c() -> bool:
    proc = subprocess.run([sys.executable, "-m", "ctxpack.cli", "explain", "--help"], capture_output=True, text=True)
    return "--context" in proc.stdout or "-C" in proc.stdout
