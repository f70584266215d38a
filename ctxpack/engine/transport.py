"""The seam between ctxpack and a Docker engine: requests in, responses out.

Shaped like httpx's transports, small enough to read in one sitting:

* a :class:`Request` carries its body either as bytes or as a *writer*, a
  callable that writes into a :class:`~ctxpack.tar.sinks.Sink`.  The real
  transports hand the writer a sink that frames the bytes as HTTP/1.1
  chunks straight onto the socket, so an upload keeps the packer's forked
  walker and ``os.sendfile`` (plain sockets) and nothing is spooled;
* a :class:`Response` has a streamed body (``iter_lines`` for the engine's
  newline-delimited JSON, ``read`` for small answers);
* :meth:`Transport.upgrade` is the hijack: ``POST`` with ``Upgrade: h2c``,
  and after ``101 Switching Protocols`` the raw duplex connection
  (:class:`Upgraded`), nothing buffered past the response head.  The
  BuildKit session (``ctxpack.engine.session``) runs HTTP/2 over it;
* :class:`MockTransport` answers from a function, for unit tests.

Real transports (:class:`UnixTransport`, :class:`TcpTransport` with optional
TLS, :class:`SshTransport` through ``docker system dial-stdio``) differ only
in how they open a socket; HTTP framing is ``http.client``'s.  One idle
connection is kept and reused (an ssh connection costs a process and a
handshake).  Socket and HTTP failures become
:mod:`ctxpack.errors` classes here, at the boundary:
:class:`~ctxpack.errors.EngineUnreachableError` (no connection),
:class:`~ctxpack.errors.ConnectionDroppedError` (closed before answering),
:class:`~ctxpack.errors.EngineTimeoutError` (no connection, or silence,
for longer than the timeout).

Two timeouts, both given to a real transport's constructor:
``connect_timeout`` (default :data:`CONNECT_TIMEOUT`, the docker CLI's 30 s:
TCP or unix connect, TLS handshake, ssh's ``ConnectTimeout``) and
``read_timeout``, the longest silence accepted while an answer is awaited or
read.  Without ``read_timeout`` each request's own ``timeout`` applies (60 s
for API calls; none for a build's output stream, which is silent while a
step runs, as the docker CLI waits); with it, it replaces them all.
"""

from __future__ import annotations

import errno
import http.client
import math
import os
import select
import shlex
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from ..errors import ConnectionDroppedError, EngineTimeoutError, EngineUnreachableError, TransportError
from ..tar.sinks import Sink

__all__ = [
    "BodyWriter",
    "Headers",
    "Request",
    "Response",
    "Upgraded",
    "Transport",
    "MockTransport",
    "UnixTransport",
    "TcpTransport",
    "SshTransport",
    "ChunkedSink",
    "CONNECT_TIMEOUT",
]

#: A request body that writes itself into a sink (the packer does).
BodyWriter = Callable[[Sink], None]
Body = Union[bytes, BodyWriter, None]

#: As the docker CLI's ssh helper (``-o ConnectTimeout=30``) and dialer.
CONNECT_TIMEOUT = 30.0
#: An upload that cannot move a byte for this long is given up.
UPLOAD_STALL_TIMEOUT = 300.0
_READ_SIZE = 64 * 1024
#: The send buffer asked for on a unix socket (the engine's, or the socket
#: pair an ssh helper reads): the packer runs up to this far ahead of its
#: reader, so the time it spends opening and reading small files does not
#: leave ssh (or the engine) without input, and it is woken once per few MB
#: instead of once per ~100 KB.  A bounded kernel buffer, not a spool; the
#: kernel caps it at ``net.core.wmem_max``.  Measured over ssh://127.0.0.1
#: on the 642 MB context: the packer's poll() calls 2,387 -> 406 and its
#: sendfile() calls 3,757 -> 219 (bench/results/build-ssh.md).
UNIX_SEND_BUFFER = 4 << 20


#: The ciphers put first in ssh's list when the choice is ctxpack's (see
#: :meth:`SshTransport.cipher_options`): AES-GCM, which OpenSSH runs through
#: libcrypto's AES-NI code, where its default first choice,
#: chacha20-poly1305, has no such hardware help.  Measured through sshd on
#: 127.0.0.1 (1 GB of random bytes into ``cat >/dev/null``, 4 alternated
#: rounds): the ssh client's CPU 1.63 -> 0.95 s, sshd's 2.21 -> 1.44 s
#: (bench/results/build-ssh.md).
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: How long an ``ssh -G`` probe may take (it reads configuration files only).
SSH_PROBE_TIMEOUT = 10.0


def cpuinfo_has_aes(text: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text says the CPU has AES instructions:
    the ``aes`` word in x86's ``flags`` line or arm64's ``Features`` line."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features") and "aes" in value.split():
            return True
    return False


_AES: list[bool] = []


def cpu_has_aes() -> bool:
    """:func:`cpuinfo_has_aes` of this machine, read once; ``False`` where
    there is no ``/proc/cpuinfo`` (then ssh's own default stays)."""
    if not _AES:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                _AES.append(cpuinfo_has_aes(f.read()))
        except OSError:
            _AES.append(False)
    return _AES[0]


def _widen_send_buffer(sock: socket.socket) -> None:
    """Ask for :data:`UNIX_SEND_BUFFER` on ``sock`` (best effort)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
    except OSError:
        pass  # the default buffer still works


class Headers:
    """Case-insensitive header mapping that keeps the first spelling."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        self._d: dict[str, tuple[str, str]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for k, v in pairs:
            self._d[k.lower()] = (k, v)

    def get(self, key: str, default: str | None = None) -> str | None:
        hit = self._d.get(key.lower())
        return hit[1] if hit else default

    def __getitem__(self, key: str) -> str:
        return self._d[key.lower()][1]

    def __setitem__(self, key: str, value: str) -> None:
        self._d[key.lower()] = (key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._d

    def items(self) -> list[tuple[str, str]]:
        return list(self._d.values())

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass
class Request:
    """One HTTP request.  ``url`` is the path with its query
    (``/v1.41/build?t=x``); ``body`` bytes, a :data:`BodyWriter` (sent
    chunked), or ``None``; ``timeout`` limits each socket read while the
    answer is awaited and read (``None``: wait as long as the engine works,
    as a build needs)."""

    method: str
    url: str
    headers: Headers = field(default_factory=Headers)
    body: Body = None
    timeout: float | None = 60.0
    #: Body bytes sent so far (set by the transport).
    sent: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):
            self.headers = Headers(self.headers)

    @property
    def content(self) -> bytes:
        """The body as bytes (runs a writer into memory: for tests)."""
        if self.body is None:
            return b""
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        sink = _MemorySink()
        self.body(sink)
        return b"".join(sink.parts)


class Response:
    """An answer whose body is read as it arrives.

    ``upload_error`` says why the request body could not be sent whole when
    the engine answered anyway (it may stop reading an archive it rejects).
    Close it (or use ``with``) to give the connection back.
    """

    def __init__(self, status: int, reason: str, headers: Headers, stream: Iterator[bytes] | None = None,
                 *, on_close: Callable[[bool], None] | None = None, upload_error: str | None = None,
                 readline: Callable[[], bytes] | None = None):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.upload_error = upload_error
        self._stream = stream if stream is not None else iter(())
        self._readline = readline
        self._on_close = on_close
        self._pending = b""
        self._done = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def iter_bytes(self) -> Iterator[bytes]:
        if self._pending:
            data, self._pending = self._pending, b""
            yield data
        for chunk in self._stream:
            if chunk:
                yield chunk
        self._done = True

    def iter_lines(self) -> Iterator[bytes]:
        """The body split at newlines (the line ending removed)."""
        if self._readline is not None and not self._pending:
            while True:
                line = self._readline()
                if not line:
                    self._done = True
                    return
                yield line.rstrip(b"\r\n")
        buf = b""
        for chunk in self.iter_bytes():
            buf += chunk
            while True:
                i = buf.find(b"\n")
                if i < 0:
                    break
                yield buf[:i].rstrip(b"\r")
                buf = buf[i + 1 :]
        if buf:
            yield buf

    def read(self) -> bytes:
        return b"".join(self.iter_bytes())

    def close(self) -> None:
        if self._on_close is not None:
            fn, self._on_close = self._on_close, None
            fn(self._done)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Upgraded:
    """The raw duplex connection after ``101 Switching Protocols``.

    ``sock`` is a connected stream socket (a plain, unix or TLS socket, or
    ctxpack's end of the socket pair an ssh helper runs on), in blocking
    mode, with nothing read past the response head: the first bytes the
    engine sends next (for ``/session``: its HTTP/2 preface) are still on
    the socket.  ``headers`` are the 101 response's.  :meth:`close` closes
    the socket and ends the ssh helper, if any.
    """

    def __init__(self, sock: socket.socket, status: int, headers: Headers, *, on_close: Callable[[], None] | None = None):
        self.sock = sock
        self.status = status
        self.headers = headers
        self._on_close = on_close

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            if self._on_close is not None:
                fn, self._on_close = self._on_close, None
                fn()

    def __enter__(self) -> Upgraded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transport:
    """What every transport offers; see the module docstring."""

    #: ``unix://...``, ``tcp://...``, ``ssh://...`` or ``mock://``.
    url: str = ""
    #: True for a socket on this machine (no compression pays off there).
    local: bool = False
    #: A path prefix every API URL gets (``tcp://host:2375/prefix``).
    base_path: str = ""

    def handle_request(self, request: Request) -> Response:  # pragma: no cover - interface
        raise NotImplementedError

    def upgrade(self, request: Request) -> Upgraded:  # pragma: no cover - interface
        """Send ``request`` (with ``Connection: Upgrade`` and its ``Upgrade``
        header) on a connection of its own; return it after a 101.  Any other
        status raises :class:`~ctxpack.errors.EngineAPIError`."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Sinks onto a connection
# --------------------------------------------------------------------------


class _MemorySink(Sink):
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.parts.append(bytes(data))
        self.written += len(data)


class _UploadBroken(ConnectionDroppedError):
    """The peer stopped reading the request body (EPIPE, ECONNRESET)."""


def _wait_writable(sock: socket.socket, timeout: float | None) -> None:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    if not poller.poll(None if timeout is None else timeout * 1000):
        raise _UploadBroken(f"the engine stopped reading the upload for {timeout:.0f}s")


class ChunkedSink(Sink):
    """Writes HTTP/1.1 chunks onto a socket; ``sendfile`` moves file ranges
    from the page cache to a plain socket without copying (a chunk header,
    the range, CRLF).  ``written`` counts body bytes (the chunk framing
    excluded); ``progress(written)`` is called after every write.
    """

    def __init__(self, sock: socket.socket, *, progress: Callable[[int], None] | None = None,
                 timeout: float | None = None):
        self.sock = sock
        self.written = 0
        self.progress = progress
        self.timeout = timeout
        self._can_sendfile = not isinstance(sock, ssl.SSLSocket)
        self._gather = hasattr(sock, "sendmsg") and not isinstance(sock, ssl.SSLSocket)
        self._broken = False
        # The CRLF that ends a sendfile chunk, sent with the next chunk's
        # header: the reader (ssh, the engine) is woken once per chunk, not
        # for a 2-byte write.
        self._tail = b""

    def _send(self, data: bytes | memoryview) -> None:
        # send() in a loop, not sendall(): the socket's timeout then limits
        # each stall, not the whole write (a slow link is not a dead one).
        view = memoryview(data)
        try:
            while view:
                n = self.sock.send(view)
                view = view[n:]
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _UploadBroken(f"the engine closed the connection during the upload ({e.strerror})") from None
        except socket.timeout:
            raise _UploadBroken(f"the engine stopped reading the upload for {self.timeout or 0:.0f}s") from None

    def _send_parts(self, parts: list[bytes | memoryview]) -> None:
        """Send ``parts`` in order, in as few system calls as the socket
        takes (``sendmsg`` gathers them; a TLS socket gets them joined)."""
        if not self._gather:
            self._send(b"".join(parts))
            return
        views = [memoryview(p) for p in parts if len(p)]
        try:
            while views:
                n = self.sock.sendmsg(views)
                while views and n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _UploadBroken(f"the engine closed the connection during the upload ({e.strerror})") from None
        except socket.timeout:
            raise _UploadBroken(f"the engine stopped reading the upload for {self.timeout or 0:.0f}s") from None

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if not n:
            return
        if self._broken:
            raise ConnectionDroppedError("a file shrank while it was being sent; upload abandoned")
        head, self._tail = self._tail + b"%x\r\n" % n, b""
        self._send_parts([head, data, b"\r\n"])
        self.written += n
        if self.progress is not None:
            self.progress(self.written)

    def sendfile(self, fd: int, offset: int, count: int) -> int | None:
        if not self._can_sendfile or count <= 0:
            return None
        if self._broken:
            raise ConnectionDroppedError("a file shrank while it was being sent; upload abandoned")
        head, self._tail = self._tail + b"%x\r\n" % count, b""
        self._send(head)
        sent = 0
        out = self.sock.fileno()
        try:
            while sent < count:
                try:
                    n = os.sendfile(out, fd, offset + sent, count - sent)
                except BlockingIOError:  # a socket with a timeout is non-blocking underneath
                    _wait_writable(self.sock, self.timeout)
                    continue
                if n == 0:
                    break
                sent += n
                self.written += n
                if self.progress is not None:
                    self.progress(self.written)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _UploadBroken(f"the engine closed the connection during the upload ({e.strerror})") from None
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) and sent == 0:
                self._can_sendfile = False  # framing already sent: fill the chunk through memory
                data = os.pread(fd, count, offset)
                self._send(data)
                sent = len(data)
                self.written += sent
            else:
                raise
        if sent < count:
            # The file shrank: the chunk header promised ``count`` bytes, so
            # this body can only be broken off.  The short count tells the
            # packer, which raises naming the file; the transport then
            # closes the connection without the terminating chunk, so the
            # engine sees a broken body, never a well-formed short one.
            self._broken = True
            return sent
        self._tail = b"\r\n"  # goes out with what follows (the next chunk or the last)
        return sent

    def finish(self) -> None:
        if self._broken:  # a chunk was left short: this body must never look complete
            raise ConnectionDroppedError("a file shrank while it was being sent; upload abandoned")
        last, self._tail = self._tail + b"0\r\n\r\n", b""
        self._send(last)


# --------------------------------------------------------------------------
# http.client over any socket
# --------------------------------------------------------------------------


class _RawHeadResponse(http.client.HTTPResponse):
    """Reads the response head unbuffered, so that nothing past it is taken
    off the socket (for upgrades: the bytes after ``101`` belong to the new
    protocol)."""

    def __init__(self, sock: socket.socket, *args: Any, **kw: Any):
        super().__init__(sock, *args, **kw)
        self.fp.close()  # the buffered reader http.client made; nothing read yet
        self.fp = sock.makefile("rb", buffering=0)  # type: ignore[assignment]


class _Conn(http.client.HTTPConnection):
    """An HTTPConnection whose socket comes from a factory."""

    def __init__(self, factory: Callable[[], socket.socket], host_header: str):
        super().__init__(host_header, timeout=CONNECT_TIMEOUT)
        self._factory = factory
        self.cleanup: Callable[[], None] | None = None

    def connect(self) -> None:
        self.sock = self._factory()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.cleanup is not None:
                fn, self.cleanup = self.cleanup, None
                fn()


def _describe_os_error(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class _SocketTransport(Transport):
    """HTTP/1.1 with keep-alive over sockets from :meth:`_open_socket`."""

    host_header = "api.moby.localhost"

    def __init__(self, *, connect_timeout: float | None = None, read_timeout: float | None = None) -> None:
        self._idle: _Conn | None = None
        self._lock = threading.Lock()
        for what, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if value is not None and not value > 0:
                raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
        self.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else float(connect_timeout)
        self.read_timeout = None if read_timeout is None else float(read_timeout)

    def _timeout(self, request: Request) -> float | None:
        """The read timeout for ``request``: the transport's, else its own."""
        return self.read_timeout if self.read_timeout is not None else request.timeout

    def _silent(self, what: str, timeout: float | None) -> EngineTimeoutError:
        """``what`` with ``{t}`` where the seconds go."""
        t = timeout or 0.0
        return EngineTimeoutError(
            f"the Docker engine at {self.url} {what.replace('{t}', f'{t:g}s')} (the read timeout; raise it with "
            f"--timeout or DOCKER_CLIENT_TIMEOUT)", self.url, t)

    # subclasses -------------------------------------------------------------
    def _open_socket(self) -> tuple[socket.socket, Callable[[], None] | None]:  # pragma: no cover
        raise NotImplementedError

    def _unreachable(self, e: BaseException) -> TransportError:
        if isinstance(e, socket.timeout):
            t = self.connect_timeout
            return EngineTimeoutError(
                f"cannot connect to the Docker engine at {self.url}: no connection within {t:g}s (the connect "
                f"timeout; raise it with --timeout or DOCKER_CLIENT_TIMEOUT)", self.url, t)
        return EngineUnreachableError(f"cannot connect to the Docker engine at {self.url}: {_describe_os_error(e)}")

    def _dropped_detail(self) -> str:
        return ""

    # plumbing ---------------------------------------------------------------
    def _new_conn(self) -> _Conn:
        holder: list[Callable[[], None] | None] = [None]

        def factory() -> socket.socket:
            try:
                sock, cleanup = self._open_socket()
            except TransportError:
                raise
            except (OSError, ssl.SSLError) as e:
                raise self._unreachable(e) from None
            holder[0] = cleanup
            return sock

        conn = _Conn(factory, self.host_header)
        try:
            conn.connect()
        finally:
            conn.cleanup = holder[0]
        return conn

    def _take(self) -> tuple[_Conn, bool]:
        with self._lock:
            conn, self._idle = self._idle, None
        if conn is not None and conn.sock is not None and not _peer_closed(conn.sock):
            return conn, True
        if conn is not None:
            conn.close()
        return self._new_conn(), False

    def _give_back(self, conn: _Conn) -> None:
        with self._lock:
            if self._idle is None:
                self._idle = conn
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            conn, self._idle = self._idle, None
        if conn is not None:
            conn.close()

    def _send(self, conn: _Conn, request: Request, progress: Callable[[int], None] | None = None) -> str | None:
        """Send the request; returns why the body stopped early, if it did."""
        assert conn.sock is not None
        wait = self._timeout(request)
        conn.sock.settimeout(self.connect_timeout if wait is None else wait)
        body = request.body
        headers = request.headers
        conn.putrequest(request.method, request.url, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", self.host_header)
        if "User-Agent" not in headers:
            conn.putheader("User-Agent", "ctxpack")
        if callable(body):
            if "Transfer-Encoding" not in headers:
                conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(body or b"")))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body is None:
            return None
        if not callable(body):
            conn.send(body)
            return None
        conn.sock.settimeout(UPLOAD_STALL_TIMEOUT)
        sink = ChunkedSink(conn.sock, progress=progress, timeout=UPLOAD_STALL_TIMEOUT)
        try:
            body(sink)
            sink.finish()
        except _UploadBroken as e:
            return str(e)
        finally:
            request.sent = sink.written
        return None

    def handle_request(self, request: Request, *, progress: Callable[[int], None] | None = None) -> Response:
        """Send ``request``, return the response once its head arrived.

        ``progress(bytes_sent)`` follows a writer body.  A reused idle
        connection the engine closed meanwhile is retried once on a new one
        (only for bodies that can be sent again: bytes or none)."""
        retry_ok = not callable(request.body)
        while True:
            conn, reused = self._take()
            try:
                upload_error = self._send(conn, request, progress)
                assert conn.sock is not None
                conn.sock.settimeout(self._timeout(request))
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                conn.close()
                if reused and retry_ok:
                    continue
                detail = self._dropped_detail()
                sent = request.sent
                what = f" during the upload (after {sent:,} bytes)" if callable(request.body) else ""
                raise ConnectionDroppedError(
                    f"the Docker engine at {self.url} closed the connection{what} without answering"
                    + (f": {detail}" if detail else "")
                ) from e
            except TransportError:
                conn.close()
                raise
            except socket.timeout:
                conn.close()
                raise self._silent(f"did not answer {request.method} {request.url.split('?')[0]} within {{t}}",
                                   self._timeout(request)) from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                detail = self._dropped_detail()
                raise ConnectionDroppedError(
                    f"connection to the Docker engine at {self.url} failed: {_describe_os_error(e)}"
                    + (f": {detail}" if detail else "")
                ) from None
            except BaseException:
                conn.close()  # Ctrl-C, or the packer's own error: this connection is unusable
                raise
            return self._response(conn, resp, upload_error, self._timeout(request))

    def _response(self, conn: _Conn, resp: http.client.HTTPResponse, upload_error: str | None,
                  timeout: float | None) -> Response:
        url = self.url
        what = "said nothing for {t} in the middle of its answer"

        def stream() -> Iterator[bytes]:
            try:
                while True:
                    chunk = resp.read1(_READ_SIZE)
                    if not chunk:
                        resp.read()  # marks the response finished, so the connection can be reused
                        return
                    yield chunk
            except socket.timeout:
                raise self._silent(what, timeout) from None
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionDroppedError(f"the Docker engine at {url} broke off its answer: {_describe_os_error(e)}") from None

        def readline() -> bytes:
            try:
                line = resp.readline()
                if not line:
                    resp.read()
                return line
            except socket.timeout:
                raise self._silent(what, timeout) from None
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionDroppedError(f"the Docker engine at {url} broke off its answer: {_describe_os_error(e)}") from None

        def on_close(done: bool) -> None:
            if done and upload_error is None and not resp.will_close and resp.isclosed():
                self._give_back(conn)
            else:
                conn.close()

        return Response(resp.status, resp.reason, Headers(resp.getheaders()), stream(), on_close=on_close,
                        upload_error=upload_error, readline=readline)

    def upgrade(self, request: Request) -> Upgraded:
        from ..errors import EngineAPIError

        conn = self._new_conn()
        conn.response_class = _RawHeadResponse
        try:
            if "Connection" not in request.headers:
                request.headers["Connection"] = "Upgrade"
            self._send(conn, request)
            assert conn.sock is not None
            conn.sock.settimeout(self._timeout(request))
            resp = conn.getresponse()
        except TransportError:
            conn.close()
            raise
        except socket.timeout:
            conn.close()
            raise self._silent(f"did not answer {request.method} {request.url.split('?')[0]} within {{t}}",
                               self._timeout(request)) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ConnectionDroppedError(f"upgrade at {self.url} failed: {_describe_os_error(e)}") from None
        headers = Headers(resp.getheaders())
        if resp.status != 101:
            body = resp.read()
            conn.close()
            from .messages import error_message

            msg = error_message(body)
            raise EngineAPIError(f"{request.method} {request.url.split('?')[0]}: HTTP {resp.status}: {msg}", resp.status, msg)
        sock, cleanup = conn.sock, conn.cleanup
        assert sock is not None
        conn.sock, conn.cleanup = None, None  # the connection is the caller's now
        sock.settimeout(None)
        return Upgraded(sock, resp.status, headers, on_close=cleanup)


def _read_all(f: Any) -> str:
    try:
        f.seek(0)
        return str(f.read(64 * 1024).decode("utf-8", "replace").strip())
    except (OSError, ValueError):
        return ""


def _peer_closed(sock: socket.socket) -> bool:
    """An idle keep-alive socket the engine has closed (readable with EOF)."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
        if not r:
            return False
        if isinstance(sock, ssl.SSLSocket):
            return True  # unexpected data or EOF on an idle TLS connection: do not reuse
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


# --------------------------------------------------------------------------
# The real transports
# --------------------------------------------------------------------------


class UnixTransport(_SocketTransport):
    """``unix:///path/to/docker.sock``."""

    local = True

    def __init__(self, path: str, *, connect_timeout: float | None = None, read_timeout: float | None = None):
        super().__init__(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.path = path
        self.url = "unix://" + path

    def _open_socket(self) -> tuple[socket.socket, None]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _widen_send_buffer(s)
        s.settimeout(self.connect_timeout)
        try:
            s.connect(self.path)
        except BaseException:
            s.close()
            raise
        return s, None

    def _unreachable(self, e: BaseException) -> TransportError:
        if isinstance(e, socket.timeout):
            return super()._unreachable(e)
        hint = " Is the docker daemon running?" if isinstance(e, (FileNotFoundError, ConnectionRefusedError)) else ""
        return EngineUnreachableError(f"cannot connect to the Docker engine at {self.url}: {_describe_os_error(e)}.{hint}")


class TcpTransport(_SocketTransport):
    """``tcp://host:port``, with TLS when ``tls`` is an :class:`ssl.SSLContext`."""

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 connect_timeout: float | None = None, read_timeout: float | None = None):
        super().__init__(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.hostname = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or host
        shown = f"[{host}]" if ":" in host else host
        self.url = f"tcp://{shown}:{port}"
        self.host_header = f"{shown}:{port}"
        self.local = host in ("127.0.0.1", "::1", "localhost")

    def _open_socket(self) -> tuple[socket.socket, None]:
        s = socket.create_connection((self.hostname, self.port), timeout=self.connect_timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is None:
            return s, None
        try:
            return self.tls.wrap_socket(s, server_hostname=self.server_hostname), None
        except BaseException:
            s.close()
            raise

    def _unreachable(self, e: BaseException) -> TransportError:
        if isinstance(e, ssl.SSLError):
            why = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
            return EngineUnreachableError(f"TLS handshake with the Docker engine at {self.url} failed: {why}")
        return super()._unreachable(e)


class SshTransport(_SocketTransport):
    """``ssh://[user@]host[:port][/socket/path]``: every connection is an
    ``ssh ... docker system dial-stdio`` process whose standard input and
    output are one end of a socket pair (so ``sendfile`` still works).

    The command is the docker CLI's (``cli/connhelper``) plus ``-o
    BatchMode=yes``: a password or passphrase prompt fails at once instead
    of waiting on a terminal, and, when the choice is ctxpack's, a cipher
    order with AES-GCM first (:meth:`cipher_options`).  The user's ssh
    configuration, keys and agent apply as for any ssh.  ``ssh_command``
    replaces ``ssh`` (a list, e.g. ``["ssh", "-F", "/path/config"]``;
    default ``$CTXPACK_SSH`` split like a shell, else ``ssh``).
    """

    host_header = "docker.example.com"  # what the docker CLI sends over ssh

    def __init__(self, host: str, *, user: str | None = None, port: int | None = None, path: str | None = None,
                 ssh_command: list[str] | None = None, connect_timeout: float | None = None,
                 read_timeout: float | None = None):
        super().__init__(connect_timeout=connect_timeout, read_timeout=read_timeout)
        self.hostname = host
        self.user = user
        self.port = port
        self.path = path
        if ssh_command is None:
            env_cmd = os.environ.get("CTXPACK_SSH")
            ssh_command = shlex.split(env_cmd) if env_cmd else ["ssh"]
        self.ssh_command = list(ssh_command)
        self.url = "ssh://" + (f"{user}@" if user else "") + host + (f":{port}" if port else "") + (path or "")
        self._last_exit: tuple[int | None, str] = (None, "")
        self._probed: tuple[dict[str, str] | None, dict[str, str] | None] | None = None
        self._probe_lock = threading.Lock()

    def _target(self) -> list[str]:
        out = ["-l", self.user] if self.user else []
        out += ["-p", str(self.port)] if self.port else []
        return [*out, "--", self.hostname]

    def _probe(self) -> tuple[dict[str, str] | None, dict[str, str] | None]:
        """(``ssh -G`` for this host, the same with ``-F /dev/null``), each
        ``None`` when it fails; run once per transport, both at once (each is
        a process spawn: ~5 ms here), the second only on a CPU with AES
        instructions (only :meth:`cipher_options` needs it)."""
        with self._probe_lock:
            if self._probed is None:
                cmds = [[*self.ssh_command, "-G", *self._target()]]
                if cpu_has_aes():
                    # ssh keeps the last -F it is given, so this drops the
                    # user's and the system's files even behind a wrapper
                    # that passes its own -F before "$@".
                    cmds.append([*self.ssh_command, "-G", "-F", "/dev/null", *self._target()])
                got = [_ssh_config(p) for p in [_spawn_probe(c) for c in cmds]]
                self._probed = (got[0], got[1] if len(got) > 1 else None)
            return self._probed

    def ssh_config(self) -> dict[str, str] | None:
        """This host's configuration as ssh resolves it (``ssh -G``: the
        user's and the system's files, ``Match`` and ``Host`` blocks
        applied), keys lower-cased, each key's first value; ``None`` when
        ssh cannot say (a failing or non-OpenSSH command).  Cached."""
        return self._probe()[0]

    def cipher_options(self) -> list[str]:
        """``["-o", "Ciphers=..."]`` with :data:`FAST_CIPHERS` first, or
        nothing.  Only when the choice is ctxpack's: the CPU has AES
        instructions, and the ``ciphers`` ssh resolves for this host equals
        its built-in default (``ssh -G`` with and without ``-F /dev/null``),
        so no configuration file sets ``Ciphers``.  A ``-o`` given on ssh's
        command line beats the files (ssh keeps the first value it obtains
        for an option, ``ssh_config(5)``), hence the check; one in
        ``ssh_command`` comes before ours and beats it.  The list is ssh's
        own default reordered, not narrowed: a server that offers neither
        AES-GCM cipher still finds its usual one (the client's order picks,
        RFC 4253 7.1).  The far end decrypts with the same cipher: it is
        this machine's sshd over ssh to 127.0.0.1; a server without AES
        hardware is the case for ``Ciphers`` in the user's ssh config."""
        if not cpu_has_aes():
            return []
        conf, default = self._probe()
        if conf is None or default is None:
            return []
        resolved, builtin = conf.get("ciphers"), default.get("ciphers")
        if not resolved or resolved != builtin:
            return []
        names = builtin.split(",")
        fast = [c for c in FAST_CIPHERS if c in names]
        if not fast or names[:len(fast)] == fast:
            return []  # this ssh has no AES-GCM, or prefers it already
        return ["-o", "Ciphers=" + ",".join(fast + [c for c in names if c not in fast])]

    def argv(self) -> list[str]:
        """The helper's command line."""
        cmd = [*self.ssh_command]
        if self.user:
            cmd += ["-l", self.user]
        if self.port:
            cmd += ["-p", str(self.port)]
        # ssh takes whole seconds: round up, never 0 (which would mean none).
        cmd += ["-o", f"ConnectTimeout={max(1, math.ceil(self.connect_timeout))}", "-o", "BatchMode=yes",
                *self.cipher_options(), "-T", "--", self.hostname]
        if self.path:
            cmd += ["docker", f"--host=unix://{self.path}", "system", "dial-stdio"]
        else:
            cmd += ["docker", "system", "dial-stdio"]
        return cmd

    def _open_socket(self) -> tuple[socket.socket, Callable[[], None]]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _widen_send_buffer(ours)  # what ssh reads: the upload
        # ssh's messages go to a file, not a pipe: a pipe needs a reader
        # thread, and a second thread keeps the packer from forking its walker.
        errfile = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                self.argv(), stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=errfile, close_fds=True,
                start_new_session=True,  # Ctrl-C reaches ctxpack, which ends the helper itself
            )
        except OSError as e:
            ours.close()
            theirs.close()
            errfile.close()
            raise EngineUnreachableError(f"cannot run {self.ssh_command[0]} for {self.url}: {_describe_os_error(e)}") from None
        theirs.close()
        self._proc_state = (proc, errfile)

        def cleanup() -> None:
            # Our end is closed by now: ssh sees EOF and ends by itself.
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._last_exit = (proc.returncode, _read_all(errfile))
            errfile.close()

        ours.settimeout(self.connect_timeout)
        return ours, cleanup

    def _dropped_detail(self) -> str:
        state = getattr(self, "_proc_state", None)
        if state is None:
            return ""
        proc, errfile = state
        if errfile.closed:  # the connection was cleaned up already
            code, text = self._last_exit
        else:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                return ""
            code, text = proc.returncode, _read_all(errfile)
        return f"{' '.join(self.argv())} exited with status {code}" + (f": {text}" if text else "")

    def handle_request(self, request: Request, **kw: Any) -> Response:
        try:
            return super().handle_request(request, **kw)
        except ConnectionDroppedError as e:
            state = getattr(self, "_proc_state", None)
            if state is not None and not request.sent:
                detail = self._dropped_detail()  # waits a moment for the helper to end
                if state[0].poll() is not None:
                    # The helper died before the engine said anything: ssh
                    # never got through (bad key, unknown host, no docker there).
                    raise EngineUnreachableError(f"cannot reach the Docker engine at {self.url}: {detail}") from None
            raise e


def _spawn_probe(cmd: list[str]) -> subprocess.Popen[str] | None:
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, errors="replace", start_new_session=True)
    except OSError:
        return None


def _ssh_config(proc: subprocess.Popen[str] | None) -> dict[str, str] | None:
    """The ``key value`` lines an ``ssh -G`` process prints, or ``None``
    when it fails or prints none.  ssh prints a multi-valued key once per
    value (``identityfile``, ``sendenv``): the first is kept."""
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=SSH_PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
    if proc.returncode != 0:
        return None
    conf: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key:
            conf.setdefault(key.lower(), value.strip())
    return conf or None


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@dataclass
class MockResponse:
    """What a :class:`MockTransport` handler returns: ``body`` bytes or an
    iterable of chunks (streamed as given)."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""


class MockTransport(Transport):
    """Answers requests by calling ``handler(request) -> MockResponse``.

    ``requests`` records every request with its body already read
    (``request.content``).  ``upgrade_handler(request, sock)``, when given,
    serves an upgrade on the other end of a socket pair in a thread.
    """

    url = "mock://"

    def __init__(self, handler: Callable[[Request], MockResponse],
                 upgrade_handler: Callable[[Request, socket.socket], None] | None = None, *, local: bool = True):
        self.handler = handler
        self.upgrade_handler = upgrade_handler
        self.local = local
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: Request, *, progress: Callable[[int], None] | None = None) -> Response:
        body = request.content
        self.bodies.append(body)
        request.sent = len(body)
        if progress is not None and body:
            progress(len(body))
        self.requests.append(request)
        r = self.handler(request)
        chunks = [r.body] if isinstance(r.body, (bytes, bytearray)) else r.body
        return Response(r.status, r.reason or http.client.responses.get(r.status, ""), Headers(r.headers), iter(chunks))

    def upgrade(self, request: Request) -> Upgraded:
        from ..errors import EngineAPIError

        self.requests.append(request)
        if self.upgrade_handler is None:
            raise EngineAPIError("upgrade not supported by this mock", 404)
        ours, theirs = socket.socketpair()
        t = threading.Thread(target=self.upgrade_handler, args=(request, theirs), daemon=True)
        t.start()

        def done() -> None:
            t.join(5)
            theirs.close()

        return Upgraded(ours, 101, Headers({"Upgrade": request.headers.get("Upgrade") or "", "Connection": "Upgrade"}),
                        on_close=done)

