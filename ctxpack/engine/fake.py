"""A fake Docker daemon on a unix socket: answers ``/_ping``, ``/version``
and ``POST /build`` the way a classic engine does, and records what came.

Point any Engine API client at it (``DOCKER_HOST=unix://…``): the docker CLI
(``DOCKER_BUILDKIT=0 docker build DIR`` uploads its context here, which is
how ctxpack's tests learn Docker's exact tar), docker-py, or ctxpack's own
transport.  What happens to a build body is the caller's choice:
:func:`keep` (bytes in memory, for differential tests), :func:`discard`
(count only, for timing a 1 GB upload), :func:`tar_names` (parse the tar
stream, keep member names) or :func:`sha256` (digest only).

It can also misbehave as engines do, for the tests of ctxpack's timeouts
and error messages: ``mute`` (accepts, never reads or answers),
``read_pause`` (a slow reader of build bodies), ``cut_after`` (hangs up
in the middle of an upload), and fixed :class:`Reply` bytes for a path,
after which it goes on, hangs up or holds the connection silent.

Standard library only; one thread per connection.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import socketserver
import struct
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, BinaryIO, Literal, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeDaemon", "RequestRecord", "Reply", "keep", "discard", "tar_names", "sha256"]

API_VERSION = "1.47"
_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(/.*)$")
_READ = 1 << 20
# A slow reader (read_pause) takes a build body at most this much at a time.
_SLOW_READ = 256 << 10

#: What a body consumer returns is stored as the request's ``result``.
Consumer = Callable[[BinaryIO], Any]


def keep(body: BinaryIO) -> bytes:
    """Keep the whole body (the record's ``body`` is then these bytes)."""
    return body.read()


def discard(body: BinaryIO) -> None:
    """Read the body in large pieces and throw it away."""
    buf = bytearray(_READ)
    while body.readinto(buf):  # type: ignore[attr-defined]
        pass


def sha256(body: BinaryIO) -> str:
    """The body's SHA-256, hex; nothing kept."""
    h = hashlib.sha256()
    buf = bytearray(_READ)
    view = memoryview(buf)
    while n := body.readinto(buf):  # type: ignore[attr-defined]
        h.update(view[:n])
    return h.hexdigest()


def tar_names(body: BinaryIO) -> list[str]:
    """Member names of a plain tar body, directories with a trailing ``/``."""
    names = []
    with tarfile.open(fileobj=io.BufferedReader(cast(Any, body), _READ), mode="r|") as tf:
        for m in tf:
            names.append(m.name + "/" if m.isdir() else m.name)
    discard(body)
    return names


@dataclass(frozen=True)
class Reply:
    """A fixed answer to the requests for one path: ``raw`` is sent as it
    is (status line, headers, any body) once the request has come whole;
    then ``then``: ``"serve"`` (the connection goes on), ``"close"`` (hang
    up) or ``"hold"`` (keep the connection open and say nothing more, until
    the daemon stops: an engine stalled in the middle of an answer, or one
    that never calls back on an upgraded session)."""

    raw: bytes
    then: Literal["serve", "close", "hold"] = "serve"


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the fake daemon received."""

    method: str
    #: Request target as sent, with the ``/v1.xx`` prefix and query.
    target: str
    #: Path without the API version prefix and the query.
    path: str
    #: Query parameters in order, repeated keys kept.
    query_items: tuple[tuple[str, str], ...]
    #: Headers in order as received.
    headers: tuple[tuple[str, str], ...]
    #: The body, when the consumer kept it (``keep``); else ``b""``.
    body: bytes
    body_size: int
    #: What the body consumer returned (``keep``: the bytes again).
    result: Any
    #: Pid of the connecting process (``SO_PEERCRED``), None if unknown.
    pid: int | None
    #: ``time.monotonic()`` when the request was fully received (or cut).
    received_at: float
    #: Why the body did not arrive whole (the client went away, or
    #: ``cut_after``); ``None``: it did.  Such requests are kept apart
    #: (:meth:`FakeDaemon.cut_requests`).
    error: str | None = None

    @property
    def query(self) -> dict[str, str]:
        """Query parameters as a dict (for repeated keys the last one wins)."""
        return dict(self.query_items)

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive)."""
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)


class _Body(io.RawIOBase):
    """The request body, de-chunked, as a raw stream; counts bytes."""

    def __init__(self, rfile: BinaryIO, chunked: bool, length: int, *, piece: int | None = None,
                 on_read: Callable[[int], None] | None = None):
        self.rfile = rfile
        self.chunked = chunked
        self.left = 0 if chunked else length
        self.done = not chunked and length == 0
        self.total = 0
        self._started = False
        # piece: the most one read takes; on_read(n) after each read of n bytes.
        self._piece = piece
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        if self._started:
            self.rfile.readline(3)  # CRLF after the previous chunk's data
        self._started = True
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionError("connection closed inside chunked body")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self.done = True
        self.left = size

    def readinto(self, b: Any) -> int:
        while self.left == 0:
            if self.done or not self.chunked:
                self.done = True
                return 0
            self._next_chunk()
        want = min(len(b), self.left, self._piece or self.left)
        got = self.rfile.readinto(memoryview(b)[:want])  # type: ignore[attr-defined]
        if not got:
            raise ConnectionError("connection closed inside the body")
        self.left -= got
        self.total += got
        if self._on_read is not None:
            self._on_read(int(got))
        return int(got)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ctxpack-fake-daemon"
    sys_version = ""
    rbufsize = _READ
    timeout = 120
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def handle(self) -> None:
        if self.server.mute:
            self.server.stopping.wait()  # accepted; never read, never answered
            return
        super().handle()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        match = _VERSION_PREFIX.match(split.path)
        path = match.group(1) if match else split.path
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        build = path == "/build" and self.command == "POST"
        body = _Body(cast(BinaryIO, self.rfile), "chunked" in te, int(self.headers.get("Content-Length") or 0),
                     piece=_SLOW_READ if build and self.server.read_pause else None,
                     on_read=self._build_read if build else None)
        consume = self.server.consume if build else keep
        result: Any = None
        error = None
        try:
            result = consume(cast(BinaryIO, body))
            discard(cast(BinaryIO, body))  # whatever the consumer left
        except (OSError, ValueError, ConnectionError, tarfile.TarError) as exc:
            error = f"{self.command} {self.path}: {exc!r}"
            self.server.note_error(error)
            self.close_connection = True
        record = RequestRecord(
            method=self.command, target=self.path, path=path,
            query_items=tuple(parse_qsl(split.query, keep_blank_values=True)),
            headers=tuple(self.headers.items()),
            body=result if isinstance(result, bytes) else b"", body_size=body.total, result=result,
            pid=cast("int | None", self.client_address[0]), received_at=time.monotonic(), error=error,
        )
        self.server.record(record)
        if error is not None:
            return
        reply = self.server.replies.get(path)
        if reply is not None:
            self._send_fixed(reply)
        elif path == "/_ping":
            self._send(200, "text/plain; charset=utf-8", b"OK", self.server.ping_headers())
        elif path == "/build" and self.command == "POST":
            self._reply_build(record)
        elif path == "/version" and self.command in ("GET", "HEAD"):
            self._reply_json(200, self.server.version_payload())
        elif path == "/info" and self.command in ("GET", "HEAD"):
            self._reply_json(200, {"OSType": "linux", "Architecture": "x86_64", "ServerVersion": "ctxpack-fake"})
        elif path == "/build/cancel" and self.command == "POST":
            self._send(200, "text/plain; charset=utf-8", b"", [("API-Version", self.server.api_version)])
        else:
            self._reply_json(404, {"message": f"page not found: {self.command} {path}"})

    def _build_read(self, n: int) -> None:
        """After each read of a build body: count it, pace it, cut it."""
        server = self.server
        total = server.count_received(n)
        if server.cut_after is not None and total > server.cut_after:
            self.connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionError(f"hung up after {total} bytes of the build body (cut_after={server.cut_after})")
        if server.read_pause:
            time.sleep(server.read_pause)

    def _send_fixed(self, reply: Reply) -> None:
        self.wfile.write(reply.raw)
        self.wfile.flush()
        if reply.then == "hold":
            self.server.stopping.wait()
        if reply.then != "serve":
            self.close_connection = True

    def _send(self, status: int, ctype: str, payload: bytes, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for key, value in extra:
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _reply_json(self, status: int, obj: object) -> None:
        self._send(status, "application/json", json.dumps(obj).encode() + b"\n",
                   [("API-Version", self.server.api_version)])

    def _reply_build(self, record: RequestRecord) -> None:
        # A stable, meaningful image ID: the body's digest where it is known.
        if isinstance(record.result, bytes):
            digest = hashlib.sha256(record.result).hexdigest()
        elif isinstance(record.result, str) and len(record.result) == 64:
            digest = record.result
        else:
            digest = hashlib.sha256(str(record.body_size).encode()).hexdigest()
        image_id = f"sha256:{digest}"
        # httputils.BoolValue: docker-py sends q=False
        quiet = record.query.get("q", "").strip().lower() not in ("", "0", "no", "false", "none")
        messages: list[dict[str, object]] = []
        if not quiet:
            messages.append({"stream": f"ctxpack fake daemon: received {record.body_size} bytes of build context\n"})
        messages.append({"aux": {"ID": image_id}})
        if quiet:
            messages.append({"stream": image_id + "\n"})  # with q=1 the CLI prints only this
        else:
            messages.append({"stream": f"Successfully built {digest[:12]}\n"})
            messages.extend({"stream": f"Successfully tagged {v}\n"} for k, v in record.query_items if k == "t")
        # Streamed as dockerd streams it: chunked, one chunk per message
        # (docker-py's decode=True reads a chunked body line by line, a
        # Content-Length one as a single JSON document).
        self.send_response(200)
        self.send_header("API-Version", self.server.api_version)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for m in messages:
            line = json.dumps(m).encode() + b"\r\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@dataclass(frozen=True)
class _Behaviour:
    """How the daemon misbehaves (see :class:`FakeDaemon`)."""

    mute: bool = False
    read_pause: float = 0.0
    cut_after: int | None = None
    replies: Mapping[str, Reply] = field(default_factory=dict)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False

    def __init__(self, path: str, consume: Consumer, api_version: str, builder_version: str, max_log: int,
                 behaviour: _Behaviour):
        self.consume = consume
        self.api_version = api_version
        self.builder_version = builder_version
        self.mute = behaviour.mute
        self.read_pause = behaviour.read_pause
        self.cut_after = behaviour.cut_after
        self.replies = dict(behaviour.replies)
        # Set when the daemon stops: mute and held connections let go.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._records: list[RequestRecord] = []
        self._cut: list[RequestRecord] = []
        self._received = 0
        self._max_log = max_log
        self._conns: set[socket.socket] = set()
        self.errors: list[str] = []
        super().__init__(path, _Handler)

    def ping_headers(self) -> list[tuple[str, str]]:
        return [("API-Version", self.api_version), ("Builder-Version", self.builder_version),
                ("Docker-Experimental", "false"), ("OSType", "linux"), ("Swarm", "inactive"),
                ("Cache-Control", "no-cache, no-store, must-revalidate"), ("Pragma", "no-cache")]

    def version_payload(self) -> dict[str, object]:
        return {"Version": "ctxpack-fake", "ApiVersion": self.api_version, "MinAPIVersion": "1.24",
                "Os": "linux", "Arch": "amd64", "Experimental": False, "Components": []}

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _addr = super().get_request()
        pid: int | None = None
        peercred = getattr(socket, "SO_PEERCRED", None)
        if peercred is not None:
            try:
                pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i")))[0] or None
            except OSError:
                pid = None
        with self._lock:
            self._conns.add(conn)
        return conn, (pid, 0)  # BaseHTTPRequestHandler wants a (host, port)-like address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.note_error(f"handler error for pid {client_address[0]}: {sys.exc_info()[1]!r}")

    def note_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
            del self.errors[: -self._max_log]

    def record(self, rec: RequestRecord) -> None:
        with self._lock:
            kept = self._records if rec.error is None else self._cut
            kept.append(rec)
            del kept[: -self._max_log]
            self._arrived.notify_all()

    def count_received(self, n: int) -> int:
        with self._lock:
            self._received += n
            return self._received

    @property
    def received(self) -> int:
        with self._lock:
            return self._received

    def cut(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._cut)

    def wait_for(self, path: str, timeout: float) -> RequestRecord | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = next((r for r in (*self._records, *self._cut) if r.path == path), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._arrived.wait(left)

    def records_since(self, since: float, pid: int | None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records
                    if r.received_at >= since and (pid is None or r.pid is None or r.pid == pid)]

    def take(self) -> list[RequestRecord]:
        with self._lock:
            out, self._records = self._records, []
        return out

    def abort_connections(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeDaemon:
    """A fake classic Docker engine on a unix socket (see the module doc).

    ``consume`` decides what becomes of ``POST /build`` bodies (default
    :func:`keep`); other requests' bodies are kept.  Use as a context
    manager or :meth:`start` / :meth:`stop`; reusable for any number of
    requests; ``build_lock`` lets callers run one build at a time.
    ``api_version`` and ``builder_version`` are what ``/_ping`` says.

    Misbehaving, for tests of what a client does then:

    * ``mute``: every connection is accepted and then neither read nor
      answered (a hung daemon);
    * ``read_pause``: seconds to sleep after each read (of at most 256 KiB)
      of a build body (a slow engine);
    * ``cut_after``: hang up once more than this many bytes of build bodies
      have come in all (an engine that goes away mid-upload);
    * ``replies``: fixed :class:`Reply` bytes for a path (as in
      :attr:`RequestRecord.path`, no version prefix) instead of the usual
      answer.
    """

    def __init__(self, socket_dir: str | os.PathLike[str] | None = None, *, consume: Consumer = keep,
                 api_version: str = API_VERSION, builder_version: str = "1", max_log: int = 1000,
                 mute: bool = False, read_pause: float = 0.0, cut_after: int | None = None,
                 replies: Mapping[str, Reply] | None = None) -> None:
        self._socket_dir = os.fspath(socket_dir) if socket_dir is not None else None
        self._args = (consume, api_version, builder_version, max_log,
                      _Behaviour(mute, read_pause, cut_after, dict(replies or {})))
        self._tmpdir: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        #: Held by callers for the duration of one build, when they share the daemon.
        self.build_lock = threading.RLock()

    def start(self) -> FakeDaemon:
        """Start listening (idempotent)."""
        with self._state_lock:
            if self._server is not None:
                return self
            if self._socket_dir is None:
                # AF_UNIX paths are limited to ~108 bytes: prefer /tmp.
                base = tempfile.gettempdir()
                if len(base) > 60 and os.path.isdir("/tmp"):
                    base = "/tmp"
                self._tmpdir = tempfile.mkdtemp(prefix="ctxpack-fake-", dir=base)
            path = os.path.join(self._socket_dir or cast(str, self._tmpdir), "docker.sock")
            if os.path.exists(path):
                os.unlink(path)
            server = _Server(path, *self._args)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name="ctxpack-fake-daemon", daemon=True)
            thread.start()
            self._server, self._thread = server, thread
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop, drop open connections, remove the socket (idempotent)."""
        with self._state_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            tmpdir, self._tmpdir = self._tmpdir, None
        if server is not None:
            path = server.server_address
            if thread is not None and thread.is_alive():
                server.shutdown()
            server.stopping.set()
            server.abort_connections()
            server.server_close()
            if thread is not None:
                thread.join(timeout)
            if isinstance(path, str) and os.path.exists(path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def __enter__(self) -> FakeDaemon:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _require(self) -> _Server:
        if self._server is None:
            raise RuntimeError("FakeDaemon is not running; call start()")
        return self._server

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def socket_path(self) -> str:
        """The listening unix socket's path."""
        return cast(str, self._require().server_address)

    @property
    def docker_host(self) -> str:
        """The value for ``DOCKER_HOST``."""
        return "unix://" + self.socket_path

    @property
    def errors(self) -> list[str]:
        """Problems seen while serving (a client vanishing mid-upload, say)."""
        return list(self._require().errors)

    def set_consumer(self, consume: Consumer) -> None:
        """Change what becomes of later build bodies."""
        self._require().consume = consume

    def requests_since(self, since: float, pid: int | None = None) -> list[RequestRecord]:
        """Requests fully received at or after ``since`` (``time.monotonic()``),
        from ``pid`` only when the peer's pid is known."""
        return self._require().records_since(since, pid)

    def take(self) -> list[RequestRecord]:
        """Every request recorded so far, forgetting them."""
        return self._require().take()

    def abort_connections(self) -> None:
        """Cut every open connection (a daemon that goes away)."""
        self._require().abort_connections()

    @property
    def received(self) -> int:
        """Bytes of build bodies received so far, all requests (counted as they come)."""
        return self._require().received

    def cut_requests(self) -> list[RequestRecord]:
        """The requests whose body did not come whole (each with its ``error``)."""
        return self._require().cut()

    def wait_for(self, path: str, timeout: float) -> RequestRecord | None:
        """The first request for ``path`` (no version prefix), received whole
        or cut (its ``error`` says), waiting up to ``timeout`` seconds for
        it; ``None`` if none came."""
        return self._require().wait_for(path, timeout)
