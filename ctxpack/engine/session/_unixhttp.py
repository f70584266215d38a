"""Private stop-gap: HTTP/1.1 to a daemon's unix socket, with the upgrade.

The engine transport (ctxpack.engine, issue 12) owns connections to the
daemon (unix, tcp+TLS, ssh).  Until the session can use it, this module does
the two requests the session needs on a unix socket only: ``POST /session``
upgraded to a raw duplex connection (101 Switching Protocols), and a
streamed ``POST /build``.  Nothing outside ``session/`` imports it.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Sequence

from ...errors import SessionError, TransportError

__all__ = ["hijack", "UnixHTTPConnection"]


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def hijack(socket_path: str, path: str, headers: Sequence[tuple[str, str]], *, proto: str = "h2c",
           timeout: float = 30.0) -> tuple[socket.socket, bytes]:
    """``POST path`` with ``Upgrade: proto``; after ``101`` returns the raw
    socket (blocking, no timeout) and any bytes that followed the response
    head.  Raises :class:`SessionError` for any other answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
    except OSError as e:
        sock.close()
        raise TransportError(f"cannot connect to {socket_path}: {e.strerror}") from None
    lines = [f"POST {path} HTTP/1.1", "Host: docker", f"Upgrade: {proto}", "Connection: Upgrade",
             "Content-Length: 0", "User-Agent: ctxpack"]
    lines += [f"{k}: {v}" for k, v in headers]
    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise SessionError(f"POST {path}: the daemon closed the connection before answering")
            buf += chunk
            if len(buf) > 1 << 20:
                raise SessionError(f"POST {path}: response head too large")
    except OSError as e:
        sock.close()
        raise SessionError(f"POST {path}: {e}") from None
    except SessionError:
        sock.close()
        raise
    head, _, rest = buf.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if code != 101:
        sock.close()
        body = rest.decode("utf-8", "replace").strip()
        raise SessionError(f"POST {path}: the daemon answered {status_line!r} instead of 101 Switching Protocols"
                           + (f": {body[:500]}" if body else ""))
    sock.settimeout(None)
    return sock, rest
