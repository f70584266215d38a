"""A BuildKit session: the gRPC services ctxpack serves to the daemon.

A :class:`Session` is made for one build context; its :meth:`~Session.headers`
go on the ``POST /session`` request, and once the daemon has answered ``101``
:meth:`~Session.attach` serves the services on the upgraded connection
(see docs/session.md):

* ``X-Docker-Expose-Session-Uuid``: a fresh id, also the build's ``session=``;
* ``X-Docker-Expose-Session-Name``: the context directory's base name;
* ``X-Docker-Expose-Session-Sharedkey``: ``sha256("<node id>:<context dir>")``
  with the docker CLI's node id (``$DOCKER_CONFIG/.buildNodeID``), so that
  the daemon diffs this upload against the previous one of the same
  directory (whichever client made it);
* one ``X-Docker-Expose-Session-Grpc-Method`` per method served.
"""

from __future__ import annotations

import hashlib
import os
import secrets as _random
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...context import BuildContext, Dialect
from ...errors import SessionError
from .filesync import DirStats, FileSyncService, dockerfile_listing, iter_context_listing
from .grpcserver import GrpcServer, Method
from .listcache import ContextListing
from .services import DockerAuth, SecretSpec, SecretStore, SshForwarder, SshSpec, health_check

__all__ = ["Session", "SessionStats", "node_id", "shared_key"]

HEALTH = "/grpc.health.v1.Health/Check"
DIFF_COPY = "/moby.filesync.v1.FileSync/DiffCopy"
GET_SECRET = "/moby.buildkit.secrets.v1.Secrets/GetSecret"
CHECK_AGENT = "/moby.sshforward.v1.SSH/CheckAgent"
FORWARD_AGENT = "/moby.sshforward.v1.SSH/ForwardAgent"
CREDENTIALS = "/moby.filesync.v1.Auth/Credentials"


def _docker_config_dir() -> str:
    return os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def node_id(config_dir: str | None = None) -> str:
    """The docker CLI's build node id (``.buildNodeID`` in the docker config
    directory), created as the CLI creates it when missing; a per-process
    random id when the directory is not writable."""
    path = os.path.join(config_dir or _docker_config_dir(), ".buildNodeID")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        if text:
            return text
    except OSError:
        pass
    new = _random.token_hex(32)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:
            f.write(new)
    except FileExistsError:
        return node_id(config_dir)
    except OSError:
        pass
    return new


def shared_key(context_dir: str, config_dir: str | None = None) -> str:
    """``sha256("<node id>:<context dir>")`` hex, as the docker CLI computes it."""
    return hashlib.sha256(f"{node_id(config_dir)}:{context_dir}".encode()).hexdigest()


def _new_id() -> str:
    # BuildKit's identity.NewID: 25 characters of base-36.
    n = int.from_bytes(_random.token_bytes(16), "big")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(25):
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "".join(out)


@dataclass
class SessionStats:
    """What a session served: one :class:`DirStats` per DiffCopy call, and
    the connection's byte counts."""

    dirs: list[DirStats] = field(default_factory=list)
    bytes_out: int = 0
    bytes_in: int = 0
    health_checks: int = 0
    secrets_asked: list[str] = field(default_factory=list)
    ssh_connections: int = 0

    @property
    def files_requested(self) -> int:
        """Files the daemon asked for (REQ packets), all directories."""
        return sum(d.requests for d in self.dirs)

    @property
    def data_bytes(self) -> int:
        """File content bytes sent in DATA packets."""
        return sum(d.data_bytes for d in self.dirs)

    @property
    def upload_seconds(self) -> float:
        """Time the ``context`` transfers took (all DiffCopy calls for it)."""
        return sum(d.seconds for d in self.dirs if d.dir_name == "context")

    @property
    def listing_from(self) -> str | None:
        """Where the whole context's listing came from (``"walk"``,
        ``"cache"``, ``"cache, then walk"``: the kept listing, see
        :mod:`ctxpack.engine.session.listcache`); ``None`` before it was asked for."""
        calls = [d for d in self.dirs if d.dir_name == "context"]
        return max(calls, key=lambda d: d.entries).listing_from if calls else None

    def context_requests(self) -> list[str]:
        """Paths requested from ``context`` (up to the per-call cap)."""
        return [p for d in self.dirs if d.dir_name == "context" for p in d.requested_paths]

    def as_dict(self) -> dict[str, object]:
        """For ``--progress json`` and the library result."""
        return {
            "files_requested": self.files_requested,
            "data_bytes": self.data_bytes,
            "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in,
            "health_checks": self.health_checks,
            "upload_seconds": round(self.upload_seconds, 3),
            "listing_from": self.listing_from,
            "dirs": [
                {"dir_name": d.dir_name, "entries": d.entries, "requests": d.requests,
                 "data_bytes": d.data_bytes, "stat_bytes": d.stat_bytes, "seconds": round(d.seconds, 3),
                 "listing_ready": round(d.listing_ready, 3), "listing_sent": round(d.listing_sent, 3),
                 "listing_from": d.listing_from,
                 "first_request": None if d.first_request is None else round(d.first_request, 3)}
                for d in self.dirs
            ],
        }


class Session:
    """The session for one build of ``ctx`` (a BuildKit-dialect
    :class:`~ctxpack.context.BuildContext`), with ``secrets`` and ``ssh``
    forwarded and registry credentials from the docker config (``auth``).
    ``listing_cache``: serve the previous build's listing of the context
    when ``lstat`` proves it current, and keep this one for the next build
    (:mod:`ctxpack.engine.session.listcache`; ``CTXPACK_SESSION_CACHE=0``
    turns it off everywhere)."""

    def __init__(self, ctx: BuildContext, *, secrets: Sequence[SecretSpec] = (), ssh: Sequence[SshSpec] = (),
                 auth: bool = True, config_dir: str | None = None, session_id: str | None = None,
                 key: str | None = None, listing_cache: bool = True, context_later: bool = False):
        self.ctx = ctx
        root = ctx.root
        self.id = session_id or _new_id()
        self.name = os.path.basename(root) or "context"
        self.shared_key = key or shared_key(root, config_dir)
        df_path = ctx.dockerfile_path
        if ctx.dockerfile_stdin:
            self.dockerfile_name = "Dockerfile"
            df_listing = dockerfile_listing(None, ctx.dockerfile_data or b"", "Dockerfile")
        elif df_path is not None:
            self.dockerfile_name = os.path.basename(df_path)
            df_listing = dockerfile_listing(df_path, None, self.dockerfile_name)
        else:
            raise SessionError(f"no Dockerfile in {root}")
        self._use_listing_cache = listing_cache
        #: The previous build's listing, kept and proved current (``None``: off).
        self.listing_cache: ContextListing | None = None
        self.filesync = FileSyncService({"dockerfile": df_listing}, roots={"context": root})
        if context_later:
            self.filesync.defer("context")
        else:
            self.provide_context(ctx)
        self.filesync.when_uploaded(self._keep_listing)
        self.secret_store = SecretStore(secrets)
        self.ssh = SshForwarder(ssh)
        self.auth = DockerAuth(config_dir) if auth else None
        self.methods: dict[str, Method] = {
            HEALTH: Method(health_check, inline=True),
            DIFF_COPY: Method(self.filesync.diff_copy),
            GET_SECRET: Method(self.secret_store.get_secret),
            CHECK_AGENT: Method(self.ssh.check_agent),
            FORWARD_AGENT: Method(self.ssh.forward_agent),
        }
        if self.auth is not None:
            self.methods[CREDENTIALS] = Method(self.auth.credentials)
        self.server: GrpcServer | None = None
        self.errors: list[str] = []
        #: What ctxpack decided about this session, for the user (``ctxpack build`` prints them).
        self.notes: list[str] = []
        self._on_close: Callable[[], None] | None = None

    def provide_context(self, ctx: BuildContext) -> None:
        """Serve ``ctx`` (the same directory and rules as the one the session
        was made for; e.g. its minimal selection) as ``context``, and start
        its walk.  With ``context_later=True`` the daemon's ``context`` calls
        wait for this (or :meth:`refuse_context`), so that the session and
        ``POST /build`` can start before the Dockerfile analysis has decided
        the context."""
        if ctx.root != self.ctx.root:
            raise ValueError(f"the session serves {self.ctx.root}, not {ctx.root}")
        self.ctx = ctx
        if self._use_listing_cache and ctx.dialect is Dialect.BUILDKIT:
            self.listing_cache = ContextListing(ctx)
        self.filesync.provide("context", self.listing_cache or (lambda: iter_context_listing(ctx)))

    def refuse_context(self, message: str) -> None:
        """No context will come (``context_later=True``): the daemon's
        ``context`` calls fail with ``message``."""
        self.filesync.refuse("context", message)

    def headers(self) -> list[tuple[str, str]]:
        """The ``POST /session`` headers (without Upgrade/Connection)."""
        out = [
            ("X-Docker-Expose-Session-Uuid", self.id),
            ("X-Docker-Expose-Session-Name", self.name),
            ("X-Docker-Expose-Session-Sharedkey", self.shared_key),
        ]
        out += [("X-Docker-Expose-Session-Grpc-Method", m) for m in self.methods]
        return out

    def prepare(self) -> None:
        """Start walking the context now (in a thread), while the daemon gets
        ready: its DiffCopy call then streams the entries walked so far and
        the rest as the walk yields them.  (A context still to come starts
        its walk when :meth:`provide_context` gives it.)"""
        self.filesync.prepare("context")

    def attach(self, sock: socket.socket, initial: bytes = b"", *,
               on_close: Callable[[], None] | None = None) -> GrpcServer:
        """Serve on the upgraded connection ``sock`` (in a thread);
        ``on_close`` runs when the session is closed (the transport's cleanup:
        closing the socket, ending an ssh helper)."""
        self.server = GrpcServer(sock, self.methods, initial=initial,
                                 on_error=lambda m, e: self.errors.append(f"{m}: {type(e).__name__}: {e}"))
        self._on_close = on_close
        self.server.start()
        return self.server

    @property
    def closed_reason(self) -> str | None:
        """Why the connection ended (``None`` while it is up)."""
        if self.server is None or not self.server.closed:
            return None
        return self.server.close_reason

    def describe_close(self) -> str:
        """Why the session ended, for error messages: the connection's
        reason, and a hint when health checks had stopped being answered."""
        srv = self.server
        if srv is None:
            return "the session was never attached"
        text = f"the session ended: {srv.close_reason}" if srv.closed else "the session failed"
        last = srv.last_health if srv.last_health is not None else srv.started
        ended = srv.closed_at or time.monotonic()
        gap = max(srv.max_health_gap, ended - last)
        if gap > 9.0:
            text += (f"; this process answered no health check for {gap:.0f}s: BuildKit drops a session "
                     "whose health check is not answered within 10s (was this process too busy to answer?)")
        return text

    def health_overdue(self) -> bool:
        """Whether no health check was answered for longer than BuildKit waits."""
        srv = self.server
        if srv is None:
            return False
        last = srv.last_health if srv.last_health is not None else srv.started
        return max(srv.max_health_gap, (srv.closed_at or time.monotonic()) - last) > 9.0

    def _keep_listing(self) -> None:
        # The daemon has the context: keep its listing for the next build
        # (in a thread, niced, while the engine builds).
        made = self.filesync.made("context")
        if self.listing_cache is not None and made is not None and made.complete and made.error is None:
            self.listing_cache.save_beside(made.entries)

    def close(self) -> None:
        """End the session (GOAWAY, then shut the connection); wait a
        moment for the listing being kept."""
        if self.server is not None:
            self.server.close()
            self.server.join(5)
        if self.listing_cache is not None:
            self.listing_cache.join(5.0)
        if self._on_close is not None:
            fn, self._on_close = self._on_close, None
            fn()

    def stats(self) -> SessionStats:
        srv = self.server
        return SessionStats(
            dirs=list(self.filesync.stats),
            bytes_out=srv.bytes_out if srv else 0,
            bytes_in=srv.bytes_in if srv else 0,
            health_checks=srv.health_checks if srv else 0,
            secrets_asked=list(self.secret_store.asked),
            ssh_connections=self.ssh.connections,
        )
