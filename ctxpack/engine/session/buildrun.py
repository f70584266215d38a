"""One BuildKit build through a session: ``POST /session``, then ``POST /build``.

The build request carries ``version=2&session=ID&remote=client-session`` and
an empty body: BuildKit pulls the Dockerfile and the context through the
session's FileSync service instead of reading a tar.  The progress stream is
newline-delimited JSON as for any build; the image id arrives as
``{"id": "moby.image.id", "aux": {"ID": ...}}``.
"""

from __future__ import annotations

import json
import queue
import secrets as _random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...context import BuildContext
from ...errors import EngineAPIError, EngineTimeoutError, SessionError, TransportError
from ..client import Engine, version_tuple
from ..messages import error_message, image_id_of, message_error, parse_message
from ..transport import Headers, Request, UnixTransport
from .core import Session, SessionStats
from .services import SecretSpec, SshSpec

__all__ = ["SessionBuildResult", "SessionBuild", "session_build", "open_session", "build_query"]

#: Longest silence on the build's message stream before ctxpack gives up.
IDLE_TIMEOUT = 120.0

#: Engine 29.2 (API 1.53) deprecates ``POST /session`` (and ``/grpc``): it
#: serves BuildKit's gRPC on the API socket itself.  Deprecated is not
#: removed: ctxpack keeps using ``/session`` there and says so.
SESSION_DEPRECATED_API = (1, 53)


def deprecation_note(engine_api: str, used_api: str) -> str | None:
    """What ctxpack says about ``/session`` on an engine whose API is
    ``engine_api`` (its ``/_ping``), asked with version ``used_api``."""
    if version_tuple(engine_api) < SESSION_DEPRECATED_API:
        return None
    return (f"the engine speaks API {engine_api}: Engine 29.2 (API 1.53) deprecates POST /session in favour of gRPC "
            f"on the API socket, which ctxpack does not speak yet; ctxpack still opens its BuildKit session with "
            f"POST /v{used_api}/session while the engine serves it (when it refuses, `ctxpack build` sends the "
            "context as a tar)")


#: Longest silence on the session connection (BuildKit sends a health check
#: every second) before ctxpack decides the daemon stopped and ends the build.
SESSION_SILENCE = 60.0


@dataclass
class SessionBuildResult:
    """What a session build gave: the image id (``None`` on failure), the
    first error, every JSON message, the session's :class:`SessionStats`,
    and timings (seconds)."""

    image_id: str | None
    error: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)
    stats: SessionStats = field(default_factory=SessionStats)
    elapsed: float = 0.0
    session_closed: str | None = None
    #: What ctxpack decided about the session (e.g. a deprecated endpoint).
    notes: list[str] = field(default_factory=list)
    #: Files sent as they were when the daemon asked, not as listed (changed meanwhile).
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.image_id is not None


def build_query(session: Session, *, tags: Sequence[str] = (), target: str | None = None,
                build_args: Mapping[str, str | None] | None = None, network_mode: str | None = None,
                no_cache: bool = False, pull: bool = False, platform: str | None = None,
                labels: Mapping[str, str] | None = None, build_id: str | None = None,
                extra: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The ``/build`` query of a session build (pairs: ``t`` repeats)."""
    q: list[tuple[str, str]] = [("t", t) for t in tags]
    q += [("version", "2"), ("session", session.id), ("remote", "client-session"),
          ("dockerfile", session.dockerfile_name), ("buildid", build_id or _random.token_hex(16)),
          ("rm", "1"), ("forcerm", "1")]
    if target:
        q.append(("target", target))
    if build_args:
        q.append(("buildargs", json.dumps(dict(build_args))))
    if labels:
        q.append(("labels", json.dumps(dict(labels))))
    if network_mode and network_mode != "default":
        q.append(("networkmode", network_mode))
    if no_cache:
        q.append(("nocache", "1"))
    if pull:
        q.append(("pull", "1"))
    if platform:
        q.append(("platform", platform))
    q += list((extra or {}).items())
    return q


class _RepeatedHeaders(Headers):
    """Headers in which a name may repeat: the daemon reads one
    ``X-Docker-Expose-Session-Grpc-Method`` line per method (Go's
    ``http.Header`` does not split values at commas), and the transport
    sends whatever :meth:`items` gives."""

    def __init__(self, pairs: Sequence[tuple[str, str]]):
        super().__init__(pairs)
        self._pairs = list(pairs)

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key, value)
        self._pairs = [p for p in self._pairs if p[0].lower() != key.lower()] + [(key, value)]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


def open_session(engine: Engine, sess: Session, *, timeout: float = 30.0) -> None:
    """``POST /session`` upgraded to h2c on a connection of its own, and
    ``sess`` served on it.  Raises :class:`SessionError` when the daemon
    cannot do sessions (API < 1.39, or anything but ``101``)."""
    api = engine.api_version()
    if version_tuple(api) < (1, 39):
        raise SessionError(f"the Docker engine at {engine.url} speaks API {api}: BuildKit sessions need 1.39 "
                           "(use --no-session to send the context as a tar)")
    engine_api = engine.ping().api_version
    note = deprecation_note(engine_api, api)
    headers = _RepeatedHeaders([*sess.headers(), ("Upgrade", "h2c"), ("Connection", "Upgrade")])
    try:
        up = engine.transport.upgrade(Request("POST", engine.path("/session"), headers, None, timeout))
    except EngineAPIError as e:
        why = ""
        if note is not None:
            why = (f"; the engine speaks API {engine_api}, and API 1.53 (Engine 29.2) deprecates POST /session in "
                   "favour of gRPC on the API socket, which ctxpack does not speak yet")
        raise SessionError(f"the Docker engine at {engine.url} refused a BuildKit session: {e}{why} "
                           "(use --no-session to send the context as a tar)") from None
    if note is not None:
        sess.notes.append(note)
    sess.attach(up.sock, b"", on_close=up.close)


def session_build(ctx: BuildContext, engine: Engine | str, *, tags: Sequence[str] = (), target: str | None = None,
                  build_args: Mapping[str, str | None] | None = None, network_mode: str | None = None,
                  no_cache: bool = False, secrets: Sequence[SecretSpec] = (), ssh: Sequence[SshSpec] = (),
                  on_message: Callable[[dict[str, Any]], None] | None = None, timeout: float = 600.0,
                  session: Session | None = None, extra_query: Mapping[str, str] | None = None,
                  ) -> SessionBuildResult:
    """Build ``ctx`` (BuildKit dialect) through a session on ``engine`` (an
    :class:`~ctxpack.engine.client.Engine`, or a unix socket path).
    ``on_message`` sees each JSON message as it arrives.  Build failures come
    back in :attr:`SessionBuildResult.error`; raises :class:`SessionError` /
    :class:`TransportError` when the session or the daemon cannot be used at
    all.  Every wait has a deadline."""
    own = isinstance(engine, str)
    eng = Engine(UnixTransport(engine)) if isinstance(engine, str) else engine
    try:
        return _run(ctx, eng, tags=tags, target=target, build_args=build_args, network_mode=network_mode,
                    no_cache=no_cache, secrets=secrets, ssh=ssh, on_message=on_message, timeout=timeout,
                    session=session, extra_query=extra_query)
    finally:
        if own:
            eng.close()


class SessionBuild:
    """``POST /session`` then ``POST /build`` with an empty body: the
    engine's :class:`~ctxpack.engine.transport.Response` is :attr:`response`
    (read its lines as for a tar build), the :class:`Session` is
    :attr:`session`.  ``query`` is the build's query (pairs, e.g.
    ``ctxpack.engine.builder.build_query``'s); ``dockerfile``, ``session``
    and ``remote`` are set here, ``version`` is forced to 2.  Close it (or
    use ``with``) when the stream has been read; :meth:`explain` adds why the
    session ended to a build error."""

    def __init__(self, engine: Engine, ctx: BuildContext, query: Sequence[tuple[str, str]], *,
                 headers: Mapping[str, str] | None = None, secrets: Sequence[SecretSpec] = (),
                 ssh: Sequence[SshSpec] = (), session: Session | None = None, timeout: float | None = None,
                 silence: float = SESSION_SILENCE, context_later: bool = False):
        self.session = session or Session(ctx, secrets=secrets, ssh=ssh, context_later=context_later)
        self.url = engine.url
        self._silence = silence
        self._response: _Watched | None = None
        self._abandoned = False
        self._answer_lock = threading.Lock()  # the answer is taken by the reader or closed, never lost
        if not context_later:
            self.session.prepare()
        open_session(engine, self.session, timeout=30.0)
        drop = {"dockerfile", "session", "remote", "version"}
        q = [(k, v) for k, v in query if k not in drop]
        q += [("dockerfile", self.session.dockerfile_name), ("remote", "client-session"),
              ("session", self.session.id), ("version", "2")]
        if not any(k == "buildid" for k, _ in q):
            q.append(("buildid", _random.token_hex(16)))
        hdrs = {"Content-Type": "application/x-tar", **dict(headers or {})}
        # The daemon answers /build once it has read the Dockerfile through
        # the session: wait for that answer (in :attr:`response`) as for
        # every later line, giving up when the session falls silent.
        got: queue.Queue[tuple[bool, Any]] = queue.Queue(1)
        self._got = got

        def send() -> None:
            try:
                r = engine.request("POST", "/build", query=q, body=b"", headers=hdrs, timeout=timeout)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                got.put((False, e))
                return
            with self._answer_lock:
                if not self._abandoned:
                    got.put((True, r))
                    return
            r.close()  # nobody will read it: the build was given up before it answered

        threading.Thread(target=send, name="ctxpack-session-build-request", daemon=True).start()
        if not context_later:
            self._wait()

    def provide(self, ctx: BuildContext) -> None:
        """The context to serve, for a build started with
        ``context_later=True`` (see :meth:`Session.provide_context`)."""
        self.session.provide_context(ctx)

    def abandon(self, why: str) -> None:
        """Give up a build whose context could not be decided: the daemon's
        context calls get ``why`` as the error, the session ends; the
        ``/build`` answer, whenever it comes, is closed unread."""
        with self._answer_lock:
            self._abandoned = True
        self.session.refuse_context(why)
        self.close()

    @property
    def response(self) -> _Watched:
        """The build's response (the first access waits for it); its
        :meth:`iter_lines` raises :class:`~ctxpack.errors.EngineTimeoutError`
        when the daemon falls silent on the session for ``silence`` seconds
        (stopped, or the link to it broke)."""
        if self._response is None:
            self._wait()
        assert self._response is not None
        return self._response

    def _wait(self) -> None:
        try:
            while True:
                try:
                    ok, response = self._got.get(timeout=0.5)
                    break
                except queue.Empty:
                    _check_silence(self.session, self._silence, self.url)
            if not ok:
                raise response
        except BaseException:
            self.session.close()
            raise
        self._response = _Watched(response, self.session, self._silence, self.url)

    def explain(self, error: str) -> str:
        """``error`` plus why the session ended, when that explains it."""
        srv = self.session.server
        if srv is not None:
            # The daemon may have dropped the session just before it failed
            # the build: give the reader a moment to see the connection end.
            srv.wait_closed(1.0)
        if self.session.closed_reason or self.session.health_overdue():
            return f"{error} (ctxpack: {self.session.describe_close()})"
        return error

    def dropped(self, error: str) -> str | None:
        """When the build error ``error`` is the daemon's echo of the session
        connection going away under the build (gRPC ``Unavailable``: the
        connection was cut, or the daemon dropped it), ctxpack's sentence
        for it (the daemon's text last); ``None`` for any other failure.
        The CLI reports it as a dropped connection (exit 5), as for a tar
        upload whose connection is cut."""
        if not any(s in error for s in _TRANSPORT_GONE):
            return None
        srv = self.session.server
        if srv is not None:
            srv.wait_closed(1.0)  # the reader may see the connection end a moment after the daemon's report
        if not self.session.closed_reason:
            return None
        return (f"the Docker engine at {self.url} lost the BuildKit session connection during the build "
                f"({self.session.describe_close()}); the engine reported: {error}")

    def close(self) -> None:
        try:
            if self._response is not None:
                self._response.close()
            else:
                with self._answer_lock:
                    self._abandoned = True  # an answer still on its way is closed when it comes
                    taken = None if self._got.empty() else self._got.get_nowait()
                if taken is not None and taken[0]:
                    taken[1].close()
        finally:
            self.session.close()

    def __enter__(self) -> SessionBuild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What the daemon's gRPC client says when the session connection is gone.
_TRANSPORT_GONE = ("code = Unavailable", "transport is closing", "error reading from server: EOF")


class _Watched:
    """A build response whose lines are read in a thread of their own, so
    that the reader can give up when the session shows the daemon stopped:
    a blocked read on a silent connection cannot be interrupted otherwise.
    Everything else is the wrapped :class:`~ctxpack.engine.transport.Response`'s."""

    def __init__(self, response: Any, session: Session, silence: float, url: str):
        self._url = url
        self._resp = response
        self._session = session
        self._silence = silence
        self._stuck = False

    def close(self) -> None:
        """Close the response, unless its reader is still blocked on a silent
        daemon: closing would wait for that read forever (the buffered
        reader's lock), so the connection is left to it (a daemon thread)."""
        if not self._stuck:
            self._resp.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)

    def iter_lines(self) -> Any:
        lines: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1024)

        def pump() -> None:
            try:
                for line in self._resp.iter_lines():
                    lines.put(("line", line))
                lines.put(("end", None))
            except BaseException as e:  # noqa: BLE001 - handed to the reader
                lines.put(("error", e))

        threading.Thread(target=pump, name="ctxpack-session-build-stream", daemon=True).start()
        while True:
            try:
                kind, item = lines.get(timeout=0.5)
            except queue.Empty:
                try:
                    _check_silence(self._session, self._silence, self._url)
                except EngineTimeoutError:
                    self._stuck = True
                    raise
                continue
            if kind == "line":
                yield item
            elif kind == "end":
                return
            else:
                raise item


def _check_silence(session: Session, silence: float, url: str) -> None:
    """Raise :class:`~ctxpack.errors.EngineTimeoutError` (a stalled engine,
    exit 7; and end the session) once the daemon has sent nothing on the
    session for ``silence`` seconds, or dropped it that long ago without
    ending the build."""
    srv = session.server
    if srv is None:
        return
    quiet = time.monotonic() - srv.last_received
    if quiet > silence:
        session.close()
        raise EngineTimeoutError(
            f"the Docker engine at {url} stopped talking to the BuildKit session: nothing for {quiet:.0f}s, where "
            "BuildKit checks its health every second (is the daemon stalled, or the connection to it cut?)",
            url, silence)
    if srv.closed and time.monotonic() - (srv.closed_at or time.monotonic()) > silence:
        raise EngineTimeoutError(f"the Docker engine at {url} went on without a build report {silence:.0f}s after "
                                 f"{session.describe_close()}", url, silence)


def _run(ctx: BuildContext, eng: Engine, *, tags: Sequence[str], target: str | None,
         build_args: Mapping[str, str | None] | None, network_mode: str | None, no_cache: bool,
         secrets: Sequence[SecretSpec], ssh: Sequence[SshSpec], on_message: Callable[[dict[str, Any]], None] | None,
         timeout: float, session: Session | None, extra_query: Mapping[str, str] | None) -> SessionBuildResult:
    started = time.monotonic()
    deadline = started + timeout
    sess = session or Session(ctx, secrets=secrets, ssh=ssh)
    query = build_query(sess, tags=tags, target=target, build_args=build_args, network_mode=network_mode,
                        no_cache=no_cache, extra=extra_query)
    messages: list[dict[str, Any]] = []
    error: str | None = None
    image_id: str | None = None
    sb = SessionBuild(eng, ctx, query, session=sess, timeout=min(IDLE_TIMEOUT, timeout))
    try:
        resp = sb.response
        try:
            if resp.status >= 300:
                error = error_message(resp.read())
                messages.append({"message": error, "status": resp.status})
            else:
                for line in resp.iter_lines():
                    if time.monotonic() > deadline:
                        raise SessionError(f"build still running after {timeout:.0f}s")
                    msg = parse_message(line)
                    if msg is None:
                        continue
                    messages.append(msg)
                    if on_message is not None:
                        on_message(msg)
                    if error is None:
                        error = message_error(msg)
                    image_id = image_id_of(msg) or image_id
        except socket.timeout:
            raise SessionError(f"the daemon sent no build progress for {IDLE_TIMEOUT:.0f}s" + _why(sess)) from None
        except OSError as e:
            raise TransportError(f"POST /build: {e}" + _why(sess)) from None
        if error is not None:
            error = sb.explain(error)
        closed = sess.closed_reason
    finally:
        sb.close()
    if error is not None:
        image_id = None
    if error is None and image_id is None:
        error = "the build ended without an image id" + _why(sess)
    if sess.errors and error is not None:
        error += " (session: " + "; ".join(sess.errors[:3]) + ")"
    return SessionBuildResult(image_id, error, messages, sess.stats(), time.monotonic() - started, closed,
                              list(sess.notes), list(sess.filesync.warnings))


def _why(sess: Session) -> str:
    reason = sess.closed_reason
    return f" ({reason})" if reason else ""
