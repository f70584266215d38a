"""One BuildKit build through a session: ``POST /session``, then ``POST /build``.

The build request carries ``version=2&session=ID&remote=client-session`` and
an empty body: BuildKit pulls the Dockerfile and the context through the
session's FileSync service instead of reading a tar.  The progress stream is
newline-delimited JSON as for any build; the image id arrives as
``{"id": "moby.image.id", "aux": {"ID": ...}}``.
"""

from __future__ import annotations

import json
import secrets as _random
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import SessionError, TransportError
from ._unixhttp import UnixHTTPConnection, hijack
from .core import Session, SessionStats
from .services import SecretSpec, SshSpec

__all__ = ["SessionBuildResult", "session_build", "build_query"]

#: Longest silence on the build's message stream before ctxpack gives up.
IDLE_TIMEOUT = 120.0


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


def session_build(ctx: object, socket_path: str, *, tags: Sequence[str] = (), target: str | None = None,
                  build_args: Mapping[str, str | None] | None = None, network_mode: str | None = None,
                  no_cache: bool = False, secrets: Sequence[SecretSpec] = (), ssh: Sequence[SshSpec] = (),
                  on_message: Callable[[dict[str, Any]], None] | None = None, timeout: float = 600.0,
                  session: Session | None = None, extra_query: Mapping[str, str] | None = None,
                  ) -> SessionBuildResult:
    """Build ``ctx`` (BuildKit dialect) on the daemon at ``socket_path``
    through a session.  ``on_message`` sees each JSON message as it arrives.
    Build failures come back in :attr:`SessionBuildResult.error`; raises
    :class:`SessionError` / :class:`TransportError` when the session or the
    daemon cannot be used at all.  Every wait has a deadline."""
    started = time.monotonic()
    deadline = started + timeout
    sess = session or Session(ctx, secrets=secrets, ssh=ssh)
    sess.prepare()
    sock, initial = hijack(socket_path, "/session", sess.headers(), timeout=min(30.0, timeout))
    sess.attach(sock, initial)
    messages: list[dict[str, Any]] = []
    error: str | None = None
    image_id: str | None = None
    try:
        query = urllib.parse.urlencode(build_query(sess, tags=tags, target=target, build_args=build_args,
                                                   network_mode=network_mode, no_cache=no_cache,
                                                   extra=extra_query))
        conn = UnixHTTPConnection(socket_path, timeout=min(IDLE_TIMEOUT, timeout))
        try:
            conn.request("POST", "/build?" + query, body=b"",
                         headers={"Content-Type": "application/x-tar", "Content-Length": "0"})
            resp = conn.getresponse()
            if resp.status >= 300:
                raw = resp.read()
                try:
                    doc = json.loads(raw)
                    error = str(doc.get("message", doc)) if isinstance(doc, dict) else str(doc)
                except ValueError:
                    error = raw.decode("utf-8", "replace").strip()
                messages.append({"message": error, "status": resp.status})
            else:
                while True:
                    if time.monotonic() > deadline:
                        raise SessionError(f"build still running after {timeout:.0f}s")
                    line = resp.readline()
                    if not line:
                        break
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        msg = {"raw": line.decode("utf-8", "replace")}
                    if not isinstance(msg, dict):
                        msg = {"raw": msg}
                    messages.append(msg)
                    if on_message is not None:
                        on_message(msg)
                    if error is None and ("error" in msg or "errorDetail" in msg):
                        detail = msg.get("errorDetail") or {}
                        error = str(msg.get("error") or detail.get("message") or msg)
                    aux = msg.get("aux")
                    if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
                        image_id = aux["ID"]
        except socket.timeout:
            raise SessionError(f"the daemon sent no build progress for {conn.timeout:.0f}s"
                               + _why(sess)) from None
        except OSError as e:
            raise TransportError(f"POST /build: {e}" + _why(sess)) from None
        finally:
            conn.close()
    finally:
        if error is not None and sess.server is not None:
            # The daemon may have dropped the session just before it failed
            # the build: give the reader a moment to see the connection end.
            sess.server.wait_closed(1.0)
        closed = sess.closed_reason
        hint = sess.describe_close() if (error is not None and (closed or sess.health_overdue())) else ""
        sess.close()
    if error is not None:
        image_id = None
        if hint:
            error += f" (ctxpack: {hint})"
    if error is None and image_id is None:
        error = "the build ended without an image id" + _why(sess)
    if sess.errors and error is not None:
        error += " (session: " + "; ".join(sess.errors[:3]) + ")"
    return SessionBuildResult(image_id, error, messages, sess.stats(), time.monotonic() - started, closed)


def _why(sess: Session) -> str:
    reason = sess.closed_reason
    return f" ({reason})" if reason else ""
