"""A session build starts the session and ``POST /build`` before the
Dockerfile analysis (no daemon: a mock engine whose upgrade is served by
tests/session_client.py's h2 client playing the daemon's part).

The daemon spends tens of milliseconds loading the frontend and reading the
Dockerfile through the session before it asks for the context; ctxpack's
analysis (its ``GET /version`` and image inspections) runs meanwhile, and
the daemon's context calls wait for the context it decides.  What must not
change: the served listing is the analysed (minimal) context's, in walk
order; an analysis error is the same error as before, the session ends, the
build is cancelled, and nothing waits for the daemon.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ctxpack import open_context
from ctxpack.engine import builder as builder_mod
from ctxpack.engine.builder import BuildOptions, build, minimize
from ctxpack.engine.client import Engine
from ctxpack.engine.session import wire
from ctxpack.engine.session.core import DIFF_COPY, Session
from ctxpack.engine.session.filesync import iter_context_listing
from ctxpack.engine.transport import MockResponse, MockTransport, Request
from ctxpack.errors import DockerfileError
from session_client import H2Client

IMAGE_ID = "sha256:" + "b" * 64


class FakeDaemon:
    """The engine's side: ``/_ping``, ``/version``, image inspection, and a
    ``/build`` that pulls the Dockerfile and the context through the session
    (every STAT until the empty one, then FIN) before it answers."""

    def __init__(self) -> None:
        self.order: list[str] = []  # method and path of each request, as they come
        self.client: H2Client | None = None
        self.upgraded = threading.Event()
        self.served: dict[str, list[str]] = {}
        self.context_call: Any = None
        self.lock = threading.Lock()
        self.transport = _Logged(self, self.handle, self.upgrade)

    def _log(self, req: Request) -> str:
        path = req.url.split("?")[0]
        for v in ("/v1.41", "/v1.49"):
            path = path.replace(v, "")
        with self.lock:
            self.order.append(f"{req.method} {path}")
        return path

    def upgrade(self, req: Request, sock: socket.socket) -> None:
        self.client = H2Client(sock)
        self.upgraded.set()

    def handle(self, req: Request) -> MockResponse:
        path = self._log(req)
        if path == "/_ping":
            return MockResponse(200, b"OK", {"Api-Version": "1.41", "Builder-Version": "2"})
        if path == "/version":
            return MockResponse(200, json.dumps({"Version": "20.10.24", "ApiVersion": "1.41", "Os": "linux",
                                                 "Arch": "amd64"}).encode())
        if path.startswith("/images/") and path.endswith("/json"):
            return MockResponse(200, json.dumps({"Id": IMAGE_ID, "Config": {"OnBuild": []}}).encode())
        if path == "/build/cancel":
            return MockResponse(200, b"")
        if path == "/build":
            return self.build()
        return MockResponse(404, b'{"message":"nope"}')

    def build(self) -> MockResponse:
        if "POST /session" not in self.order:  # a tar build: the body is the context
            return MockResponse(200, [json.dumps({"id": "moby.image.id", "aux": {"ID": IMAGE_ID}}).encode() + b"\n"])
        assert self.upgraded.wait(5)
        assert self.client is not None
        df = self.pull([("dir-name", "dockerfile"), ("followpaths", "Dockerfile")])
        if df is None:
            return MockResponse(200, [b'{"error":"the dockerfile call failed"}\n'])
        ctx = self.pull([("dir-name", "context")])
        if ctx is None:
            return MockResponse(200, [json.dumps({"error": "context: " + self.context_call.message}).encode() + b"\n"])
        return MockResponse(200, [json.dumps({"id": "moby.image.id", "aux": {"ID": IMAGE_ID}}).encode() + b"\n"])

    def pull(self, md: list[tuple[str, str]]) -> list[str] | None:
        """One DiffCopy call: the paths listed (None: the call failed)."""
        assert self.client is not None
        sid = self.client.open(DIFF_COPY, md)
        call = self.client.calls[sid]
        if md[0][1] == "context":
            self.context_call = call
        paths: list[str] = []
        n = 0
        while True:
            msgs = self.client.wait_messages(sid, n + 1, timeout=10)
            if len(msgs) <= n:
                return None  # ended without the empty STAT: an error status
            p = wire.decode_packet(msgs[n])
            n += 1
            if p.type != wire.PACKET_STAT:
                return None
            if p.stat is None:
                break
            paths.append(p.stat.path)
        self.client.send(sid, wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        assert call.ended.wait(10)
        self.served[md[0][1]] = paths
        return paths


class _Logged(MockTransport):
    def __init__(self, fake: FakeDaemon, *a: Any) -> None:
        super().__init__(*a)
        self.fake = fake

    def upgrade(self, request: Request) -> Any:
        self.fake._log(request)  # in order, before the upgrade's thread starts
        return super().upgrade(request)


def _tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM bb:latest\nCOPY src /app/src\n")
    (root / "src" / "a.py").write_text("a\n")
    (root / "src" / "b.py").write_text("b\n")
    (root / "notes.txt").write_text("not read by the Dockerfile\n")
    return root


def _opts(**kw: Any) -> BuildOptions:
    return BuildOptions(builder="buildkit", record_snapshot=False, **kw)


def test_session_and_build_go_before_the_analysis_and_the_minimal_context_is_served(tmp_path):
    root = _tree(tmp_path / "ctx")
    fake = FakeDaemon()
    engine = Engine(fake.transport)
    r = build(str(root), engine, _opts())
    assert r.image_id == IMAGE_ID and r.minimal
    order = fake.order
    # /session and /build before the analysis's requests (the engine's
    # platform for TARGETARCH, the base image's ONBUILD triggers)
    assert order.index("POST /session") < order.index("POST /build") < order.index("GET /version"), order
    assert order.index("POST /build") < order.index("GET /images/bb:latest/json"), order
    # what was served is the analysed context, in walk order
    ctx = open_context(str(root), dialect="buildkit")
    want = minimize(ctx, Engine(FakeDaemon().transport), _opts(), [])
    assert want.selection is not None
    assert fake.served["context"] == [e.path for e in iter_context_listing(want)]
    assert "notes.txt" not in fake.served["context"] and "src/a.py" in fake.served["context"]
    assert fake.served["dockerfile"] == ["Dockerfile"]


def test_an_analysis_error_is_the_same_error_and_ends_the_started_session(tmp_path, monkeypatch):
    root = _tree(tmp_path / "ctx")
    (root / "Dockerfile").write_text("COPY src /app/src\n")  # before any FROM: the analysis refuses it
    with pytest.raises(DockerfileError) as before:
        minimize(open_context(str(root), dialect="buildkit"), Engine(FakeDaemon().transport), _opts(), [])
    fake = FakeDaemon()
    t = time.monotonic()
    with pytest.raises(DockerfileError) as got:
        build(str(root), Engine(fake.transport), _opts())
    assert str(got.value) == str(before.value)
    assert type(got.value) is type(before.value)
    assert time.monotonic() - t < 5  # nothing waited for the daemon
    assert "POST /session" in fake.order
    # the build is cancelled on the engine; the daemon's context call was
    # told why (or, if it came after the end, found the session gone)
    deadline = time.monotonic() + 5
    while "POST /build/cancel" not in fake.order and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "POST /build/cancel" in fake.order
    assert fake.client is not None and fake.client.closed.wait(5)
    call = fake.context_call
    if call is not None and call.status is not None:
        assert call.status != 0 and "ctxpack could not decide the context" in call.message


def test_context_calls_wait_for_the_context_and_the_dockerfile_does_not(tmp_path):
    root = _tree(tmp_path / "ctx")
    ctx = open_context(str(root), dialect="buildkit")
    sess = Session(ctx, key="k", context_later=True, listing_cache=False)
    a, b = socket.socketpair()
    sess.attach(a)
    client = H2Client(b)
    try:
        df = client.open(DIFF_COPY, [("dir-name", "dockerfile"), ("followpaths", "Dockerfile")])
        assert len(client.wait_messages(df, 2)) >= 2  # answered at once: the Dockerfile and the empty STAT
        sid = client.open(DIFF_COPY, [("dir-name", "context")])
        time.sleep(0.3)
        assert client.calls[sid].messages == []  # waits for the context
        assert sess.filesync.made("context") is None  # no walk before it is known
        narrowed = minimize(ctx, Engine(FakeDaemon().transport), _opts(), [])
        sess.provide_context(narrowed)
        want = [e.path for e in iter_context_listing(narrowed)]
        msgs = client.wait_messages(sid, len(want) + 1)
        got = [wire.decode_packet(m).stat for m in msgs[:len(want) + 1]]
        assert [s.path for s in got if s is not None] == want and got[-1] is None
        with pytest.raises(ValueError):
            sess.provide_context(open_context(str(tmp_path), dialect="buildkit"))
    finally:
        client.close()
        sess.close()


def test_a_refused_context_fails_the_waiting_call_with_the_reason(tmp_path):
    root = _tree(tmp_path / "ctx")
    sess = Session(open_context(str(root), dialect="buildkit"), key="k", context_later=True)
    a, b = socket.socketpair()
    sess.attach(a)
    client = H2Client(b)
    try:
        sid = client.open(DIFF_COPY, [("dir-name", "context"), ("followpaths", ".dockerignore")])
        time.sleep(0.1)
        sess.refuse_context("ctxpack could not decide the context: no FROM")
        assert client.calls[sid].ended.wait(5)
        assert client.calls[sid].status not in (None, 0)
        assert "no FROM" in client.calls[sid].message
    finally:
        client.close()
        sess.close()


def test_the_tar_path_still_analyses_before_it_sends(tmp_path):
    """--no-session: nothing is sent before the analysis (the tar is the
    analysed context)."""
    root = _tree(tmp_path / "ctx")
    fake = FakeDaemon()
    calls: list[str] = []
    real = builder_mod.minimize

    def spy(*a: Any, **k: Any) -> Any:
        calls.append("minimize")
        fake.order.append("minimize")
        return real(*a, **k)

    builder_mod.minimize = spy  # type: ignore[assignment]
    try:
        build(str(root), Engine(fake.transport), _opts(session=False))
    finally:
        builder_mod.minimize = real  # type: ignore[assignment]
    assert calls == ["minimize"]
    assert fake.order.index("minimize") < fake.order.index("POST /build"), fake.order


def test_the_upload_counts_the_whole_context_call_not_the_ignore_file_call_too():
    """The daemon asks for ``.dockerignore`` alone (followpaths), then for the
    whole context: the entries shown are the whole call's (a real-project
    trial counted 90 for a context of 89)."""
    from ctxpack.engine.session.core import SessionStats
    from ctxpack.engine.session.filesync import DirStats

    st = SessionStats(dirs=[DirStats("dockerfile", entries=1), DirStats("context", entries=1),
                            DirStats("context", entries=89)])
    assert builder_mod._context_entries(st) == 89
    assert builder_mod._context_entries(SessionStats()) == 0
