"""``ctxpack build``: the defects a real-user trial found (issue 12,
/work/trial-findings.md), each pinned on the fake daemon
(:class:`ctxpack.engine.fake.FakeDaemon`) or on mock engines; the docker CLI
28's words where it refuses something itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxpack.engine.builder import BuildOptions, build, choose_compression, zstd_refusal
from ctxpack.engine.client import Engine
from ctxpack.engine.fake import FakeDaemon
from ctxpack.engine.messages import error_message, message_error, printable
from ctxpack.engine.reference import reference_error
from ctxpack.engine.transport import MockResponse, MockTransport, Request
from ctxpack.errors import DockerfileError, InputError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDaemon]:
    with FakeDaemon() as d:
        yield d


def run(*args: str, cwd: Path, host: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTXPACK_CACHE_DIR=str(cwd.parent / "cache"))
    env.pop("CTXPACK_WATCH", None)
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", "build", "-H", host, *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=timeout)


def tree(tmp: Path, dockerfile: str | None = "FROM bb:latest\nCOPY . /app\n") -> Path:
    root = tmp / "ctx"
    root.mkdir()
    (root / "a.txt").write_text("hi\n")
    if dockerfile is not None:
        (root / "Dockerfile").write_text(dockerfile)
    return root


def builds(d: FakeDaemon) -> int:
    return sum(1 for r in d.take() if r.path == "/build")


# --------------------------------------------------------------------------
# 14, 15, 16, 19: refused before anything is sent, exit 2 (3 for --iidfile)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name, why", [
    ("bb", None), ("localhost:5000/x/y:1", None), ("Foo.com/x", None), ("a--b", None), ("X.com:5/a:B", None),
    ("Bad Tag", "invalid reference format: repository name (library/Bad Tag) must be lowercase"),
    ("UPPER:tag", "invalid reference format: repository name (library/UPPER) must be lowercase"),
    ("ab/CD", "invalid reference format: repository name (ab/CD) must be lowercase"),
    ("my.reg/AB", "invalid reference format: repository name (AB) must be lowercase"),
    ("a:b:c", "invalid reference format"), ("", "invalid reference format"), ("x:", "invalid reference format"),
    ("a-", "invalid reference format"), ("-a", "invalid reference format"), ("x:-y", "invalid reference format"),
    ("a" * 300, "repository name must not be more than 255 characters"),
    ("f" * 64, f"invalid repository name ({'f' * 64}), cannot specify 64-byte hexadecimal strings"),
    ("x@sha256:" + "0" * 32, "invalid checksum digest length"), ("x@sha256:" + "0" * 64, None),
    ("x@md5:" + "0" * 64, "unsupported digest algorithm"),
])
def test_tag_checked_like_the_docker_cli(name: str, why: str | None) -> None:
    # Each expected text is what `docker build -t NAME` (CLI 28) printed after
    # 'invalid argument "NAME" for "-t, --tag" flag: ' on this machine.
    assert reference_error(name) == why


def test_bad_tag_and_build_arg_refused_before_connecting(tmp_path: Path, fake: FakeDaemon) -> None:
    root = tree(tmp_path)
    fake.take()
    p = run("-t", "Bad Tag", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 2, p.stderr
    assert ('invalid argument "Bad Tag" for "-t, --tag" flag: invalid reference format: repository name '
            '(library/Bad Tag) must be lowercase') in p.stderr
    assert "sent" not in p.stderr and builds(fake) == 0
    p = run("--build-arg", "=x", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 2 and 'invalid argument "=x" for "--build-arg" flag: invalid environment variable: =x' in p.stderr
    assert builds(fake) == 0


def test_iidfile_in_a_missing_directory_refused_before_building(tmp_path: Path, fake: FakeDaemon) -> None:
    root = tree(tmp_path)
    fake.take()
    p = run("-q", "--iidfile", str(tmp_path / "none" / "iid"), ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 3, p.stderr
    assert f"--iidfile {tmp_path / 'none' / 'iid'}" in p.stderr and ".tmp" not in p.stderr
    assert builds(fake) == 0
    p = run("-q", "--iidfile", "iid", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 0 and (root / "iid").read_text() == p.stdout.strip()


def test_no_dockerfile_refused_before_connecting(tmp_path: Path, fake: FakeDaemon) -> None:
    root = tree(tmp_path, dockerfile=None)
    (root / "sub").mkdir()
    (root / "sub" / "Dockerfile").write_text("FROM bb:latest\n")
    fake.take()
    for extra in ([], ["--builder", "buildkit"]):
        p = run(*extra, ".", cwd=root, host=fake.docker_host)
        assert p.returncode == 2, p.stderr
        assert (f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat "
                f"{root}/Dockerfile: no such file or directory") in p.stderr
        assert "-f sub/Dockerfile" in p.stderr and "sent" not in p.stderr
        assert fake.take() == []  # not even /_ping
    with pytest.raises(DockerfileError, match="lstat .*/Dockerfile: no such file"):
        build(str(root), Engine.connect(fake.docker_host), BuildOptions(record_snapshot=False))
    assert fake.take() == []


# --------------------------------------------------------------------------
# 20: --compress zstd to an engine that cannot read it; binary in errors
# --------------------------------------------------------------------------


def mock_engine(version: str, api: str) -> Engine:
    def handler(req: Request) -> MockResponse:
        path = req.url.split("?")[0]
        if path.endswith("/_ping"):
            return MockResponse(200, b"OK", {"Api-Version": api})
        if path.endswith("/version"):
            return MockResponse(200, json.dumps({"Version": version, "ApiVersion": api}).encode())
        raise AssertionError(f"nothing else may be asked: {req.url}")

    return Engine(MockTransport(handler, local=True))


def test_zstd_refused_where_the_engine_cannot_read_it(tmp_path: Path) -> None:
    old = mock_engine("20.10.24", "1.41")
    with pytest.raises(InputError) as info:
        choose_compression(old, "classic", "zstd")
    assert str(info.value) == ("--compress zstd: Engine 20.10.24 (API 1.41) cannot read a zstd context (it needs "
                               "Engine >= 23.0, API >= 1.42 and the classic builder); use gzip")
    assert info.value.exit_code == 2
    new = mock_engine("24.0.7", "1.43")
    assert choose_compression(new, "classic", "zstd") == ("zstd", None)
    with pytest.raises(InputError, match="the BuildKit builder cannot read a zstd context"):
        choose_compression(new, "buildkit", "zstd")
    assert zstd_refusal({"Version": "ctxpack-fake"}, "classic") is None  # unknown: a note, the engine decides
    root = tree(tmp_path)
    with pytest.raises(InputError, match="use gzip"):  # build() asks nothing beyond ping and version
        build(str(root), old, BuildOptions(compress="zstd", record_snapshot=False, builder="classic"))


def test_engine_errors_never_print_binary(tmp_path: Path) -> None:
    from ctxpack.errors import BuildFailedError

    zstd_echo = "failed to solve with frontend dockerfile.v0: dockerfile parse error line 1: unknown instruction: " \
                "(\ufffd/\ufffd\x00X\\\ufffd\x01\x02\x03\x04\x05\x06\x07\x08abc"
    assert message_error({"error": zstd_echo}) == zstd_echo  # the data as sent (tests/dockerd.py records it)
    root = tree(tmp_path)
    with pytest.raises(BuildFailedError) as info:
        build(str(root), answering([{"error": zstd_echo, "errorDetail": {"message": zstd_echo}}]),
              BuildOptions(builder="buildkit", session=False, record_snapshot=False))
    text = str(info.value)
    assert text.startswith("failed to solve with frontend dockerfile.v0: dockerfile parse error")
    assert text.endswith("characters of binary data left out]") and "\ufffd" not in text and "\x00" not in text
    assert error_message(json.dumps({"message": "archive/tar: invalid tar header"}).encode()) == \
        "archive/tar: invalid tar header"
    assert printable("a \x1b[31m b\n") == "a \\x1b[31m b\n"


# --------------------------------------------------------------------------
# 3, 14: the upload summary says what was sent, or nothing; 7, 8, 18
# --------------------------------------------------------------------------


def test_upload_summary_of_a_stopped_upload() -> None:
    from ctxpack.engine.builder import UploadStats
    from ctxpack.engine.progress import upload_progress, upload_summary

    half = UploadStats(files=1, bytes=134_217_728, wire_bytes=201_300_000, seconds=1.5, total_files=1,
                       total_bytes=419_400_000, total_wire=419_401_536)
    assert upload_summary(half) == "upload stopped after 201.3 MB of 419.4 MB (47%)"  # the wire's counter
    gz = UploadStats(bytes=201_300_000, wire_bytes=50_000_000, seconds=1.5, total_bytes=419_400_000, compression="gzip")
    assert upload_summary(gz) == "upload stopped after 201.3 MB of 419.4 MB (47%)"  # the content's counter
    assert upload_summary(UploadStats(wire_bytes=7_000_000, seconds=0.1)) == "upload stopped after 7.0 MB"
    assert upload_summary(UploadStats(seconds=0.3)) is None  # nothing sent: no "0 files (0 B) ... MB/s"
    # The live line: amount and rate from the same counter, no rate before it moves.
    assert upload_progress(UploadStats(seconds=0.3, total_wire=4_600_000)) == "0 B of 4.6 MB (0%)"
    assert upload_progress(UploadStats(bytes=0, wire_bytes=2_300_000, seconds=1.0, total_bytes=4_000_000,
                                       total_wire=4_600_000)) == "2.3 MB of 4.6 MB (50%), 2.3 MB/s"
    assert upload_progress(gz) == "201.3 MB of 419.4 MB (47%), 134.2 MB/s"
    done = UploadStats(files=2, bytes=2_000_000, wire_bytes=2_002_048, seconds=1.0, done=True)
    assert upload_summary(done) == "sent 2 files (2.0 MB) in 1.0s, 2.0 MB/s"


def test_renderers_after_an_interrupted_upload() -> None:
    import io

    from ctxpack.engine.builder import UploadStats
    from ctxpack.engine.progress import make_renderer

    for mode in ("plain", "tty"):
        err = io.StringIO()
        r = make_renderer(mode, out=io.StringIO(), err=err)
        r.upload(UploadStats(seconds=0.3, total_bytes=419_400_000, total_wire=419_401_536))
        r.finish()
        assert "sent" not in err.getvalue() and "/s" not in err.getvalue().split("\n")[-1], err.getvalue()
        err = io.StringIO()
        r = make_renderer(mode, out=io.StringIO(), err=err)
        r.upload(UploadStats(files=1, bytes=134_217_728, wire_bytes=201_300_000, seconds=1.5,
                             total_bytes=419_400_000, total_wire=419_401_536))
        r.finish()
        assert "upload stopped after 201.3 MB of 419.4 MB (47%)" in err.getvalue()
        assert "Context sent" not in err.getvalue() and "sent 1 file" not in err.getvalue()


def test_tty_session_summary_has_no_context_prefix() -> None:
    import io
    from types import SimpleNamespace

    from ctxpack.engine.builder import UploadStats
    from ctxpack.engine.progress import make_renderer

    err = io.StringIO()
    r = make_renderer("tty", out=io.StringIO(), err=err)
    st = UploadStats(files=1, bytes=3700, wire_bytes=9600, compression="session",
                     session=SimpleNamespace(files_requested=1, data_bytes=3700, bytes_out=9600, bytes_in=10))
    r.upload(st)
    r.finish()
    assert "[+] BuildKit session: the engine requested 1 file (3.7 kB), 9.6 kB sent in all" in err.getvalue()
    assert "Context BuildKit" not in err.getvalue()


def test_quiet_json_prints_the_id(tmp_path: Path, fake: FakeDaemon) -> None:
    root = tree(tmp_path)
    p = run("-q", "--progress", "json", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("sha256:") and p.stdout.count("\n") == 1 and p.stderr == ""
    p = run("--progress", "json", ".", cwd=root, host=fake.docker_host)  # without -q: the JSON lines
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1])["id"] == "ctxpack.build"


def test_classic_build_does_not_warn_about_an_excluded_dockerfile(tmp_path: Path, fake: FakeDaemon) -> None:
    from ctxpack.context import open_context
    from ctxpack.tar.rows import WARN, builder_rows

    root = tree(tmp_path)
    (root / ".dockerignore").write_text("node_modules\nDockerfile\n")
    p = run("--builder", "classic", "--full", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 0, p.stderr
    assert "travels in the tar" not in p.stderr  # the classic daemon drops it again: not true here
    warned = {d: [r[0] for r in builder_rows(open_context(str(root), dialect=d)) if r[1] == WARN]
              for d in ("classic", "buildkit")}
    assert warned["classic"] == []
    assert len(warned["buildkit"]) == 1 and "COPY . sees it" in warned["buildkit"][0]  # true there: kept


# --------------------------------------------------------------------------
# 1: `ctxpack diff` after a (classic) build compares with that build
# --------------------------------------------------------------------------


def ctxpack(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTXPACK_CACHE_DIR=str(cwd.parent / "cache"), CTXPACK_WATCH="0")
    return subprocess.run([sys.executable, "-m", "ctxpack.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=60)


def test_diff_after_a_classic_build(tmp_path: Path, fake: FakeDaemon) -> None:
    root = tree(tmp_path)
    p = run("-q", ".", cwd=root, host=fake.docker_host)  # the fake engine's default builder is classic
    assert p.returncode == 0, p.stderr
    with (root / "a.txt").open("a") as f:
        f.write("bye\n")
    for extra in ([], ["--dialect", "classic"]):
        d = ctxpack("diff", *extra, ".", cwd=root)
        assert d.returncode == 0, d.stderr
        assert d.stdout.splitlines() == ["M a.txt (content)  7 B"], (extra, d.stdout, d.stderr)


def test_build_names_the_index_it_moved_aside(tmp_path: Path, fake: FakeDaemon) -> None:
    """Trial finding 13: the build's snapshot went with an index moved
    aside, without a word.  Now the build says which file it moved."""
    from ctxpack.index.store import DB_NAME

    root = tree(tmp_path)
    assert run("-q", ".", cwd=root, host=fake.docker_host).returncode == 0
    cache = tmp_path / "cache"
    with open(cache / DB_NAME, "r+b") as f:
        f.write(b"garbage!" * 64)
    p = run(".", cwd=root, host=fake.docker_host)
    assert p.returncode == 0, p.stderr
    [copy] = [c for c in cache.iterdir() if c.name.startswith(f"{DB_NAME}.broken-") and not c.name.endswith(("-wal", "-shm"))]
    assert p.stderr.count(str(copy)) == 1, p.stderr
    assert ctxpack("diff", "--dialect", "classic", ".", cwd=root).returncode == 0  # this build's snapshot is there


def test_diff_without_a_snapshot_names_the_other_dialect(tmp_path: Path) -> None:
    root = tree(tmp_path)
    assert ctxpack("snapshot", "--dialect", "classic", ".", cwd=root).returncode == 0
    d = ctxpack("diff", ".", cwd=root)
    assert d.returncode == 2 and "no snapshot of" in d.stderr and "(buildkit) yet" in d.stderr
    assert "there is a snapshot with the classic rules" in d.stderr and "ctxpack diff --dialect classic" in d.stderr


def test_diff_after_a_build_with_another_dockerfile_names_it(tmp_path: Path, fake: FakeDaemon) -> None:
    """Found in a trial: after `ctxpack build -f Dockerfile.bb .`, plain
    `ctxpack diff` said "no snapshot ... yet: run 'ctxpack snapshot'" and
    nothing else, although the build had just recorded one (for that
    Dockerfile: a snapshot is per Dockerfile).  The hint names it."""
    root = tree(tmp_path)
    (root / "Dockerfile.bb").write_text("FROM bb:latest\nCOPY . /app\n")
    p = run("-q", "-f", "Dockerfile.bb", ".", cwd=root, host=fake.docker_host)
    assert p.returncode == 0, p.stderr
    d = ctxpack("diff", "--dialect", "classic", ".", cwd=root)
    assert d.returncode == 2 and "(classic) yet" in d.stderr, d.stderr
    assert "there is a snapshot with -f Dockerfile.bb" in d.stderr, d.stderr
    assert "ctxpack diff --dialect classic -f Dockerfile.bb" in d.stderr, d.stderr
    assert ctxpack("diff", "--dialect", "classic", "-f", "Dockerfile.bb", ".", cwd=root).returncode == 0


# --------------------------------------------------------------------------
# 5: a failing step names the Dockerfile line
# --------------------------------------------------------------------------


def _field(num: int, payload: bytes) -> bytes:
    n = len(payload)
    size = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        size.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([num << 3 | 2]) + bytes(size) + payload


def trace(name: str, error: str = "") -> dict[str, str]:
    """A moby.buildkit.trace message: one vertex (digest, name, error)."""
    import base64

    vertex = _field(1, b"sha256:d") + _field(3, name.encode()) + (_field(7, error.encode()) if error else b"")
    return {"id": "moby.buildkit.trace", "aux": base64.b64encode(_field(1, vertex)).decode()}


FAILING = ("FROM bb:latest AS base\nENV A=1\nRUN echo ok\n\nFROM base\nARG X\nRUN echo out && \\\n"
           "    (echo err >&2; exit 3)\nRUN echo never\n")


def answering(build_answer: list[dict[str, object]]) -> Engine:
    def handler(req: Request) -> MockResponse:
        path = req.url.split("?")[0]
        if path.endswith("/_ping"):
            return MockResponse(200, b"OK", {"Api-Version": "1.41"})
        if path.endswith("/version"):
            return MockResponse(200, json.dumps({"Version": "20.10.24", "ApiVersion": "1.41"}).encode())
        if path.endswith("/build"):
            return MockResponse(200, [json.dumps(m).encode() + b"\n" for m in build_answer])
        return MockResponse(404, b'{"message":"no such image"}')

    return Engine(MockTransport(handler, local=True))


def test_failing_step_names_the_dockerfile_line(tmp_path: Path) -> None:
    from ctxpack.errors import BuildFailedError

    root = tree(tmp_path, FAILING)
    classic_err = "The command '/bin/sh -c echo out &&     (echo err >&2; exit 3)' returned a non-zero code: 3"
    classic = [{"stream": "Step 5/7 : ARG X\n"}, {"stream": "Step 6/7 : RUN echo out &&     (echo err >&2; exit 3)\n"},
               {"stream": "out\n"}, {"errorDetail": {"code": 3, "message": classic_err}, "error": classic_err}]
    bk_err = "executor failed running [/bin/sh -c echo out &&     (echo err >&2; exit 3)]: exit code: 3"
    # As Engine 20.10 names the vertices: its numbering skips ENV/ARG ([base 2/2] is line 3's RUN).
    buildkit = [trace("[base 2/2] RUN echo ok"), trace("[stage-1 1/2] RUN echo out &&     (echo err >&2; exit 3)"),
                trace("[stage-1 1/2] RUN echo out &&     (echo err >&2; exit 3)", bk_err),
                {"errorDetail": {"message": bk_err}, "error": bk_err}]
    for builder, answer, err in (("classic", classic, classic_err), ("buildkit", buildkit, bk_err)):
        with pytest.raises(BuildFailedError) as info:
            build(str(root), answering(answer), BuildOptions(builder=builder, session=False, record_snapshot=False))
        assert str(info.value) == f"{_shown(root / 'Dockerfile')}:7: {err}", builder
        assert info.value.code == 3 and info.value.exit_code == 1
    # nothing to map (an error before any step): the engine's words alone
    with pytest.raises(BuildFailedError) as info:
        build(str(root), answering([{"error": "failed to read dockerfile", "errorDetail": {"message": "failed to read dockerfile"}}]),
              BuildOptions(builder="classic", record_snapshot=False))
    assert str(info.value) == "failed to read dockerfile"


def test_two_failing_copies_name_the_line_of_the_final_error(tmp_path: Path) -> None:
    """Found in a trial: two COPY sources excluded by .dockerignore; BuildKit
    runs both COPYs at once, both vertices fail, and the build's error is
    one of them ('failed to compute cache key: "/yarn.lock" not found').
    ctxpack named the line of whichever vertex failed last (Dockerfile:3 for
    yarn.lock, on line 2), varying from run to run."""
    from ctxpack.errors import BuildFailedError

    root = tree(tmp_path, "FROM bb:latest\nCOPY package.json yarn.lock /app/\nCOPY src/static/css /app/css\n")
    final = 'failed to compute cache key: "/yarn.lock" not found: not found'
    for order in ((2, 3), (3, 2)):
        vertices = {2: trace("[2/3] COPY package.json yarn.lock /app/", '"/yarn.lock" not found: not found'),
                    3: trace("[3/3] COPY src/static/css /app/css", '"/src/static/css" not found: not found')}
        answer = [vertices[n] for n in order] + [{"errorDetail": {"message": final}, "error": final}]
        with pytest.raises(BuildFailedError) as info:
            build(str(root), answering(answer), BuildOptions(builder="buildkit", session=False, record_snapshot=False))
        assert str(info.value) == f"{_shown(root / 'Dockerfile')}:2: {final}", order


def test_classic_platform_failure_hints_buildkit(tmp_path: Path) -> None:
    from ctxpack.errors import BuildFailedError

    root = tree(tmp_path, "FROM --platform=$BUILDPLATFORM bb:latest\nRUN true\n")
    err = 'failed to parse platform : "" is an invalid component of "": platform specifier component must match ' \
          '"^[A-Za-z0-9_-]+$": invalid argument'
    with pytest.raises(BuildFailedError) as info:
        build(str(root), answering([{"stream": "Step 1/2 : FROM --platform=$BUILDPLATFORM bb:latest\n"},
                                    {"errorDetail": {"message": err}, "error": err}]),
              BuildOptions(builder="classic", record_snapshot=False))
    assert str(info.value).endswith(f"Dockerfile:1: {err}")
    assert info.value.hint is not None and "--builder buildkit" in info.value.hint


def test_classic_mount_refusal_hints_buildkit(tmp_path: Path) -> None:
    # Trial 21: RUN --mount on the classic builder (this engine's default):
    # the engine's own words, the Dockerfile line, and what to do.
    from ctxpack.errors import BuildFailedError

    root = tree(tmp_path, "FROM bb:latest\nRUN --mount=type=cache,target=/c true\n")
    err = ("the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to "
           "build images with BuildKit enabled")
    with pytest.raises(BuildFailedError) as info:
        build(str(root), answering([{"stream": "Step 1/2 : FROM bb:latest\n"},
                                    {"stream": "Step 2/2 : RUN --mount=type=cache,target=/c true\n"},
                                    {"errorDetail": {"message": err}, "error": err}]),
              BuildOptions(builder="classic", record_snapshot=False))
    assert str(info.value).endswith(f"Dockerfile:2: {err}")
    assert info.value.hint == "this Dockerfile needs BuildKit: build with --builder buildkit (or DOCKER_BUILDKIT=1)"


# --------------------------------------------------------------------------
# 4: --progress plain (BuildKit) as docker 20.10 prints it
# --------------------------------------------------------------------------


def test_go_units_bytes() -> None:
    from ctxpack.engine.progress import go_units_bytes

    # docker 20.10's plain progress on this machine: "846B", "2B", "3.00MB", "6.05MB"
    assert [go_units_bytes(n) for n in (2, 846, 999, 1000, 3_000_123, 6_050_000, 12_345_678_901)] == \
        ["2B", "846B", "999B", "1.00kB", "3.00MB", "6.05MB", "12.35GB"]


def test_plain_trace_amounts_and_real_completions() -> None:
    from ctxpack.engine.messages import StatusResponse, Vertex, VertexStatus
    from ctxpack.engine.progress import PlainTrace

    out: list[str] = []
    tr = PlainTrace(out.append)
    ctx = "[internal] load build context"
    tr.feed(StatusResponse(vertexes=[Vertex(digest="c", name=ctx, started=1.0, completed=1.01)]))  # early completion
    tr.feed(StatusResponse(vertexes=[Vertex(digest="c", name=ctx, started=1.0, completed=1.02)]))  # re-stamped only
    tr.feed(StatusResponse(vertexes=[Vertex(digest="f", name="[1/2] FROM bb", cached=True)]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="c", name=ctx, started=2.0)]))  # runs again
    tr.feed(StatusResponse(statuses=[VertexStatus(id="transferring context:", vertex="c", current=10, started=2.0,
                                                  timestamp=2.01)]))  # quick: not said in progress
    tr.feed(StatusResponse(statuses=[VertexStatus(id="transferring context:", vertex="c", current=5_110_000,
                                                  started=2.0, timestamp=2.15)]))
    tr.feed(StatusResponse(statuses=[VertexStatus(id="transferring context:", vertex="c", current=6_050_000,
                                                  started=2.0, timestamp=2.2, completed=2.2)]))
    tr.feed(StatusResponse(vertexes=[Vertex(digest="c", name=ctx, started=2.0, completed=2.3)]))
    assert "".join(out) == (
        f"#1 {ctx}\n#1 DONE 0.0s\n\n#2 [1/2] FROM bb\n#2 CACHED\n\n#1 {ctx}\n"
        "#1 transferring context: 5.11MB\n#1 transferring context: 6.05MB 0.2s done\n#1 DONE 0.3s\n")


def test_plain_progress_on_the_engine(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import re

    root = tree(tmp_path, "FROM bb:latest\nCOPY a.txt /a\n")
    p = run("--builder", "buildkit", "--network", "none", "--progress", "plain", "--no-cache", ".", cwd=root,
            host=f"unix://{dockerd.socket}", timeout=120)
    assert p.returncode == 0, p.stderr
    # as DOCKER_BUILDKIT=1 /usr/bin/docker build --progress plain: "#1 transferring dockerfile: 64B 0.0s done"
    assert re.search(r"^#(\d+) transferring dockerfile: \d+B \d+\.\ds done$", p.stderr, re.M), p.stderr
    m = re.search(r"^#(\d+) \[internal\] load build context$", p.stderr, re.M)
    assert m, p.stderr
    n = m.group(1)
    tail = p.stderr[p.stderr.rindex(f"#{n} transferring context: "):]
    assert re.match(rf"#{n} transferring context: \d+(\.\d\d[kM])?B \d+\.\ds done\n", tail), tail
    assert re.search(rf"^#{n} DONE \d+\.\ds$", tail, re.M), tail  # its real completion, after the transfer


def test_session_upload_record_counts_entries(dockerd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tree(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("b\n")
    p = run("--builder", "buildkit", "--network", "none", "--progress", "json", "--full", ".", cwd=root,
            host=f"unix://{dockerd.socket}", timeout=120)
    assert p.returncode == 0, p.stderr
    (rec,) = [json.loads(x) for x in p.stdout.splitlines() if '"ctxpack.upload"' in x]
    assert rec["aux"]["compression"] == "session"
    # what the session listed to the engine: Dockerfile, a.txt, sub, sub/b.txt (the tar build's count)
    assert rec["aux"]["entries"] == 4, rec


def test_the_id_once_on_a_terminal(tmp_path: Path, fake: FakeDaemon) -> None:
    import pty
    import select

    root = tree(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), CTXPACK_CACHE_DIR=str(tmp_path / "cache"))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ctxpack.cli", "build", "-H", fake.docker_host, "."],
                                cwd=root, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env)
        os.close(slave)
        data = b""
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the pty's other end closed
                break
            if not chunk:
                break
            data += chunk
        assert proc.wait(30) == 0, data
    finally:
        os.close(master)
    text = data.decode()
    ids = set(__import__("re").findall(r"sha256:[0-9a-f]{64}", text))
    assert len(ids) == 1 and text.count(ids.pop()) == 1, text  # "ctxpack: built sha256:..." only


def _shown(path: Path) -> str:
    """How messages name a Dockerfile: relative to the current directory,
    absolute where that would climb out of it (BuildContext.dockerfile_shown)."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel
