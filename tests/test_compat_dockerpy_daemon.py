"""docker-py builds against real daemons: the suite's dockerd (image contents
with and without ``install()``, the docker CLI's image as the reference), and
the memory of a 1 GB upload through docker-py with ``install()``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import dockerd as harness
from ctxpack.compat import dockerpy as compat

docker = pytest.importorskip("docker")

ROOT = Path(__file__).resolve().parent.parent

# A context on which docker-py's own matcher disagrees with Docker: its
# fnmatch is case-insensitive (so *.JPG drops c.jpg), it reads [!a] as a
# negation (Docker: a class of "!" and "a"), and it has no escapes.
FILES = {
    "c.jpg": b"lower-case jpg: Docker keeps it\n",
    "b.JPG": b"upper-case JPG: excluded by both\n",
    "bx": b"[!a]* does not match bx in Docker\n",
    "!x": b"[!a]* matches !x in Docker\n",
    "q?": b"escaped ? is a literal in Docker\n",
    "src/app.py": b"print('app')\n",
}
IGNORE = b"*.JPG\n[!a]*\nq\\?\n"
DOCKERFILE = b"FROM bb\nCOPY . /ctx/\n"


def _context(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "Dockerfile").write_bytes(DOCKERFILE)
    (root / ".dockerignore").write_bytes(IGNORE)
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _files_under_ctx(daemon: harness.Dockerd, image: str) -> dict[str, Any]:
    fs = daemon.export_fs(image, under="ctx")
    return {k: (v.type, v.data) for k, v in fs.items()}


def _dockerpy_build(daemon: harness.Dockerd, root: Path, tag: str) -> str:
    client = docker.DockerClient(base_url=f"unix://{daemon.socket}", version="auto", timeout=300)
    try:
        image, _logs = client.images.build(path=str(root), tag=tag, rm=True, nocache=True)
        return str(image.id)
    finally:
        client.close()


def _cli_build(daemon: harness.Dockerd, root: Path, tag: str, tmp: Path, *, buildkit: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=f"unix://{daemon.socket}", DOCKER_BUILDKIT="1" if buildkit else "0", DOCKER_CONFIG=str(tmp))
    # BuildKit: the engine's own 20.10 CLI, whose `docker build` is a session build.
    exe = "/usr/bin/docker" if buildkit else "docker"
    proc = subprocess.run([exe, "build", "-q", "--no-cache", "-t", tag, str(root)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_dockerpy_build_with_and_without_install(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    if not os.path.exists("/usr/local/bin/docker") and not any(
            os.access(os.path.join(p, "docker"), os.X_OK) for p in os.environ.get("PATH", "").split(":")):
        pytest.skip("no docker CLI for the reference image")
    root = _context(tmp_path / "ctx")
    cli_cfg = tmp_path / "cfg"
    cli_cfg.mkdir()
    reference = _files_under_ctx(dockerd, _cli_build(dockerd, root, "ctxpack-dpy:cli", cli_cfg))
    assert "ctx/c.jpg" in reference and "ctx/bx" in reference and "ctx/!x" not in reference

    plain = _files_under_ctx(dockerd, _dockerpy_build(dockerd, root, "ctxpack-dpy:plain"))
    assert plain != reference  # the control: docker-py's own context is not Docker's
    assert "ctx/c.jpg" not in plain

    compat.install()
    try:
        patched = _files_under_ctx(dockerd, _dockerpy_build(dockerd, root, "ctxpack-dpy:installed"))
    finally:
        compat.uninstall()
    assert patched == reference


def test_dockerpy_build_through_a_buildkit_session(dockerd: harness.Dockerd, tmp_path: Path) -> None:
    """install(builder="auto"): docker-py's images.build goes to BuildKit
    through ctxpack's session and gives the image the docker CLI's BuildKit
    build gives (BuildKit's own ignore file: Dockerfile.dockerignore)."""
    if not os.access("/usr/bin/docker", os.X_OK):
        pytest.skip("no /usr/bin/docker (the engine's CLI) for the BuildKit reference image")
    root = _context(tmp_path / "ctx")
    (root / "Dockerfile.dockerignore").write_bytes(IGNORE + b"src\n")  # BuildKit reads this one instead
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    reference = _files_under_ctx(dockerd, _cli_build(dockerd, root, "ctxpack-dpy:bk-cli", cfg, buildkit=True))
    assert "ctx/c.jpg" in reference and not any(k.startswith("ctx/src") for k in reference)

    compat.install(builder="auto")
    try:
        client = docker.DockerClient(base_url=f"unix://{dockerd.socket}", version="auto", timeout=300)
        try:
            image, logs = client.images.build(path=str(root), tag="ctxpack-dpy:bk", nocache=True,
                                              labels={"org.example.via": "ctxpack-session"})
            messages = list(logs)
        finally:
            client.close()
    finally:
        compat.uninstall()
    assert any(m.get("id") == "moby.buildkit.trace" for m in messages), "not a BuildKit build"
    assert _files_under_ctx(dockerd, str(image.id)) == reference
    assert image.labels.get("org.example.via") == "ctxpack-session"
    assert "ctxpack-dpy:bk" in image.tags


UPLOAD = '''
import os, sys, time
sys.path.insert(0, {bench!r})
from discard_server import DiscardServer

def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024

import docker
import ctxpack.compat.dockerpy as cp
{install}
with DiscardServer() as server:
    client = docker.APIClient(base_url=server.docker_host, version="1.47", timeout=600)
    before = hwm()
    started = time.monotonic()
    for _ in client.build(path={root!r}, gzip={gzip}):
        pass
    elapsed = time.monotonic() - started
    uploads = server.take_uploads()
print(before, hwm(), uploads[-1][0], round(elapsed, 2))
'''


def _upload(root: Path, install: bool, gzip: bool = False) -> tuple[int, int, int, float]:
    code = textwrap.dedent(UPLOAD).format(bench=str(ROOT / "bench"), root=str(root), gzip=gzip,
                                          install="cp.install()" if install else "")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    before, peak, sent, elapsed = proc.stdout.split()
    return int(before), int(peak), int(sent), float(elapsed)


def test_one_gigabyte_upload_through_dockerpy_keeps_memory_flat(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "Dockerfile").write_bytes(b"FROM scratch\n")
    with open(root / "disk.img", "wb") as f:  # sparse: no disk, but 1 GiB to read and send
        f.truncate(1 << 30)
    for i in range(200):
        (root / f"f{i:03}.txt").write_bytes(b"x" * 1000)
    before, peak, sent, elapsed = _upload(root, install=True)
    assert sent > 1 << 30
    # A flat stream: a few MiB of chunks in flight, whatever the context's size.
    assert peak - before < 64, f"peak RSS grew by {peak - before} MiB while uploading 1 GiB (before {before} MiB)"
    print(f"1 GiB through docker-py + install(): RSS {before} -> {peak} MiB, {sent} bytes, {elapsed} s")
