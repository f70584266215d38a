"""A minimal fake Docker daemon on a unix socket that *discards* build uploads.

``tests/dockercli.py``'s :class:`CaptureServer` keeps every body in memory and
hashes it, which is right for differential tests but adds seconds (and GBs of
RAM) to a 1.4 GB upload.  For timing the docker CLI's context step
(``DOCKER_BUILDKIT=0 docker build DIR``: walk + validate + tar + upload) this
server answers the ping, reads the chunked ``POST /build`` body in large
reads and throws it away, counting bytes, then replies with the two JSON
messages that make the CLI exit 0.

With ``verify=True`` the body is parsed as a tar stream instead (slower) and
the member names are kept, so a run can be checked against ``ctxpack ls``.

Standard library only.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socketserver
import tarfile
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

API_VERSION = "1.47"
_READ = 1 << 20


class _ChunkedBody(io.RawIOBase):
    """File-like view of an HTTP/1.1 chunked body (de-chunked)."""

    def __init__(self, rfile):
        self.rfile = rfile
        self.left = 0  # bytes left in the current chunk
        self.done = False
        self.total = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> None:
        line = self.rfile.readline(65537)
        if not line:
            raise ConnectionError("connection closed inside chunked body")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self.done = True
        self.left = size

    def readinto(self, b) -> int:
        while self.left == 0:
            if self.done:
                return 0
            if self.total:
                self.rfile.readline(3)  # CRLF after the previous chunk
            self._next_chunk()
            if self.done:
                return 0
        n = min(len(b), self.left)
        got = self.rfile.readinto(memoryview(b)[:n])
        if not got:
            raise ConnectionError("connection closed inside a chunk")
        self.left -= got
        self.total += got
        return got

    def drain(self) -> None:
        buf = bytearray(_READ)
        while self.readinto(buf):
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ctxpack-bench-discard"
    sys_version = ""
    rbufsize = _READ
    timeout = 120
    server: _Server

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_HEAD(self):  # noqa: N802
        self._dispatch()

    do_GET = do_POST = do_HEAD

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/v1."):
            path = "/" + path.split("/", 2)[2]
        if path == "/_ping":
            self._send(200, "text/plain", b"OK", [("API-Version", API_VERSION), ("OSType", "linux"),
                                                  ("Builder-Version", "1"), ("Docker-Experimental", "false")])
            return
        if path == "/build" and self.command == "POST":
            self._build()
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send(404, "application/json", b'{"message":"not found"}\n')

    def _build(self) -> None:
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            body = _ChunkedBody(self.rfile)
        else:
            body = _FixedBody(self.rfile, int(self.headers.get("Content-Length") or 0))
        names: list[str] | None = None
        if self.server.verify:
            names = []
            stream = io.BufferedReader(body, _READ)
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                for m in tf:
                    names.append(m.name + "/" if m.isdir() else m.name)
            body.drain()
        else:
            body.drain()
        self.server.record(body.total, names)
        msgs = [{"stream": f"discarded {body.total} bytes of build context\n"},
                {"aux": {"ID": "sha256:" + "0" * 64}},
                {"stream": "Successfully built 000000000000\n"}]
        payload = b"".join(json.dumps(m).encode() + b"\r\n" for m in msgs)
        self._send(200, "application/json", payload, [("API-Version", API_VERSION)])

    def _send(self, status, ctype, payload, extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()


class _FixedBody(_ChunkedBody):
    def __init__(self, rfile, length: int):
        super().__init__(rfile)
        self.left = length
        self.remaining = length

    def readinto(self, b) -> int:
        if self.remaining == 0:
            return 0
        got = self.rfile.readinto(memoryview(b)[: min(len(b), self.remaining)])
        if not got:
            raise ConnectionError("connection closed inside body")
        self.remaining -= got
        self.total += got
        return got


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    verify = False

    def __init__(self, path: str):
        super().__init__(path, _Handler)
        self.lock = threading.Lock()
        self.uploads: list[tuple[int, list[str] | None]] = []

    def record(self, nbytes: int, names: list[str] | None) -> None:
        with self.lock:
            self.uploads.append((nbytes, names))


class DiscardServer:
    """Start/stop a discarding fake daemon; ``docker_host`` for DOCKER_HOST."""

    def __init__(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="ctxpack-bench-sock-", dir="/tmp")
        self.socket_path = os.path.join(self._tmp, "docker.sock")
        self._server = _Server(self.socket_path)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="bench-discard-server")

    @property
    def docker_host(self) -> str:
        return "unix://" + self.socket_path

    def set_verify(self, on: bool) -> None:
        self._server.verify = on

    def take_uploads(self) -> list[tuple[int, list[str] | None]]:
        with self._server.lock:
            out = self._server.uploads[:]
            self._server.uploads.clear()
        return out

    def start(self) -> DiscardServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DiscardServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
