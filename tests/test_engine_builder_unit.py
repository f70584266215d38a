"""ctxpack.engine.builder's decisions, on mock engines (no daemon needed)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ctxpack.engine.builder import BuildOptions, build, choose_builder, choose_compression, registry_config
from ctxpack.engine.client import Engine
from ctxpack.engine.transport import MockResponse, MockTransport, Request
from ctxpack.errors import BuildFailedError, EngineVersionError, InputError


def mock_engine(*, api: str = "1.41", builder: str | None = None, version: str = "20.10.24", local: bool = True,
                build_answer: list[dict] | None = None) -> tuple[Engine, MockTransport]:
    def handler(req: Request) -> MockResponse:
        path = req.url.split("?")[0]
        if path.endswith("/_ping"):
            h = {"Api-Version": api}
            if builder:
                h["Builder-Version"] = builder
            return MockResponse(200, b"OK", h)
        if path.endswith("/version"):
            return MockResponse(200, json.dumps({"Version": version, "ApiVersion": api}).encode())
        if path.endswith("/build"):
            msgs = build_answer if build_answer is not None else [{"aux": {"ID": "sha256:" + "a" * 64}}]
            return MockResponse(200, [json.dumps(m).encode() + b"\n" for m in msgs])
        return MockResponse(404, b'{"message":"nope"}')

    t = MockTransport(handler, local=local)
    return Engine(t), t


def test_builder_follows_the_engine() -> None:
    assert choose_builder(mock_engine(builder="2")[0], None) == "buildkit"
    assert choose_builder(mock_engine(builder=None)[0], None) == "classic"
    assert choose_builder(mock_engine(builder="2")[0], "classic") == "classic"
    with pytest.raises(EngineVersionError, match="BuildKit needs API 1.39"):
        choose_builder(mock_engine(api="1.38")[0], "buildkit")


def test_docker_buildkit_decides_before_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The docker CLI reads DOCKER_BUILDKIT with strconv.ParseBool before it
    # asks the engine; an explicit --builder still wins.
    for raw, want in (("1", "buildkit"), ("true", "buildkit"), ("T", "buildkit"),
                      ("0", "classic"), ("false", "classic"), ("F", "classic")):
        monkeypatch.setenv("DOCKER_BUILDKIT", raw)
        assert choose_builder(mock_engine(builder=None)[0], None) == want, raw
        assert choose_builder(mock_engine(builder="2")[0], None) == want, raw
    monkeypatch.setenv("DOCKER_BUILDKIT", "1")
    assert choose_builder(mock_engine(builder="2")[0], "classic") == "classic"
    monkeypatch.setenv("DOCKER_BUILDKIT", "")
    assert choose_builder(mock_engine(builder="2")[0], None) == "buildkit"
    monkeypatch.setenv("DOCKER_BUILDKIT", "yes")
    with pytest.raises(InputError, match=r'DOCKER_BUILDKIT environment variable expects boolean value: '
                                         r'strconv.ParseBool: parsing "yes": invalid syntax'):
        choose_builder(mock_engine()[0], None)
    # through build(): the query says which builder, and a note says why
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\n")
    (tmp_path / "a.txt").write_text("a")
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    e, t = mock_engine(builder="2")
    notes: list[str] = []
    r = build(str(tmp_path), e, BuildOptions(record_snapshot=False, session=False), on_note=notes.append)
    assert r.builder == "classic" and any("DOCKER_BUILDKIT=0" in n for n in notes), notes
    req = next(q for q in t.requests if q.url.split("?")[0].endswith("/build"))
    assert "version=1" in req.url


def test_compression_per_connection() -> None:
    assert choose_compression(mock_engine(local=True)[0], "classic", None) == ("none", None)
    assert choose_compression(mock_engine(local=False)[0], "classic", None) == ("gzip", None)
    new = mock_engine(local=False, api="1.43", version="24.0.7")[0]
    assert choose_compression(new, "classic", None) == ("zstd", None)
    assert choose_compression(new, "buildkit", None) == ("gzip", None)  # BuildKit's sniffing knows no zstd
    with pytest.raises(InputError, match=r"Engine 20.10.24 \(API 1.41\) cannot read a zstd context"):
        choose_compression(mock_engine(local=True)[0], "classic", "zstd")  # refused before sending
    comp, note = choose_compression(mock_engine(local=True, version="")[0], "classic", "zstd")
    assert comp == "zstd" and note and "not known to accept zstd" in note  # unknown version: the engine decides


def test_build_sends_the_tar_and_query(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a.txt /\n")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    e, t = mock_engine()
    r = build(str(tmp_path), e, BuildOptions(tags=("x:1",), record_snapshot=False, minimal=True))
    assert r.image_id == "sha256:" + "a" * 64 and r.minimal and r.builder == "classic"
    req = next(q for q in t.requests if q.url.split("?")[0].endswith("/build"))
    assert req.url.startswith("/v1.41/build?dockerfile=Dockerfile&t=x%3A1&version=1")
    assert req.headers["Content-Type"] == "application/x-tar" and req.headers["X-Registry-Config"]
    names = tarfile.open(fileobj=io.BytesIO(t.bodies[-1])).getnames()
    assert sorted(names) == ["Dockerfile", "a.txt"]


def test_build_error_message_and_code(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    e, _ = mock_engine(build_answer=[{"stream": "Step 1/2\n"},
                                     {"errorDetail": {"code": 3, "message": "The command '/bin/sh -c false' returned a non-zero code: 3"},
                                      "error": "The command '/bin/sh -c false' returned a non-zero code: 3"}])
    seen: list[dict] = []
    with pytest.raises(BuildFailedError, match="returned a non-zero code: 3") as info:
        build(str(tmp_path), e, BuildOptions(record_snapshot=False), on_message=seen.append)
    assert info.value.code == 3 and seen[0] == {"stream": "Step 1/2\n"}


def test_registry_config_from_docker_config(tmp_path: Path) -> None:
    import base64

    assert registry_config({"DOCKER_CONFIG": str(tmp_path)}) == "e30="
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"reg.example:5000": {
        "auth": base64.b64encode(b"me:pw").decode()}}}))
    doc = json.loads(base64.urlsafe_b64decode(registry_config({"DOCKER_CONFIG": str(tmp_path)})))
    assert doc == {"reg.example:5000": {"serveraddress": "reg.example:5000", "username": "me", "password": "pw"}}


def test_dockerfile_from_stdin_travels_in_the_tar(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    e, t = mock_engine()
    build(str(tmp_path), e, BuildOptions(dockerfile="-", stdin_dockerfile=b"FROM scratch\nCOPY a.txt /\n",
                                         record_snapshot=False))
    req = next(q for q in t.requests if q.url.split("?")[0].endswith("/build"))
    name = dict(p.split("=", 1) for p in req.url.split("?", 1)[1].split("&"))["dockerfile"]
    assert name.startswith(".dockerfile.")
    tf = tarfile.open(fileobj=io.BytesIO(t.bodies[-1]))
    assert tf.extractfile(name).read() == b"FROM scratch\nCOPY a.txt /\n"  # type: ignore[union-attr]


def test_ssh_to_this_machine_is_not_compressed(tmp_path: Path) -> None:
    from ctxpack.engine.transport import SshTransport

    # a fake ssh: `-G` prints the resolved configuration, as OpenSSH does
    fake = tmp_path / "ssh"
    fake.write_text('#!/bin/sh\nfor a; do h="$a"; done\ncase "$h" in\n'
                    '  near) printf "user root\\nhostname 127.0.0.1\\nport 2222\\n" ;;\n'
                    '  proxied) printf "hostname 127.0.0.1\\nproxycommand nc %%h %%p\\n" ;;\n'
                    '  *) printf "hostname build.example.com\\n" ;;\nesac\n')
    fake.chmod(0o755)

    def engine(host: str) -> Engine:
        t = SshTransport(host, ssh_command=[str(fake)])
        e, _ = mock_engine(local=False)
        e.info()  # remembered from the mock engine; then the decision reads only the transport
        e.transport = t
        return e

    comp, note = choose_compression(engine("near"), "classic", None)
    assert comp == "none" and note and "this machine" in note
    assert choose_compression(engine("localhost"), "classic", None)[0] == "none"
    assert choose_compression(engine("proxied"), "classic", None)[0] == "gzip"  # a proxy is a real link
    assert choose_compression(engine("far"), "classic", None)[0] == "gzip"


def test_the_loopback_check_reuses_the_transports_ssh_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One `ssh -G` (two with the cipher's default probe) per transport:
    # the connection's argv and the compression choice share it.
    from ctxpack.engine import transport
    from ctxpack.engine.transport import SshTransport

    monkeypatch.setattr(transport, "cpu_has_aes", lambda: True)
    log = tmp_path / "calls.log"
    fake = tmp_path / "ssh"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\nprintf "hostname 127.0.0.1\\nciphers x,y\\n"\n')
    fake.chmod(0o755)
    t = SshTransport("near", ssh_command=[str(fake)])
    t.argv()  # what the first connection does
    e, _ = mock_engine(local=False)
    e.info()
    e.transport = t
    assert choose_compression(e, "classic", None)[0] == "none"
    assert sorted(log.read_text().splitlines()) == ["-G -- near", "-G -F /dev/null -- near"]  # run at once: either order


@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_a_stream_ended_without_its_final_message_is_a_dropped_connection(tmp_path: Path, builder: str) -> None:
    """Trial finding 29: the engine stopped mid-build (its /build stream ended
    with neither an image ID nor an error): the dropped-connection case,
    exit 5, naming the endpoint; not a failed build (exit 1)."""
    from ctxpack.errors import ConnectionDroppedError

    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a /\n")
    (tmp_path / "a").write_text("a")
    e, _ = mock_engine(builder="2", build_answer=[{"stream": "Step 1/2 : FROM scratch\n"}, {"stream": " ---> x\n"}])
    with pytest.raises(ConnectionDroppedError) as info:
        build(str(tmp_path), e, BuildOptions(record_snapshot=False, builder=builder, session=False))
    assert info.value.exit_code == 5
    assert str(info.value).startswith(f"the Docker engine at {e.url} closed the connection during the build"), info.value
    assert "no image ID" in str(info.value)


def test_fingerprint_waits_until_the_body_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The `ctxpack diff` fingerprint runs on a thread beside the build, but
    # only once the tar body is sent: during the upload it would take the GIL
    # from the packer and a core from ssh and the engine.  The totals' listing
    # (for the progress line) may run during the upload; the snapshot is
    # still recorded after a successful build.
    import threading

    from ctxpack.tar.sinks import Sink

    monkeypatch.setenv("CTXPACK_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    for i in range(50):
        (root / f"f{i}.txt").write_text("x" * i)
    # A change within the file clock's tick (10 ms) before the upload cannot
    # be told from one during it (then nothing is recorded): let it pass.
    import time

    time.sleep(0.05)
    e, t = mock_engine(local=True)
    during: list[set[str]] = []
    inner = t.handle_request

    class ProgressSink(Sink):  # as a real transport's: progress after every write
        def __init__(self, progress) -> None:
            self.progress, self.written, self.parts = progress, 0, []

        def write(self, data) -> None:
            self.parts.append(bytes(data))
            self.written += len(data)
            if self.progress is not None:
                self.progress(self.written)
                during.append({th.name for th in threading.enumerate()})

    def handle_request(request: Request, *, progress=None):
        if callable(request.body):
            sink = ProgressSink(progress)
            request.body(sink)
            body = b"".join(sink.parts)
            during.append({th.name for th in threading.enumerate()})  # the last byte written
            request.body = body
        return inner(request)

    t.handle_request = handle_request  # type: ignore[method-assign]
    r = build(str(root), e, BuildOptions(builder="classic", session=False), on_upload=lambda u: None)
    assert during, "the body was written through the sink"
    assert not any("ctxpack-snapshot" in names for names in during), during
    assert r.snapshot_recorded, r.notes
    names = tarfile.open(fileobj=io.BytesIO(t.bodies[-1])).getnames()
    assert "f49.txt" in names
