"""Tests of the docker CLI capture helper (tests/dockercli.py) itself."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import statistics
import tarfile
import threading
import time
from pathlib import Path

import pytest

import dockercli
from dockercli import Capture, CaptureServer, DockerCLI, DockerCLITimeout

from ctxpack.engine.fake import FakeDaemon

# Tests that run the real docker CLI (via the ``docker_cli`` fixture).
needs_cli = pytest.mark.docker_cli

RANDOM_DOCKERFILE = re.compile(r"^\.dockerfile\.[0-9a-f]{20}$")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\nCOPY . /\n",
        ".dockerignore": "*.log\nbuild/\n",
        "a.txt": "a\n",
        "debug.log": "excluded\n",
        "build/out.bin": "excluded\n",
        "sub/b.txt": "b\n",
        "sub/Dockerfile": "FROM scratch\n",
        "sub/keep.log": "not excluded: *.log only matches at the root\n",
    })


@needs_cli
def test_basic_capture(docker_cli: DockerCLI, tree: Path) -> None:
    cap = docker_cli.capture(tree).check()
    assert cap.names == [
        ".dockerignore", "Dockerfile", "a.txt",
        "sub", "sub/Dockerfile", "sub/b.txt", "sub/keep.log",
    ]
    assert cap.query == {"dockerfile": "Dockerfile", "version": "1"}
    assert not cap.compressed and cap.tar == cap.body
    assert cap.tar_complete
    assert cap.read("a.txt") == b"a\n"
    assert cap.read(".dockerignore") == b"*.log\nbuild/\n"
    assert cap.member("sub").isdir()
    assert [(r.method, r.path) for r in cap.requests] == [("HEAD", "/_ping"), ("POST", "/build")]
    build = cap.requests[-1]
    assert build.header("Content-Type") == "application/x-tar"
    # Our fake daemon's answer is what the CLI shows.
    digest = hashlib.sha256(cap.body or b"").hexdigest()
    assert f"Successfully built {digest[:12]}" in cap.stdout


@needs_cli
def test_dockerfile_and_dockerignore_always_sent(docker_cli: DockerCLI, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {
        "Dockerfile": "FROM scratch\n",
        ".dockerignore": "Dockerfile\n.dockerignore\n*\n!keep\n",
        "keep": "k\n",
        "drop": "d\n",
    })
    cap = docker_cli.capture(ctx).check()
    assert cap.names == [".dockerignore", "Dockerfile", "keep"]


@needs_cli
def test_compress_gives_gzip_body_with_same_tar(docker_cli: DockerCLI, tree: Path) -> None:
    plain = docker_cli.capture(tree).check()
    comp = docker_cli.capture(tree, extra_args=["--compress"]).check()
    assert comp.compressed and comp.body is not None
    assert comp.body[:2] == b"\x1f\x8b"
    assert comp.tar == plain.tar
    assert comp.names == plain.names


@needs_cli
def test_dockerfile_in_subdirectory(docker_cli: DockerCLI, tree: Path) -> None:
    cap = docker_cli.capture(tree, dockerfile=tree / "sub" / "Dockerfile").check()
    assert cap.query["dockerfile"] == "sub/Dockerfile"
    assert not any(RANDOM_DOCKERFILE.match(n) for n in cap.names)
    assert cap.names == docker_cli.capture(tree).check().names


@needs_cli
def test_dockerfile_outside_context(docker_cli: DockerCLI, tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "Build.dockerfile"
    outside.parent.mkdir()
    outside.write_text("FROM scratch\nLABEL outside=1\n")
    cap = docker_cli.capture(tree, dockerfile=outside).check()
    random_name = cap.query["dockerfile"]
    assert RANDOM_DOCKERFILE.match(random_name), cap.query
    assert random_name in cap.names
    assert cap.read(random_name) == outside.read_bytes()
    # The CLI appends the random name to the existing .dockerignore ...
    assert cap.read(".dockerignore") == b"*.log\nbuild/\n" + f"\n{random_name}\n".encode()
    # ... and the context's own Dockerfile is still sent.
    assert "Dockerfile" in cap.names


@needs_cli
def test_dockerfile_from_stdin(docker_cli: DockerCLI, tree: Path) -> None:
    content = b"FROM scratch\nLABEL from=stdin\n"
    cap = docker_cli.capture(tree, dockerfile="-", stdin=content).check()
    random_name = cap.query["dockerfile"]
    assert RANDOM_DOCKERFILE.match(random_name), cap.query
    assert cap.read(random_name) == content
    assert cap.member(random_name).mode == 0o600
    assert "debug.log" not in cap.names


@needs_cli
def test_dockerfile_from_stdin_without_dockerignore(docker_cli: DockerCLI, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n", "x.log": "x\n"})
    cap = docker_cli.capture(ctx, dockerfile="-", stdin=b"FROM scratch\n").check()
    random_name = cap.query["dockerfile"]
    assert cap.names[:2] == ["Dockerfile", "x.log"]
    # Both entries are appended by the CLI, in Go map (i.e. random) order.
    assert set(cap.names[2:]) == {random_name, ".dockerignore"}
    assert cap.read(".dockerignore") == f".dockerignore\n{random_name}\n".encode()
    assert cap.member(".dockerignore").mode == 0o600


@needs_cli
def test_invalid_pattern_fails_without_upload(docker_cli: DockerCLI, tmp_path: Path) -> None:
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n", ".dockerignore": "[\n"})
    cap = docker_cli.capture(ctx, timeout=30)
    assert cap.returncode != 0
    assert "syntax error in pattern" in cap.stderr
    assert cap.body is None and cap.tar is None
    assert cap.members == [] and cap.names == [] and cap.query == {}
    assert not cap.uploaded
    assert all(r.path != "/build" for r in cap.requests)
    with pytest.raises(AssertionError, match="syntax error in pattern"):
        cap.check()


@needs_cli
def test_quiet_and_repeated_tags(docker_cli: DockerCLI, tree: Path) -> None:
    cap = docker_cli.capture(tree, extra_args=["-q", "-t", "a:1", "-t", "b:2"]).check()
    digest = hashlib.sha256(cap.body or b"").hexdigest()
    assert cap.stdout.strip() == f"sha256:{digest}"
    assert [v for k, v in cap.query_items if k == "t"] == ["a:1", "b:2"]
    assert cap.query["q"] == "1"


@needs_cli
def test_cwd_and_relative_paths(docker_cli: DockerCLI, tree: Path) -> None:
    cap = docker_cli.capture(".", dockerfile="sub/Dockerfile", cwd=tree).check()
    assert cap.query["dockerfile"] == "sub/Dockerfile"
    assert "a.txt" in cap.names


@needs_cli
def test_repeated_captures_are_identical_and_fast(docker_cli: DockerCLI, tree: Path) -> None:
    durations: list[float] = []
    tars: set[bytes] = set()
    for _ in range(10):
        t0 = time.perf_counter()
        cap = docker_cli.capture(tree).check()
        durations.append(time.perf_counter() - t0)
        assert cap.tar is not None
        tars.add(cap.tar)
    median = statistics.median(durations)
    print(f"\ndocker CLI capture: median {median * 1000:.1f} ms, "
          f"min {min(durations) * 1000:.1f} ms, max {max(durations) * 1000:.1f} ms")
    assert len(tars) == 1  # byte-identical output for an unchanged tree
    assert median < 5.0


@needs_cli
def test_concurrent_captures_are_attributed_correctly(docker_cli: DockerCLI, tmp_path: Path) -> None:
    results: dict[int, Capture] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            ctx = write_tree(tmp_path / f"ctx{i}", {"Dockerfile": "FROM scratch\n", f"file{i}": ""})
            results[i] = docker_cli.capture(ctx).check()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i, cap in results.items():
        assert cap.names == ["Dockerfile", f"file{i}"]


@needs_cli
def test_stuck_cli_is_killed_on_timeout(tmp_path: Path, docker_cli: DockerCLI) -> None:
    # A daemon that accepts connections but never answers: the CLI hangs
    # waiting for the ping response.
    ctx = write_tree(tmp_path / "ctx", {"Dockerfile": "FROM scratch\n"})
    with FakeDaemon(mute=True) as blackhole:
        t0 = time.monotonic()
        with pytest.raises(DockerCLITimeout) as info:
            docker_cli.capture(ctx, timeout=1.5, env={"DOCKER_HOST": blackhole.docker_host})
        assert time.monotonic() - t0 < 10
        assert info.value.timeout == 1.5
    # The shared server is still usable afterwards.
    assert docker_cli.capture(ctx).check().names == ["Dockerfile"]


# -- server-level tests (no docker CLI needed) -------------------------------


def _raw_request(sock_path: str, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_server_content_length_and_chunked_bodies() -> None:
    with CaptureServer() as server:
        since = time.monotonic()
        body = b"x" * 1000
        resp = _raw_request(server.socket_path, (
            b"POST /v1.47/build?dockerfile=D&t=a&t=b HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + body))
        assert resp.startswith(b"HTTP/1.1 200")
        assert b'"aux": {"ID": "sha256:' + hashlib.sha256(body).hexdigest().encode() in resp
        resp = _raw_request(server.socket_path, (
            b"POST /v1.47/build HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
            b"3;ext=1\r\nabc\r\n5\r\ndefgh\r\n0\r\nX-Trailer: y\r\n\r\n"))
        assert resp.startswith(b"HTTP/1.1 200")
        resp = _raw_request(server.socket_path,
                            b"GET /v1.47/containers/json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 404")
        resp = _raw_request(server.socket_path,
                            b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"\r\n\r\nOK")
        assert b"API-Version: " + dockercli.API_VERSION.encode() in resp
        records = server.requests_since(since)
        assert [r.body for r in records[:2]] == [body, b"abcdefgh"]
        assert records[0].query_items == (("dockerfile", "D"), ("t", "a"), ("t", "b"))
        assert records[0].pid == os.getpid()


def test_server_stop_with_idle_connection_does_not_block() -> None:
    server = CaptureServer().start()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(server.socket_path)
    idle.sendall(b"POST /build HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial")
    time.sleep(0.1)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 3
    assert not server.running
    idle.close()
    server.stop()  # idempotent


def test_parse_truncated_tar() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in [("a", b"1"), ("b", b"hello")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    full = buf.getvalue()
    members, complete = dockercli._parse_tar(full)
    assert [m.name for m in members] == ["a", "b"] and complete
    # What the CLI sends for `-f -`: last member's data unpadded, no end blocks.
    truncated = full[: members[-1].offset_data + members[-1].size]
    members, complete = dockercli._parse_tar(truncated)
    assert [m.name for m in members] == ["a", "b"] and not complete
    assert dockercli._parse_tar(b"\0" * 1024) == ([], True)
