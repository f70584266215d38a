"""The package's fake daemon (ctxpack.engine.fake): the one fake engine the
tests (capture of the docker CLI's upload) and the benchmarks (discarding a
1 GB upload) share."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import time

import pytest

from ctxpack.engine.fake import FakeDaemon, Reply, discard, keep, sha256, tar_names


def _tar(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for n in names:
            if n.endswith("/"):
                info = tarfile.TarInfo(n.rstrip("/"))
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info = tarfile.TarInfo(n)
                info.size = 3
                tf.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def _post_chunked(path: str, body: bytes, piece: int = 700) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + piece]), body[i:i + piece]) for i in range(0, len(body), piece))
    req = (b"POST /v1.41/build?t=x HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
           + chunks + b"0\r\n\r\n")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(req)
        out = b""
        while data := s.recv(65536):
            out += data
    return out


@pytest.mark.parametrize("consume", [keep, discard, sha256, tar_names])
def test_each_consumer_reads_the_whole_chunked_body(consume: object) -> None:
    body = _tar(["a/", "a/b", "c"])
    with FakeDaemon(consume=consume) as d:  # type: ignore[arg-type]
        resp = _post_chunked(d.socket_path, body)
        assert resp.startswith(b"HTTP/1.1 200") and b'"aux": {"ID": "sha256:' in resp
        (rec,) = [r for r in d.take() if r.path == "/build"]
    assert rec.body_size == len(body)
    assert rec.query == {"t": "x"}
    expected = {keep: body, discard: None, sha256: hashlib.sha256(body).hexdigest(), tar_names: ["a/", "a/b", "c"]}
    assert rec.result == expected[consume]  # type: ignore[index]
    assert rec.body == (body if consume is keep else b"")


def test_consumer_can_change_and_a_cut_upload_is_an_error_not_a_record() -> None:
    with FakeDaemon(consume=discard) as d:
        d.set_consumer(tar_names)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(d.socket_path)
            s.sendall(b"POST /build HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort")
        deadline = time.monotonic() + 5
        while not d.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.errors and "build" in d.errors[0]
        assert [r for r in d.take() if r.path == "/build"] == []


def _request(path: str, raw: bytes, timeout: float = 2.0) -> bytes:
    """Send ``raw``; what came back until the daemon hung up or fell silent for ``timeout``."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(raw)
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except socket.timeout:
            out += b"<silent>"
    return out


PING = b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n"


def test_mute_accepts_and_never_answers_and_stop_lets_go() -> None:
    d = FakeDaemon(mute=True).start()
    with socket.socket(socket.AF_UNIX) as held:
        held.connect(d.socket_path)  # open while the daemon stops
        assert _request(d.socket_path, PING, timeout=0.3) == b"<silent>"
        assert d.take() == []  # never read
        t0 = time.monotonic()
        d.stop()
        assert time.monotonic() - t0 < 2
        held.settimeout(2)
        assert held.recv(1) == b""  # let go: hung up


def test_fixed_replies_then_serve_close_or_hold() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"
    for then, tail in (("serve", b"<silent>"), ("close", b""), ("hold", b"<silent>")):
        with FakeDaemon(replies={"/_ping": Reply(raw, then=then)}) as d:  # type: ignore[arg-type]
            out = _request(d.socket_path, PING + PING, timeout=0.3)
            # serve: the second ping is answered too; close and hold: only the first
            assert out == raw * (2 if then == "serve" else 1) + tail, (then, out)
            assert [r.path for r in d.take()] == ["/_ping"] * (2 if then == "serve" else 1)


def test_a_slow_reader_paces_build_bodies_and_cut_after_hangs_up() -> None:
    body = bytes(600 << 10)
    with FakeDaemon(consume=discard, read_pause=0.2) as d:
        t0 = time.monotonic()
        assert _post_chunked(d.socket_path, body, piece=len(body)).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - t0 >= 0.4  # three reads of at most 256 KiB, 0.2 s after each
        assert d.received == len(body)
    with FakeDaemon(consume=discard, cut_after=100_000) as d:
        try:
            answer = _post_chunked(d.socket_path, body)
        except OSError:  # the daemon hung up while this was still sending
            answer = b""
        assert answer == b""
        cut = d.wait_for("/build", 5)
        assert cut is not None and cut.error is not None and "cut_after=100000" in cut.error
        assert d.cut_requests() == [cut] and d.take() == []
        assert 100_000 < d.received < len(body)
