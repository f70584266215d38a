"""ctxpack.engine.client: negotiation and calls, on a mock and on the real engine."""

from __future__ import annotations

import json
import uuid

import pytest

import dockerd as harness
from ctxpack.engine.client import Engine, version_tuple, zstd_supported
from ctxpack.engine.transport import MockResponse, MockTransport, Request, UnixTransport
from ctxpack.errors import EngineAPIError, EngineVersionError


def _engine(api: str | None, *, routes: dict[str, MockResponse] | None = None) -> tuple[Engine, MockTransport]:
    routes = routes or {}

    def handler(req: Request) -> MockResponse:
        if req.url.endswith("/_ping"):
            h = {"Api-Version": api} if api else {}
            h.update({"Builder-Version": "2", "Ostype": "linux"})
            return MockResponse(200, b"OK", h)
        for suffix, resp in routes.items():
            if req.url.split("?")[0].endswith(suffix):
                return resp
        return MockResponse(404, b'{"message":"no route"}')

    t = MockTransport(handler)
    return Engine(t), t


def test_negotiates_min_of_client_and_engine() -> None:
    e, t = _engine("1.41", routes={"/version": MockResponse(200, b'{"Version":"20.10.24"}')})
    assert e.api_version() == "1.41"
    assert e.info()["Version"] == "20.10.24"
    assert t.requests[-1].url == "/v1.41/version"
    assert e.ping().builder_version == "2" and e.ping().os_type == "linux"
    e2, _ = _engine("1.99")
    assert e2.api_version() == "1.49"


def test_no_api_version_header_means_1_24_refused() -> None:
    e, _ = _engine(None)
    with pytest.raises(EngineVersionError, match="speaks API 1.24; ctxpack needs at least 1.32"):
        e.api_version()


def test_too_old_answer_is_a_version_error() -> None:
    e, _ = _engine("1.41", routes={"/images/x/json": MockResponse(
        400, b'{"message":"client version 1.41 is too old. Minimum supported API version is 1.44"}')})
    with pytest.raises(EngineVersionError, match="refused API 1.41.*Minimum supported API version is 1.44"):
        e.inspect_image("x")


def test_inspect_image_missing_is_none() -> None:
    e, _ = _engine("1.41")
    assert e.inspect_image("nope:latest") is None
    e2, _ = _engine("1.41", routes={"/json": MockResponse(500, b'{"message":"boom"}')})
    with pytest.raises(EngineAPIError, match="boom"):
        e2.inspect_image("x")


def test_ping_from_a_non_docker_server() -> None:
    t = MockTransport(lambda req: MockResponse(404, b"<html>not found</html>"))
    with pytest.raises(EngineAPIError, match="is it a Docker engine"):
        Engine(t).ping()


def test_version_tuple_and_zstd_rule() -> None:
    assert version_tuple("20.10.24+dfsg1") == (20, 10, 24)
    assert version_tuple("v1.41") == (1, 41) and version_tuple("x") == ()
    assert zstd_supported({"Version": "23.0.1", "ApiVersion": "1.42"})
    assert not zstd_supported({"Version": "23.0.1", "ApiVersion": "1.42"}, builder="2")
    assert not zstd_supported({"Version": "20.10.24", "ApiVersion": "1.41"})
    assert not zstd_supported({"Version": "5.0", "ApiVersion": "1.41", "Components": [{"Name": "Podman Engine"}]})
    assert not zstd_supported({})


def test_harness_rule_is_the_packages() -> None:
    assert harness.zstd_context_supported is zstd_supported


# --------------------------------------------------------------------------
# the real engine
# --------------------------------------------------------------------------


def test_real_engine_negotiation(dockerd: harness.Dockerd) -> None:
    e = Engine(UnixTransport(dockerd.socket))
    p = e.ping()
    assert p.api_version == dockerd.info["ApiVersion"]
    assert e.api_version() == min(p.api_version, "1.49", key=version_tuple)
    assert e.info()["Version"] == dockerd.info["Version"]
    assert e.inspect_image(harness.BASE_IMAGE)["Id"] == dockerd.base_image_id  # type: ignore[index]
    assert e.inspect_image("ctxpack-no-such-image:1") is None
    e.close()


def test_real_engine_session_upgrade(dockerd: harness.Dockerd) -> None:
    """The hijack the BuildKit session needs: after 101 the engine is the
    HTTP/2 client and starts with the connection preface."""
    e = Engine(UnixTransport(dockerd.socket))
    sid = uuid.uuid4().hex
    up = e.upgrade("/session", {
        "X-Docker-Expose-Session-Uuid": sid,
        "X-Docker-Expose-Session-Name": "ctxpack-test",
        "X-Docker-Expose-Session-Sharedkey": "k",
        "X-Docker-Expose-Session-Grpc-Method": "/grpc.health.v1.Health/Check",
    })
    try:
        assert up.status == 101 and (up.headers.get("Upgrade") or "").lower() == "h2c"
        up.sock.settimeout(10)
        preface = b""
        while len(preface) < 24:
            chunk = up.sock.recv(24 - len(preface))
            assert chunk, "engine closed the session"
            preface += chunk
        assert preface == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    finally:
        up.close()
    # the engine's ordinary API still answers on the pooled connection
    assert json.loads(json.dumps(e.info()))["ApiVersion"]
    e.close()
