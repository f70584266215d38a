"""Capture the exact build-context tar that the ``docker`` CLI uploads.

This is a test helper (not a test module).  It gives differential tests a
reference implementation of ``.dockerignore`` handling: the real docker CLI
client computes the build context itself and we record what it sends.

How it works
------------
With ``DOCKER_BUILDKIT=0`` the CLI uses the legacy builder path: it walks the
context directory, applies ``.dockerignore``, tars the result and streams it
to the daemon in ``POST /v<api>/build``.  No daemon is needed: we point
``DOCKER_HOST`` at a unix socket served by :class:`CaptureServer`, a small
threaded HTTP/1.1 server that answers the ping, records the build request
(query parameters, headers, full body) and replies with a JSON message stream
that makes ``docker build`` exit 0.

Observed protocol (docker CLI 28.2.2):

* ``HEAD /_ping`` (falls back to ``GET /_ping``).  The CLI negotiates the API
  version from the ``API-Version`` response header and uses it as URL prefix.
* ``POST /v1.47/build?dockerfile=Dockerfile&version=1[&...]`` with headers
  ``Content-Type: application/x-tar``, ``Transfer-Encoding: chunked`` and
  ``X-Registry-Config: e30=`` (base64 of ``{}``).  Flags map to further query
  parameters (``t``, ``q``, ``buildargs``, ``labels``, ``target``, ...).
* Nothing else.  An invalid ``.dockerignore`` makes the CLI fail after the
  ping and before the build request ("error checking context: syntax error
  in pattern").

Quirks worth knowing when comparing against the captured tar:

* With ``-f -`` (Dockerfile on stdin) or ``-f`` pointing outside the context,
  the CLI appends a ``.dockerfile.<20 hex>`` member holding the Dockerfile,
  uses that name as the ``dockerfile`` query parameter, and appends
  ``"\\n.dockerfile.<hex>\\n"`` to ``.dockerignore`` (or, with no
  ``.dockerignore``, appends a new one containing
  ``".dockerignore\\n.dockerfile.<hex>\\n"``, mode 0600).  The relative order
  of those appended members comes from a Go map and is not stable.
* In that same case the uploaded tar is *truncated*: the last member's
  padding and the end-of-archive blocks are never sent (apparently moby's
  ``archive.ReplaceFileTarWrapper`` closes the pipe before the tar writer).
  :attr:`Capture.tar` keeps the bytes exactly as sent,
  :attr:`Capture.tar_complete` tells whether the end-of-archive marker was
  present, and :attr:`Capture.members` is parsed tolerantly.
* ``Dockerfile`` and ``.dockerignore`` are always sent, even when
  ``.dockerignore`` excludes them.
* Members come in depth-first walk order with each directory's entries
  sorted by byte value (``a``, ``a/c``, ``a-b``); uid/gid are forced to 0 and
  uname/gname are empty; long or non-ASCII names use PAX ``path`` records;
  hard links are sent as type ``1`` members.  The tar is byte-identical
  across runs for an unchanged tree.

Typical use::

    from dockercli import capture_context

    cap = capture_context(tmp_path)
    assert cap.returncode == 0, cap.stderr
    assert "Dockerfile" in cap.names

Only the standard library is used.
"""

from __future__ import annotations

import atexit
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Union, cast
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "API_VERSION",
    "Capture",
    "CaptureServer",
    "DockerCLI",
    "DockerCLITimeout",
    "RequestRecord",
    "capture_context",
    "docker_cli_missing_reason",
    "docker_executable",
    "shared_server",
    "stop_shared_server",
]

StrPath = Union[str, "os.PathLike[str]"]

#: API version the capture server advertises; the CLI uses it as URL prefix.
API_VERSION = "1.47"

#: Seconds a connection may stay silent before the server drops it.  Keeps
#: handler threads from lingering on a stuck or killed client.
CONNECTION_IDLE_TIMEOUT = 30.0

_TAR_BLOCK = 512
_VERSION_PREFIX = re.compile(r"^/v[0-9]+(?:\.[0-9]+)*(/.*)$")


# --------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------


def docker_executable() -> str | None:
    """Return the path of the ``docker`` CLI found on ``PATH``, or None."""
    return shutil.which("docker")


_missing_reason_lock = threading.Lock()
_missing_reason_cache: list[str | None] = []


def docker_cli_missing_reason() -> str | None:
    """Explain why the docker CLI cannot be used for captures, or return None.

    Checks that unix sockets are available, that ``docker`` is on ``PATH``
    and runs, and finally performs one real smoke capture of a tiny context
    (on a private, short-lived server) so that a CLI which no longer supports
    the legacy builder, or otherwise fails to upload, is reported here rather
    than as confusing test failures.  The result is cached for the process.
    """
    with _missing_reason_lock:
        if not _missing_reason_cache:
            _missing_reason_cache.append(_compute_missing_reason())
        return _missing_reason_cache[0]


def _compute_missing_reason() -> str | None:
    if not hasattr(socket, "AF_UNIX"):
        return "unix domain sockets are not available on this platform"
    exe = docker_executable()
    if exe is None:
        return "docker CLI not found on PATH"
    try:
        proc = subprocess.run(
            [exe, "--version"],
            env=_clean_environ(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run {exe} --version: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        return f"{exe} --version exited with {proc.returncode}: {err}"
    version = proc.stdout.decode("utf-8", "replace").strip()
    try:
        with tempfile.TemporaryDirectory(prefix="ctxpack-smoke-") as tmp:
            ctx = os.path.join(tmp, "ctx")
            os.mkdir(ctx)
            with open(os.path.join(ctx, "Dockerfile"), "w") as fh:
                fh.write("FROM scratch\n")
            with CaptureServer() as server:
                cap = capture_context(ctx, server=server, timeout=30)
    except Exception as exc:  # noqa: BLE001 - any failure means "unusable"
        return f"{version}: smoke capture failed: {exc!r}"
    if cap.returncode != 0 or cap.tar is None:
        detail = cap.stderr.strip().splitlines()[-1:] or ["no output"]
        return (
            f"{version}: smoke capture failed (exit {cap.returncode}, "
            f"{'no upload' if cap.tar is None else 'uploaded'}): {detail[0]}"
        )
    if "Dockerfile" not in cap.names:
        return f"{version}: smoke capture did not contain the Dockerfile"
    return None


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request received by the capture server."""

    method: str
    #: Request target as sent, including the ``/v1.xx`` prefix and query.
    target: str
    #: Path without the API version prefix and without the query.
    path: str
    #: Query parameters in order, repeated keys kept.
    query_items: tuple[tuple[str, str], ...]
    #: Headers in order as received.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Pid of the connecting process (``SO_PEERCRED``), None if unknown.
    pid: int | None
    #: ``time.monotonic()`` when the request was fully received.
    received_at: float

    @property
    def query(self) -> dict[str, str]:
        """Query parameters as a dict (for repeated keys the last one wins)."""
        return dict(self.query_items)

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (case-insensitive)."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None


@dataclass
class Capture:
    """Result of one ``docker build`` run against a :class:`CaptureServer`."""

    #: The full command line that was run.
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    #: Query parameters of the build request ({} when nothing was uploaded).
    #: For repeated keys (e.g. several ``-t``) use :attr:`query_items`.
    query: dict[str, str]
    query_items: list[tuple[str, str]]
    #: Headers of the build request ([] when nothing was uploaded).
    headers: list[tuple[str, str]]
    #: Build request body exactly as sent (gzip with ``--compress``), or None.
    body: bytes | None
    #: The tar stream (``body`` decompressed), exactly as produced, or None.
    tar: bytes | None
    #: Tar members in stream order (empty when nothing was uploaded).
    members: list[tarfile.TarInfo]
    #: Member names in stream order.
    names: list[str]
    #: Whether ``tar`` ends with a proper end-of-archive marker.  False for
    #: ``-f -`` / Dockerfile outside the context (CLI bug, see module doc).
    tar_complete: bool
    #: Every request the CLI made on the socket, in order.
    requests: list[RequestRecord] = field(default_factory=list)
    #: Wall-clock seconds the CLI ran.
    duration: float = 0.0

    @property
    def uploaded(self) -> bool:
        """Whether the CLI sent a build request."""
        return self.body is not None

    @property
    def compressed(self) -> bool:
        """Whether the body was gzip-compressed (``--compress``)."""
        return self.body is not None and self.body[:2] == b"\x1f\x8b"

    def member(self, name: str) -> tarfile.TarInfo:
        """Return the (first) member called ``name``; KeyError if absent."""
        for info in self.members:
            if info.name == name:
                return info
        raise KeyError(name)

    def read(self, name: str) -> bytes:
        """Return the content of the regular-file member ``name``."""
        info = self.member(name)
        if self.tar is None or not info.isfile():
            raise KeyError(f"{name} is not a regular file in the capture")
        return self.tar[info.offset_data : info.offset_data + info.size]

    def check(self) -> Capture:
        """Raise AssertionError with the CLI output unless the build uploaded
        a context and exited 0; return self so calls can be chained."""
        if self.returncode != 0 or self.tar is None:
            raise AssertionError(
                f"docker build failed (exit {self.returncode}, "
                f"uploaded={self.uploaded}): {' '.join(self.args)}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
            )
        return self


class DockerCLITimeout(TimeoutError):
    """``docker build`` did not finish in time; the process was killed."""

    def __init__(self, args: Sequence[str], timeout: float, stdout: str, stderr: str):
        self.cmd = list(args)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"docker build timed out after {timeout}s and was killed: "
            f"{' '.join(self.cmd)}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Fake Docker Engine API endpoint; one instance per connection."""

    protocol_version = "HTTP/1.1"
    server_version = "ctxpack-capture"
    sys_version = ""
    timeout = CONNECTION_IDLE_TIMEOUT
    server: _UnixHTTPServer

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean

    # All methods go through one dispatcher.
    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _read_body(self) -> bytes:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length:
            n = int(length)
            data = self.rfile.read(n)
            if len(data) != n:
                raise ConnectionError(f"body truncated: {len(data)} of {n} bytes")
            return data
        return b""

    def _read_chunked(self) -> bytes:
        buf = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("connection closed inside chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Skip optional trailers up to the terminating empty line.
                while True:
                    trailer = self.rfile.readline(65537)
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(buf)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise ConnectionError("connection closed inside a chunk")
            buf += chunk
            self.rfile.readline(3)  # CRLF after the chunk data

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except (OSError, ValueError, ConnectionError) as exc:
            self.server.note_error(f"{self.command} {self.path}: {exc!r}")
            self.close_connection = True
            return
        split = urlsplit(self.path)
        match = _VERSION_PREFIX.match(split.path)
        path = match.group(1) if match else split.path
        record = RequestRecord(
            method=self.command,
            target=self.path,
            path=path,
            query_items=tuple(parse_qsl(split.query, keep_blank_values=True)),
            headers=tuple(self.headers.items()),
            body=body,
            pid=cast("int | None", self.client_address[0]),
            received_at=time.monotonic(),
        )
        self.server.record(record)

        if path == "/_ping":
            self._reply_ping()
        elif path == "/build" and self.command == "POST":
            self._reply_build(record)
        elif path == "/version" and self.command in ("GET", "HEAD"):
            self._reply_json(200, _version_payload())
        elif path == "/info" and self.command in ("GET", "HEAD"):
            self._reply_json(200, {"OSType": "linux", "Architecture": "x86_64",
                                   "ServerVersion": "ctxpack-capture"})
        else:
            self._reply_json(404, {"message": f"page not found: {self.command} {path}"})

    def _ping_headers(self) -> list[tuple[str, str]]:
        return [
            ("API-Version", API_VERSION),
            ("Builder-Version", "1"),
            ("Docker-Experimental", "false"),
            ("OSType", "linux"),
            ("Swarm", "inactive"),
            ("Cache-Control", "no-cache, no-store, must-revalidate"),
            ("Pragma", "no-cache"),
        ]

    def _send(self, status: int, ctype: str, payload: bytes,
              extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for key, value in extra:
            self.send_header(key, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _reply_ping(self) -> None:
        self._send(200, "text/plain; charset=utf-8", b"OK", self._ping_headers())

    def _reply_json(self, status: int, obj: object) -> None:
        payload = json.dumps(obj).encode() + b"\n"
        self._send(status, "application/json", payload, [("API-Version", API_VERSION)])

    def _reply_build(self, record: RequestRecord) -> None:
        # The image ID is derived from the body so it is meaningful and stable.
        digest = hashlib.sha256(record.body).hexdigest()
        image_id = f"sha256:{digest}"
        quiet = record.query.get("q", "") not in ("", "0", "false")
        messages: list[dict[str, object]] = []
        if not quiet:
            messages.append({"stream": f"ctxpack capture: received "
                                       f"{len(record.body)} bytes of build context\n"})
        messages.append({"aux": {"ID": image_id}})
        if quiet:
            # Like the daemon: with q=1 the only output is the image ID,
            # which the CLI prints verbatim.
            messages.append({"stream": image_id + "\n"})
        else:
            messages.append({"stream": f"Successfully built {digest[:12]}\n"})
            for key, value in record.query_items:
                if key == "t":
                    messages.append({"stream": f"Successfully tagged {value}\n"})
        payload = b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)
        self._send(200, "application/json", payload, [("API-Version", API_VERSION)])


def _version_payload() -> dict[str, object]:
    return {
        "Version": "ctxpack-capture",
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": "amd64",
        "Experimental": False,
        "Components": [],
    }


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Threaded HTTP server on a unix socket that remembers what it saw."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False

    def __init__(self, path: str, max_log: int = 1000) -> None:
        self._records_lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._max_log = max_log
        self._conns: set[socket.socket] = set()
        self.errors: list[str] = []
        super().__init__(path, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _addr = super().get_request()
        pid: int | None = None
        peercred = getattr(socket, "SO_PEERCRED", None)
        if peercred is not None:
            try:
                raw = conn.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize("3i"))
                pid = struct.unpack("3i", raw)[0] or None
            except OSError:
                pid = None
        with self._records_lock:
            self._conns.add(conn)
        # BaseHTTPRequestHandler expects a (host, port)-like address.
        return conn, (pid, 0)

    def shutdown_request(self, request: Any) -> None:
        with self._records_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        self.note_error(f"handler error for pid {client_address[0]}: {exc!r}")

    def note_error(self, message: str) -> None:
        with self._records_lock:
            self.errors.append(message)
            del self.errors[: -self._max_log]

    def record(self, rec: RequestRecord) -> None:
        with self._records_lock:
            self._records.append(rec)
            del self._records[: -self._max_log]

    def records_since(self, since: float, pid: int | None) -> list[RequestRecord]:
        with self._records_lock:
            return [
                r for r in self._records
                if r.received_at >= since and (pid is None or r.pid is None or r.pid == pid)
            ]

    def abort_connections(self) -> None:
        with self._records_lock:
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class CaptureServer:
    """A fake Docker daemon on a unix socket that records build uploads.

    Threaded (one daemon thread per connection, plus the accept loop),
    HTTP/1.1, handles chunked and Content-Length bodies, reusable for any
    number of builds.  Use as a context manager or call :meth:`start` /
    :meth:`stop`.  :func:`capture_context` serializes builds on
    :attr:`build_lock`; requests are attributed to the CLI process that made
    them via ``SO_PEERCRED`` where available.
    """

    def __init__(self, socket_dir: StrPath | None = None) -> None:
        self._socket_dir_arg = os.fspath(socket_dir) if socket_dir is not None else None
        self._tmpdir: str | None = None
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._state_lock = threading.Lock()
        #: Held for the duration of each ``docker build`` run.
        self.build_lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> CaptureServer:
        """Start listening (idempotent).  Returns self."""
        with self._state_lock:
            if self._server is not None:
                return self
            if self._socket_dir_arg is not None:
                sock_dir = self._socket_dir_arg
            else:
                # AF_UNIX paths are limited to ~104-108 bytes: prefer /tmp.
                base = tempfile.gettempdir()
                if len(base) > 60 and os.path.isdir("/tmp"):
                    base = "/tmp"
                self._tmpdir = tempfile.mkdtemp(prefix="ctxpack-dock-", dir=base)
                sock_dir = self._tmpdir
            path = os.path.join(sock_dir, "docker.sock")
            if os.path.exists(path):
                os.unlink(path)
            server = _UnixHTTPServer(path)
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="ctxpack-docker-capture",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server, drop open connections, remove the socket (idempotent)."""
        with self._state_lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
            tmpdir, self._tmpdir = self._tmpdir, None
        if server is not None:
            path = server.server_address
            if thread is not None and thread.is_alive():
                server.shutdown()
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

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- introspection -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    def _require(self) -> _UnixHTTPServer:
        server = self._server
        if server is None:
            raise RuntimeError("CaptureServer is not running; call start()")
        return server

    @property
    def socket_path(self) -> str:
        """Filesystem path of the listening unix socket."""
        return cast(str, self._require().server_address)

    @property
    def docker_host(self) -> str:
        """Value for ``DOCKER_HOST``."""
        return "unix://" + self.socket_path

    @property
    def errors(self) -> list[str]:
        """Problems seen while serving (e.g. a client vanishing mid-upload)."""
        return list(self._require().errors)

    def requests_since(self, since: float, pid: int | None = None) -> list[RequestRecord]:
        """Requests fully received at or after ``since`` (``time.monotonic()``),
        restricted to those from ``pid`` when the peer pid is known."""
        return self._require().records_since(since, pid)


# --------------------------------------------------------------------------
# Running the CLI
# --------------------------------------------------------------------------


def _clean_environ() -> dict[str, str]:
    """os.environ without any DOCKER_* variable."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCKER_")}


def _parse_tar(data: bytes) -> tuple[list[tarfile.TarInfo], bool]:
    """Parse members of ``data`` in order, tolerating a missing tail.

    Returns the members and whether the archive had its end-of-archive
    marker right after the last member.
    """
    # Pad so a truncated last member / missing end blocks still parse;
    # extra zero blocks after a proper end-of-archive are ignored.
    if not any(data):  # no members at all: tarfile refuses to open it
        return [], len(data) >= 2 * _TAR_BLOCK
    padded = data + b"\0" * (-len(data) % _TAR_BLOCK) + b"\0" * (2 * _TAR_BLOCK)
    with tarfile.open(fileobj=io.BytesIO(padded), mode="r:") as tf:
        members = tf.getmembers()
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + (-(-last.size // _TAR_BLOCK) * _TAR_BLOCK if last.isfile() else 0)
    complete = len(data) >= end + 2 * _TAR_BLOCK and not any(data[end:end + 2 * _TAR_BLOCK])
    return members, complete


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


def capture_context(
    context_dir: StrPath,
    *,
    dockerfile: StrPath | None = None,
    stdin: bytes | None = None,
    extra_args: Sequence[str] = (),
    cwd: StrPath | None = None,
    server: CaptureServer | None = None,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> Capture:
    """Run ``docker build`` on ``context_dir`` and capture what it uploads.

    The command is ``docker build [-f DOCKERFILE] *EXTRA_ARGS CONTEXT_DIR``
    run in ``cwd`` with ``DOCKER_BUILDKIT=0``, ``DOCKER_HOST`` pointing at
    ``server`` (default: the shared server, see :func:`shared_server`),
    ``DOCKER_CONFIG`` set to a fresh empty directory and no other inherited
    ``DOCKER_*`` variables.  ``env`` adds/overrides variables on top of that.

    ``stdin`` is fed to the process (use with ``dockerfile="-"`` or a context
    of ``"-"``); otherwise stdin is /dev/null.

    A CLI failure (e.g. an invalid ``.dockerignore`` pattern) is *not* an
    exception: the returned :class:`Capture` has ``returncode != 0``, the
    message in ``stderr`` and ``tar is None`` if nothing was uploaded.  If
    the CLI does not finish within ``timeout`` seconds its process group is
    killed and :class:`DockerCLITimeout` is raised.
    """
    exe = docker_executable()
    if exe is None:
        raise FileNotFoundError("docker CLI not found on PATH")
    if server is None:
        server = shared_server()
    elif not server.running:
        server.start()

    args = [exe, "build"]
    if dockerfile is not None:
        args += ["-f", os.fspath(dockerfile)]
    args += list(extra_args)
    args.append(os.fspath(context_dir))

    deadline = time.monotonic() + timeout
    if not server.build_lock.acquire(timeout=timeout):
        raise DockerCLITimeout(args, timeout, "", "timed out waiting for the build lock")
    try:
        with tempfile.TemporaryDirectory(prefix="ctxpack-dockercfg-") as config_dir:
            run_env = _clean_environ()
            run_env.update(
                DOCKER_BUILDKIT="0",
                DOCKER_HOST=server.docker_host,
                DOCKER_CONFIG=config_dir,
            )
            if env:
                run_env.update(env)
            started = time.monotonic()
            proc = subprocess.Popen(
                args,
                cwd=os.fspath(cwd) if cwd is not None else None,
                env=run_env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout kills the whole group
            )
            try:
                out, err = proc.communicate(stdin, timeout=max(0.0, deadline - started))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                try:
                    out, err = proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    out, err = b"", b""
                raise DockerCLITimeout(
                    args, timeout,
                    out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                ) from None
            except BaseException:
                _kill_group(proc)
                proc.wait()
                raise
            duration = time.monotonic() - started
            requests = server.requests_since(started, proc.pid)
    finally:
        server.build_lock.release()

    build = next((r for r in requests if r.method == "POST" and r.path == "/build"), None)
    body = build.body if build is not None else None
    tar: bytes | None = None
    members: list[tarfile.TarInfo] = []
    complete = False
    if body is not None:
        tar = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
        members, complete = _parse_tar(tar)
    return Capture(
        args=args,
        returncode=proc.returncode,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        query=build.query if build is not None else {},
        query_items=list(build.query_items) if build is not None else [],
        headers=list(build.headers) if build is not None else [],
        body=body,
        tar=tar,
        members=members,
        names=[m.name for m in members],
        tar_complete=complete,
        requests=requests,
        duration=duration,
    )


# --------------------------------------------------------------------------
# Shared server
# --------------------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: CaptureServer | None = None


def shared_server() -> CaptureServer:
    """Return the process-wide capture server, starting it on first use.

    Thread-safe.  Builds through it are serialized by
    :attr:`CaptureServer.build_lock`.  Stopped by :func:`stop_shared_server`
    (also registered with :mod:`atexit`).
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            _shared = CaptureServer().start()
        return _shared


def stop_shared_server() -> None:
    """Stop the shared server if it was started (idempotent)."""
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        server.stop()


atexit.register(stop_shared_server)


class DockerCLI:
    """Convenience wrapper binding :func:`capture_context` to one server.

    This is what the ``docker_cli`` pytest fixture returns.
    """

    def __init__(self, server: CaptureServer | None = None) -> None:
        self._server = server

    @property
    def server(self) -> CaptureServer:
        return self._server if self._server is not None else shared_server()

    def capture(
        self,
        context_dir: StrPath,
        *,
        dockerfile: StrPath | None = None,
        stdin: bytes | None = None,
        extra_args: Sequence[str] = (),
        cwd: StrPath | None = None,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
    ) -> Capture:
        """See :func:`capture_context`."""
        return capture_context(
            context_dir, dockerfile=dockerfile, stdin=stdin, extra_args=extra_args,
            cwd=cwd, server=self.server, timeout=timeout, env=env,
        )
