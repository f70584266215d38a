"""The Engine API client: version negotiation and the calls ctxpack makes.

:class:`Engine` wraps a :class:`~ctxpack.engine.transport.Transport`.  The
first call asks ``GET /_ping`` for the engine's ``Api-Version`` (and
``Builder-Version``, ``Ostype``); every request after that is prefixed with
``/v<min(client, engine)>``, as the docker CLI negotiates.  An engine below
:data:`MIN_API_VERSION` is refused with
:class:`~ctxpack.errors.EngineVersionError`, as is an engine that answers
"client version ... is too old".

:meth:`Engine.upgrade` is the hijack the BuildKit session runs on
(``POST /session`` with ``Upgrade: h2c``): the versioned URL, the headers
given, and back an :class:`~ctxpack.engine.transport.Upgraded` connection.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import EngineAPIError, EngineVersionError, InputError
from .hosts import Endpoint, open_transport, resolve_endpoint
from .messages import error_message
from .transport import Body, Headers, Request, Response, Transport, Upgraded

__all__ = ["Engine", "Ping", "CLIENT_API_VERSION", "MIN_API_VERSION", "version_tuple", "zstd_supported",
           "timeout_from_env"]

#: The newest API version ctxpack speaks (requests use min(this, engine's)).
CLIENT_API_VERSION = "1.49"
#: Below this ctxpack refuses: JSON build args and labels, platform (1.32).
MIN_API_VERSION = "1.32"
#: What an engine that sends no ``Api-Version`` speaks (the CLI's assumption).
FALLBACK_API_VERSION = "1.24"

_TOO_OLD = re.compile(r"client version \S+ is too old", re.I)


def version_tuple(text: str) -> tuple[int, ...]:
    """``"20.10.24+dfsg1"`` → ``(20, 10, 24)``; ``"1.41"`` → ``(1, 41)``;
    ``()`` when it does not start with a number."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


def zstd_supported(version_info: Mapping[str, Any], *, builder: str = "1") -> bool:
    """May a zstd build context go to this engine (``GET /version`` JSON)?

    The engine sniffs the body's magic bytes (``Content-Encoding`` is
    ignored).  Classic builds (``builder="1"``): Moby's decompressor knows
    zstd from Engine 23.0 (API 1.42), so both must be at least that, and it
    must be Moby, not Podman's look-alike API.  BuildKit (``"2"``): the
    body goes to BuildKit as a remote context whose sniffing does not know
    zstd in any Engine release one can assume: never.  Unknown: no.
    """
    if str(builder) != "1":
        return False
    components = version_info.get("Components") or []
    names = {str(c.get("Name", "")) for c in components if isinstance(c, Mapping)}
    if any("podman" in n.lower() for n in names):
        return False
    engine = version_tuple(str(version_info.get("Version", "")))
    api = version_tuple(str(version_info.get("ApiVersion", "")))
    if len(engine) < 2 or len(api) < 2:
        return False
    return engine[:2] >= (23, 0) and api[:2] >= (1, 42)


@dataclass(frozen=True)
class Ping:
    """What ``/_ping`` said: ``api_version`` (the engine's maximum),
    ``builder_version`` (``"2"``: BuildKit is its default, ``"1"`` classic,
    ``None`` not said), ``os_type``, ``experimental``."""

    api_version: str
    builder_version: str | None
    os_type: str | None
    experimental: bool
    said_api_version: bool = True


class Engine:
    """A Docker engine reached through ``transport``.

    ``api_version`` pins the version (no negotiation), as ``DOCKER_API_VERSION``
    does for the CLI.  Use :meth:`connect` to resolve an endpoint like the
    docker CLI and open its transport.
    """

    def __init__(self, transport: Transport, *, api_version: str | None = None, endpoint: Endpoint | None = None):
        self.transport = transport
        self.endpoint = endpoint
        self._pinned = api_version
        self._version: str | None = api_version
        self._ping: Ping | None = None
        self._info: dict[str, Any] | None = None

    @classmethod
    def connect(cls, host: str | None = None, context: str | None = None, *,
                env: Mapping[str, str] | None = None, api_version: str | None = None,
                timeout: float | None = None) -> Engine:
        """The engine the docker CLI would talk to (``--host``, ``--context``,
        ``DOCKER_HOST``, ...; see :mod:`ctxpack.engine.hosts`).

        ``timeout`` (seconds; default ``$DOCKER_CLIENT_TIMEOUT``, the
        variable docker-py and Compose read) limits both connecting and every
        silence while an answer is awaited or read, a build's output
        included; past it :class:`~ctxpack.errors.EngineTimeoutError` (exit
        7) names the endpoint and the timeout.  Without one: 30 s to
        connect (the docker CLI's), 60 s for an API answer, and a build's
        output waited for as long as the build runs (as the docker CLI does).
        """
        import os

        env = os.environ if env is None else env
        endpoint = resolve_endpoint(host, context, env=env)
        pinned = api_version or env.get("DOCKER_API_VERSION") or None
        if timeout is None:
            timeout = timeout_from_env(env)
        elif not timeout > 0:
            raise InputError(f"the timeout must be a positive number of seconds, not {timeout!r}")
        transport = open_transport(endpoint, connect_timeout=timeout, read_timeout=timeout)
        return cls(transport, api_version=pinned, endpoint=endpoint)

    @property
    def url(self) -> str:
        return self.transport.url

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- versions -----------------------------------------------------------

    def ping(self) -> Ping:
        """``GET /_ping`` (unversioned), remembered."""
        if self._ping is not None:
            return self._ping
        with self.transport.handle_request(Request("GET", self.transport.base_path + "/_ping", timeout=30)) as r:
            body = r.read()
            if r.status != 200 and "Api-Version" not in r.headers:
                raise EngineAPIError(
                    f"{self.url} answered /_ping with HTTP {r.status}: {error_message(body)[:200]} (is it a Docker engine?)",
                    r.status, error_message(body))
            api = r.headers.get("Api-Version")
            self._ping = Ping(
                api_version=api or FALLBACK_API_VERSION,
                builder_version=r.headers.get("Builder-Version") or None,
                os_type=r.headers.get("Ostype") or r.headers.get("OSType") or None,
                experimental=(r.headers.get("Docker-Experimental") or "").lower() == "true",
                said_api_version=api is not None,
            )
        return self._ping

    def api_version(self) -> str:
        """The version requests use: min(client, engine); checked against
        :data:`MIN_API_VERSION`."""
        if self._version is not None:
            return self._version
        p = self.ping()
        server = version_tuple(p.api_version)
        client = version_tuple(CLIENT_API_VERSION)
        chosen = min(server, client) if server else client
        if chosen < version_tuple(MIN_API_VERSION):
            raise EngineVersionError(
                f"the Docker engine at {self.url} speaks API {p.api_version}; ctxpack needs at least {MIN_API_VERSION}"
            )
        self._version = ".".join(str(n) for n in chosen)
        return self._version

    def info(self) -> dict[str, Any]:
        """``GET /version`` (Version, ApiVersion, MinAPIVersion, Components...), remembered."""
        if self._info is None:
            self._info = self.get_json("/version")
        return self._info

    # -- requests -----------------------------------------------------------

    def path(self, path: str, query: Mapping[str, Any] | list[tuple[str, str]] | None = None) -> str:
        """``/v<version><path>?<query>`` (with the transport's base path)."""
        url = f"{self.transport.base_path}/v{self.api_version()}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        return url

    def request(self, method: str, path: str, *, query: Mapping[str, Any] | list[tuple[str, str]] | None = None,
                body: Body = None, headers: Mapping[str, str] | None = None, timeout: float | None = 60.0,
                progress: Any = None) -> Response:
        """One versioned request; the response is the caller's to read and
        close.  A refused client version raises :class:`EngineVersionError`."""
        req = Request(method, self.path(path, query), Headers(headers or {}), body, timeout)
        kw = {"progress": progress} if progress is not None else {}
        resp = self.transport.handle_request(req, **kw)
        if resp.status == 400:
            raw = resp.read()
            resp.close()
            msg = error_message(raw)
            if _TOO_OLD.search(msg):
                raise EngineVersionError(f"the Docker engine at {self.url} refused API {self.api_version()}: {msg}")
            return _replay(resp, raw)
        return resp

    def get_json(self, path: str, query: Mapping[str, Any] | None = None, *, ok: tuple[int, ...] = (200,)) -> Any:
        with self.request("GET", path, query=query) as r:
            raw = r.read()
            if r.status not in ok:
                msg = error_message(raw)
                raise EngineAPIError(f"GET {path}: HTTP {r.status}: {msg}", r.status, msg)
        return json.loads(raw) if raw.strip() else None

    def post_json(self, path: str, query: Mapping[str, Any] | None = None, body: Any = None,
                  *, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        with self.request("POST", path, query=query, body=data, headers=headers) as r:
            raw = r.read()
            if r.status not in ok:
                msg = error_message(raw)
                raise EngineAPIError(f"POST {path}: HTTP {r.status}: {msg}", r.status, msg)
        return json.loads(raw) if raw.strip() else None

    def inspect_image(self, name: str) -> dict[str, Any] | None:
        """``GET /images/NAME/json``; ``None`` when there is no such image."""
        with self.request("GET", f"/images/{urllib.parse.quote(name, safe='/:@')}/json") as r:
            raw = r.read()
            if r.status == 404:
                return None
            if r.status != 200:
                msg = error_message(raw)
                raise EngineAPIError(f"inspecting image {name}: HTTP {r.status}: {msg}", r.status, msg)
        doc = json.loads(raw)
        return doc if isinstance(doc, dict) else None

    def upgrade(self, path: str, headers: Mapping[str, str] | None = None, *, protocol: str = "h2c",
                query: Mapping[str, Any] | None = None, timeout: float | None = 30.0) -> Upgraded:
        """``POST path`` with ``Upgrade: protocol`` and ``Connection: Upgrade``
        on a connection of its own; after ``101`` the raw connection (see
        :class:`~ctxpack.engine.transport.Upgraded`).  Other answers raise
        :class:`~ctxpack.errors.EngineAPIError`.  For ``/session``."""
        h = Headers(headers or {})
        h["Upgrade"] = protocol
        h["Connection"] = "Upgrade"
        return self.transport.upgrade(Request("POST", self.path(path, query), h, None, timeout))


def timeout_from_env(env: Mapping[str, str]) -> float | None:
    """``DOCKER_CLIENT_TIMEOUT`` as seconds (``None`` when unset or empty)."""
    raw = (env.get("DOCKER_CLIENT_TIMEOUT") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0 or value != value or value == float("inf"):
        raise InputError(f"DOCKER_CLIENT_TIMEOUT={raw!r} is not a positive number of seconds")
    return value


def _replay(resp: Response, raw: bytes) -> Response:
    """A response whose body was read already, readable again."""
    return Response(resp.status, resp.reason, resp.headers, iter([raw]))
