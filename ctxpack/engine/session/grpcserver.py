"""A small gRPC server on one already-connected socket, over ``h2``.

After ``POST /session`` is upgraded, the daemon is the HTTP/2 *client* on the
hijacked connection and ctxpack must serve gRPC on it.  grpcio cannot serve
on a connected socket (grpc/grpc#23760), so this module runs the server side
of HTTP/2 with the pure-Python ``h2`` state machine and does gRPC's framing
itself: each message is a 5-byte prefix (compressed flag, big-endian length)
and the bytes; a call ends with trailers ``grpc-status`` (and
``grpc-message``, percent-encoded).  See docs/session.md for why this stack
was chosen over grpclib or a byte pump into grpcio.

Threads:

* the *I/O thread* (``serve``) is the only one that touches the socket (an
  SSL socket must not be used from two threads at once): a ``select`` loop
  that reads, feeds ``h2``, answers handlers marked ``inline`` (grpc health)
  right there, and writes what ``h2`` produced, in order.  BuildKit kills
  the session at the first health check not answered within 10 s, so that
  answer never waits for another thread or behind a busy handler;
* one thread per other call runs its handler (FileSync, secrets, ssh...);
  what it sends is queued for the I/O thread, which a pipe wakes.

Flow control is ``h2``'s.  What a call sends is appended, whole messages at
a time, to the call's pending bytes, and sent as the window allows (a
window update drains it on the I/O thread); a handler's :meth:`Call.send`
waits while more than :data:`PENDING_LIMIT` bytes are pending, with a
deadline, and every wait ends when the connection closes.  Because nothing
is ever cut into the stream except at message boundaries, a call's
:attr:`Call.intercept` may answer a request message right on the I/O
thread (FileSync answers a small file's REQ there: no hand-off to the
handler's thread and back per file).
"""

from __future__ import annotations

import collections
import os
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

__all__ = ["Status", "RpcError", "Call", "Method", "GrpcServer"]


class Status:
    """gRPC status codes (the ones the session uses)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class RpcError(Exception):
    """Raised by a handler to end its call with ``code`` and ``message``;
    raised by :class:`Call` methods when the call or connection is gone."""

    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


class _Closed(RpcError):
    pass


#: How long a sender waits for the daemon to open its flow-control window
#: before giving up on the call (the daemon is stuck or gone).
SEND_STALL_TIMEOUT = 60.0

#: A handler's send returns once at most this many bytes of its call wait
#: for the daemon's flow-control window.
PENDING_LIMIT = 1 << 20

#: The receive window ctxpack advertises, per stream and for the connection:
#: the largest HTTP/2 allows (what the daemon sends is small; see
#: :meth:`GrpcServer._split_locked` for why it is never acknowledged).
RECEIVE_WINDOW = (1 << 31) - 1

#: DATA payload bytes read past ``h2`` at most (then ``h2`` reads them all and
#: acknowledges them as usual): far below the window, far above what a
#: daemon sends in a build (~20 bytes per file).
BYPASS_LIMIT = 1 << 30

_EOF = object()
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Outbox:
    """A call's framed bytes waiting for the flow-control window: whole
    pieces in order, taken from the front in frame-sized parts.  A deque of
    pieces, not one bytearray: appending to a large buffer that is being
    consumed from the front would move it in memory again and again (tens of
    MB while the daemon's window is shut)."""

    __slots__ = ("pieces", "size", "offset")

    def __init__(self) -> None:
        self.pieces: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.offset = 0  # into pieces[0]

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if len(data):
            self.pieces.append(data if isinstance(data, bytes) else bytes(data))
            self.size += len(data)

    def take(self, n: int) -> bytes:
        """The first ``n`` bytes (fewer if fewer are waiting), removed."""
        pieces = self.pieces
        first = pieces[0]
        off = self.offset
        if len(first) - off >= n:
            out = first[off:off + n] if off or n < len(first) else first
            self.offset = off + n
            if self.offset == len(first):
                pieces.popleft()
                self.offset = 0
            self.size -= len(out)
            return out
        parts: list[bytes | memoryview] = []
        need = n
        while need and pieces:
            first = pieces[0]
            avail = len(first) - off
            if avail <= need:
                parts.append(memoryview(first)[off:] if off else first)
                pieces.popleft()
                need -= avail
                off = 0
            else:
                parts.append(memoryview(first)[off:off + need])
                off += need
                need = 0
        self.offset = off
        out = b"".join(parts)
        self.size -= len(out)
        return out


class Call:
    """One gRPC call (one HTTP/2 stream), as its handler sees it."""

    def __init__(self, server: GrpcServer, stream_id: int, method: str, metadata: dict[str, list[str]]):
        self._server = server
        self.stream_id = stream_id
        self.method = method
        #: Request metadata: lower-case keys, every value in order.
        self.metadata = metadata
        self._buf = bytearray()
        self._messages: collections.deque[object] = collections.deque()
        self._headers_sent = False
        self._pending = _Outbox()
        self._deferred: tuple[int, str] | None = None
        self.finished = False
        self.reset = False
        self._remote_ended = False
        #: Bytes of response messages (without gRPC prefixes) sent so far.
        self.bytes_sent = 0
        #: Called on the I/O thread, server lock held, with each request
        #: message as it arrives; True: it was answered there (it is not
        #: queued for :meth:`recv`).  Set with :meth:`set_intercept`.
        self.intercept: Callable[[bytes], bool] | None = None

    # -- called by the reader thread, state lock held ------------------------

    def _feed(self, data: bytes) -> int:
        """Append DATA bytes; returns the number of complete messages queued."""
        self._buf += data
        n = 0
        buf = self._buf
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + length:
                break
            if buf[0] != 0:
                raise RpcError(Status.UNIMPLEMENTED, "compressed gRPC messages are not supported")
            msg = bytes(buf[5:5 + length])
            del buf[:5 + length]
            if self.intercept is not None and self.intercept(msg):
                continue
            self._messages.append(msg)
            n += 1
        return n

    def set_intercept(self, fn: Callable[[bytes], bool] | None) -> None:
        """Install (or, with ``None``, remove) :attr:`intercept`; once this
        returns, no call of the previous one is running.  ``fn`` must not
        block and must not raise; it may :meth:`send_raw` (never waits on
        the I/O thread)."""
        with self._server._cond:
            self.intercept = fn

    # -- for handlers ----------------------------------------------------------

    def first(self, key: str, default: str = "") -> str:
        """The first value of metadata ``key`` (or ``default``)."""
        values = self.metadata.get(key)
        return values[0] if values else default

    def recv(self, timeout: float | None = None) -> bytes | None:
        """The next request message; ``None`` once the client ended its side.

        Raises :class:`RpcError` (CANCELLED) when the stream was reset or the
        connection closed, DEADLINE_EXCEEDED after ``timeout`` seconds.
        """
        srv = self._server
        deadline = None if timeout is None else time.monotonic() + timeout
        with srv._cond:
            while not self._messages:
                if self.reset or srv.closed:
                    raise _Closed(Status.CANCELLED, srv.close_reason or "stream reset by the daemon")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RpcError(Status.DEADLINE_EXCEEDED, f"no message from the daemon within {timeout:.0f}s")
                srv._cond.wait(left)
            msg = self._messages.popleft()
            if msg is _EOF:
                self._messages.appendleft(_EOF)  # stays at the end
                return None
            assert isinstance(msg, bytes)
            return msg

    #: What :meth:`recv_nowait` returns when no message is waiting.
    EMPTY = object()

    def recv_nowait(self) -> bytes | None | object:
        """The next request message if one is waiting, else :attr:`EMPTY`;
        ``None`` once the client ended its side."""
        with self._server._cond:
            if not self._messages:
                if self.reset or self._server.closed:
                    raise _Closed(Status.CANCELLED, self._server.close_reason or "stream reset by the daemon")
                return Call.EMPTY
            msg = self._messages.popleft()
            if msg is _EOF:
                self._messages.appendleft(_EOF)
                return None
            return msg

    def send(self, message: bytes) -> None:
        """Send one response message (blocks for flow control)."""
        self.send_raw(len(message).to_bytes(5, "big") + message, len(message))

    def send_raw(self, framed: bytes | bytearray | memoryview, payload: int = 0) -> None:
        """Send already framed gRPC messages (5-byte prefix each) in one go:
        how a sender batches thousands of small messages into few frames."""
        self._server._send_data(self, memoryview(framed))
        self.bytes_sent += payload

    def queue_raw(self, framed: bytes, payload: int = 0) -> None:
        """:meth:`send_raw` for an :attr:`intercept` (the I/O thread, server
        lock held): the bytes go out, packed into frames with the others
        queued, once the messages read so far have been handled."""
        srv = self._server
        srv._start_response_locked(self)
        self._pending.append(framed)
        self.bytes_sent += payload
        srv._to_drain[self.stream_id] = self

    def wake_handler(self) -> None:
        """For an :attr:`intercept` (the I/O thread, server lock held): wake
        the handler's :meth:`wait` once the bytes read so far are handled."""
        self._server._notify = True

    def wait(self, ready: Callable[[], bool], timeout: float) -> None:
        """Wait until ``ready()`` (checked under the server lock, after each
        read the I/O thread handled), a request message is waiting, the call
        or the connection ended, or ``timeout`` seconds passed."""
        srv = self._server
        with srv._cond:
            srv._cond.wait_for(lambda: ready() or bool(self._messages) or self.reset or srv.closed, timeout)

    def finish(self, code: int = Status.OK, message: str = "") -> None:
        """End the call with trailers; a no-op once the call ended."""
        self._server._finish(self, code, message)


@dataclass(frozen=True)
class Method:
    """A served method: ``handler(call)`` runs for each call.  ``inline``
    handlers run on the reader thread as soon as one request message has
    arrived and must return at once (health)."""

    handler: Callable[[Call], None]
    inline: bool = False


def _percent(message: str) -> str:
    # grpc-message: percent-encode everything outside printable ASCII and '%'.
    return urllib.parse.quote(message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


class GrpcServer:
    """Serves ``methods`` (``{"/pkg.Service/Method": Method}``) on ``sock``,
    a connected stream socket on which the peer speaks HTTP/2 as a client.
    ``initial`` holds bytes already read from the socket (after the HTTP/1.1
    101 response).  Call :meth:`serve` (blocks until the connection ends) or
    :meth:`start` (in a thread)."""

    def __init__(self, sock: socket.socket, methods: Mapping[str, Method], *, initial: bytes = b"",
                 on_error: Callable[[str, BaseException], None] | None = None):
        self.sock = sock
        self.methods = dict(methods)
        self._initial = initial
        self._on_error = on_error
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config=config)
        # Large receive windows: the daemon's messages are small, and nothing
        # is gained by making it wait for our window updates.
        self._conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000},
        )
        self._cond = threading.Condition()
        self._out: collections.deque[bytes] = collections.deque()
        self._out_cond = threading.Condition()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._abandon = False
        self._calls: dict[int, Call] = {}
        self._unacked: dict[int, int] = {}  # stream -> DATA bytes read, not acknowledged yet
        self._to_drain: dict[int, Call] = {}  # calls an intercept queued bytes for
        self._notify = False  # an intercept asked to wake the handlers (Call.wake_handler)
        self._inbuf = bytearray()  # bytes read, not yet a whole frame
        self._preface_left = len(_PREFACE)  # the client's preface comes before any frame
        self._bypassed = 0  # DATA payload bytes read here, not by h2 (never acknowledged)
        # DATA frames made here (see _drain_locked) need h2's window attributes.
        self._direct = isinstance(getattr(self._conn, "outbound_flow_control_window", None), int) and \
            isinstance(getattr(self._conn, "streams", None), dict)
        self.closed = False
        self.closed_at: float | None = None
        self.close_reason = ""
        self._threads: list[threading.Thread] = []
        self._reader: threading.Thread | None = None
        self._reader_thread: threading.Thread | None = None
        #: Bytes read from and written to the socket.
        self.bytes_in = 0
        self.bytes_out = 0
        #: Health checks answered, and when the last one was (monotonic).
        self.health_checks = 0
        self.last_health: float | None = None
        self.max_health_gap = 0.0
        self.started = time.monotonic()
        #: When bytes last came from the daemon (monotonic): BuildKit checks
        #: the session's health every second, so a long silence means the
        #: daemon stopped (or the link to it did).
        self.last_received = self.started

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Serve in a background thread."""
        self._reader = threading.Thread(target=self.serve, name="ctxpack-session-io", daemon=True)
        self._reader.start()

    def serve(self) -> None:
        """Run the I/O loop until the connection ends (never raises)."""
        self._reader_thread = threading.current_thread()
        with self._cond:
            self._conn.initiate_connection()
            # The connection's window opened as wide as the streams' at once
            # (HTTP/2 starts it at 64 KiB whatever SETTINGS say): the daemon's
            # thousands of small REQs never wait for our acknowledgements.
            self._conn.increment_flow_control_window(RECEIVE_WINDOW - 65535)
            self._flush_locked()
        try:
            if self._initial:
                self.bytes_in += len(self._initial)
                self._receive(self._initial)
            self._io_loop()
        except Exception as e:  # noqa: BLE001 - a protocol bug must not hang the build
            self._close(f"session protocol error: {type(e).__name__}: {e}")
        finally:
            self._close("")
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _send(self, sock: socket.socket, pending: bytes | memoryview) -> bytes | memoryview | None:
        """Send what the non-blocking socket takes now; the rest, or ``None``
        once the connection failed (and is closed)."""
        try:
            n = sock.send(pending)
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0
        except OSError as e:
            self._close(f"writing to the session connection failed: {e}")
            return None
        self.bytes_out += n
        return pending[n:]

    def _take_out_locked(self) -> bytes | memoryview:
        """Everything queued for the socket, as one buffer, dequeued
        (``_out_cond`` held)."""
        if not self._out:
            return b""
        out = memoryview(b"".join(self._out))
        self._out.clear()
        return out

    def _io_loop(self) -> None:
        # One thread reads and writes: an SSL socket must not be used by two
        # threads at once, and a health answer goes out on the next turn of
        # this loop without waking another thread.
        sock = self.sock
        sock.setblocking(False)
        tls_sock = sock if isinstance(sock, ssl.SSLSocket) else None
        tls = tls_sock is not None
        pending: bytes | memoryview = b""  # taken from the queue, not yet accepted by the socket
        while True:
            with self._out_cond:
                if not pending:
                    pending = self._take_out_locked()
                if self.closed and (not pending or self._abandon):
                    return
            fd = sock.fileno()
            readable, writable, _ = select.select([fd, self._wake_r], [fd] if pending else [], [], 1.0)
            if self._wake_r in readable:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            if pending and (writable or tls):
                rest = self._send(sock, pending)
                if rest is None:
                    return
                pending = rest
            if fd in readable or (tls_sock is not None and tls_sock.pending()):
                while True:
                    try:
                        data = sock.recv(1 << 18)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        break
                    except OSError as e:
                        self._close(f"session connection failed: {e}")
                        return
                    if not data:
                        self._close("the daemon closed the session connection")
                        return
                    self.bytes_in += len(data)
                    self.last_received = time.monotonic()
                    self._receive(data)
                    if not (tls_sock is not None and tls_sock.pending()):
                        break
                if not pending:
                    # What the read produced (a REQ's DATA, a health answer)
                    # goes out now, not after another turn through select.
                    with self._out_cond:
                        pending = self._take_out_locked()
                    if pending:
                        rest = self._send(sock, pending)
                        if rest is None:
                            return
                        pending = rest

    def close(self, reason: str = "closed by ctxpack") -> None:
        """Say goodbye (GOAWAY), let the I/O loop send what is queued (2 s at
        most), and shut the connection; wakes every waiter."""
        with self._cond:
            if not self.closed:
                try:
                    self._conn.close_connection()
                    self._flush_locked()
                except h2.exceptions.ProtocolError:
                    pass
        self._close(reason)
        if self._reader is not None and threading.current_thread() is not self._reader:
            self._reader.join(2)
            self._abandon = True
            self._wake()
            self._reader.join(2)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def wait_closed(self, timeout: float) -> bool:
        """Wait until the connection has ended; whether it has."""
        end = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._reader is not None:
            self._reader.join(timeout)

    def _close(self, reason: str) -> None:
        with self._cond:
            if not self.closed:
                self.closed = True
                self.closed_at = time.monotonic()
                self.close_reason = reason or "session closed"
            self._cond.notify_all()
        self._wake()

    # -- writing -----------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _flush_locked(self) -> None:
        out = self._conn.data_to_send()
        if out:
            self._enqueue(out)

    def _enqueue(self, data: bytes) -> None:
        """Queue ``data`` for the socket; wake the I/O thread unless this is it."""
        with self._out_cond:
            self._out.append(data)
        if threading.current_thread() is not self._reader_thread:
            self._wake()

    def _send_data(self, call: Call, data: memoryview) -> None:
        # Whole messages are appended under the lock, so senders on two
        # threads (a handler and the I/O thread's intercept) never interleave
        # inside a message.
        with self._cond:
            on_reader = threading.current_thread() is self._reader_thread
            if not on_reader:
                if self.closed or call.reset:
                    raise _Closed(Status.CANCELLED, self.close_reason or "stream reset by the daemon")
                if call.finished:
                    raise RpcError(Status.INTERNAL, "send after finish")
            self._start_response_locked(call)
            call._pending.append(data)
            self._drain_locked(call)
            self._flush_locked()
            if on_reader:
                return  # never wait on the I/O thread: it is the one that would see the window update
            stalled_since: float | None = None
            left = len(call._pending)
            while len(call._pending) > PENDING_LIMIT:
                if self.closed or call.reset:
                    raise _Closed(Status.CANCELLED, self.close_reason or "stream reset by the daemon")
                now = time.monotonic()
                if stalled_since is None or len(call._pending) < left:
                    stalled_since, left = now, len(call._pending)
                elif now - stalled_since > SEND_STALL_TIMEOUT:
                    raise RpcError(Status.DEADLINE_EXCEEDED,
                                   f"the daemon accepted no data for {SEND_STALL_TIMEOUT:.0f}s")
                self._cond.wait(1.0)

    def _drain_locked(self, call: Call) -> None:
        """Send what fits of a call's pending bytes, then its deferred trailers.

        The DATA frames are made here, not by ``h2.send_data`` (some 30 µs a
        frame, one or more per file in a first build): the same checks (the
        window, the peer's largest frame, a call that is still open) and the
        same accounting, the connection's and the stream's outbound windows
        lowered by what was sent, so ``h2`` goes on seeing the windows the
        daemon sees.  ``h2``'s own pending output (headers, window updates,
        ping answers) is taken first, so the order on the wire is the order
        of the calls."""
        conn = self._conn
        pending = call._pending
        stream = conn.streams.get(call.stream_id) if self._direct else None
        if stream is None or not hasattr(stream, "outbound_flow_control_window"):
            while pending and not call.reset and not self.closed:
                window = conn.local_flow_control_window(call.stream_id)
                if window <= 0:
                    return
                n = min(window, conn.max_outbound_frame_size, len(pending))
                conn.send_data(call.stream_id, pending.take(n))
        elif pending and not call.reset and not self.closed:
            frames: list[bytes] = []
            head = b"\x00\x00" + call.stream_id.to_bytes(4, "big")  # type DATA, no flags, the stream
            largest = conn.max_outbound_frame_size
            while pending:
                window = min(conn.outbound_flow_control_window, stream.outbound_flow_control_window)
                if window <= 0:
                    break
                data = pending.take(min(window, largest, len(pending)))
                conn.outbound_flow_control_window -= len(data)
                stream.outbound_flow_control_window -= len(data)
                frames += (len(data).to_bytes(3, "big"), head, data)
            if frames:
                self._flush_locked()
                self._enqueue(b"".join(frames))
            if pending:
                return
        if not call._pending and call._deferred is not None:
            code, message = call._deferred
            call._deferred = None
            call.finished = False
            self._finish(call, code, message)

    def _start_response_locked(self, call: Call) -> None:
        if not call._headers_sent:
            call._headers_sent = True
            self._conn.send_headers(call.stream_id, [(":status", "200"), ("content-type", "application/grpc")])

    def _finish(self, call: Call, code: int, message: str) -> None:
        with self._cond:
            if call.finished or call.reset or self.closed:
                call.finished = True
                return
            call.finished = True
            if call._pending:
                call._deferred = (code, message)  # sent once the pending bytes are
                return
            trailers = [("grpc-status", str(code))]
            if message:
                trailers.append(("grpc-message", _percent(message)))
            try:
                if not call._headers_sent:  # trailers-only response
                    call._headers_sent = True
                    self._conn.send_headers(
                        call.stream_id,
                        [(":status", "200"), ("content-type", "application/grpc"), *trailers],
                        end_stream=True,
                    )
                else:
                    self._conn.send_headers(call.stream_id, trailers, end_stream=True)
            except h2.exceptions.StreamClosedError:
                pass
            self._calls.pop(call.stream_id, None)
            self._flush_locked()

    # -- reading -----------------------------------------------------------------

    def _split_locked(self, data: bytes) -> list[bytes | tuple[Call, bytes]]:
        """The bytes read, cut at frame boundaries: runs of whole frames for
        ``h2`` (bytes), and, in their place in the order, the payloads of
        DATA frames that are read here instead (``(call, payload)``).

        ``h2`` costs some 20-40 µs per frame it parses, and a first build's
        daemon sends each of its ~14,000 REQs in a DATA frame of its own.  A
        DATA frame on a stream whose call is open, without END_STREAM or
        padding, changes nothing in ``h2``'s state but its receive window;
        ctxpack advertises the largest window HTTP/2 allows and never
        acknowledges these bytes (so ``h2``'s view of the window never
        differs from the daemon's in the direction that matters), and stops
        reading frames itself after :data:`BYPASS_LIMIT` bytes."""
        buf = self._inbuf
        buf += data
        out: list[bytes | tuple[Call, bytes]] = []
        pos = 0
        if self._preface_left:  # the client's connection preface is not a frame
            pos = min(self._preface_left, len(buf))
            self._preface_left -= pos
            out.append(bytes(buf[:pos]))
            if self._preface_left:
                del buf[:pos]
                return out
        start = pos
        size = len(buf)
        calls = self._calls
        while size - pos >= 9:
            end = pos + 9 + int.from_bytes(buf[pos:pos + 3], "big")
            if end > size:
                break
            # type DATA (0), flags without END_STREAM (0x1) and PADDED (0x8)
            if buf[pos + 3] == 0 and not buf[pos + 4] & 0x09 and self._bypassed < BYPASS_LIMIT:
                call = calls.get(int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF)
                if call is not None and not (call.finished or call.reset or call._remote_ended):
                    if pos > start:
                        out.append(bytes(buf[start:pos]))
                    out.append((call, bytes(buf[pos + 9:end])))
                    self._bypassed += end - pos - 9
                    start = end
            pos = end
        if pos > start:
            out.append(bytes(buf[start:pos]))
        del buf[:pos]
        return out

    def _receive(self, data: bytes) -> None:
        inline: list[Call] = []
        self._unacked = {}
        with self._cond:
            wake = False
            for piece in self._split_locked(data):
                if isinstance(piece, tuple):
                    call, payload = piece
                    if not (call.finished or call.reset):  # ended by an earlier frame of this read
                        wake = self._data_locked(call, payload, inline) or wake
                    continue
                try:
                    events = self._conn.receive_data(piece)
                except h2.exceptions.ProtocolError as e:
                    self._flush_locked()
                    raise RuntimeError(f"HTTP/2 protocol error from the daemon: {e}") from None
                for ev in events:
                    wake = self._event_locked(ev, inline) or wake
            # One acknowledgement per stream per read, not one per DATA frame
            # (thousands of one-REQ frames in a first build).
            for sid, n in self._unacked.items():
                try:
                    self._conn.acknowledge_received_data(n, sid)
                except h2.exceptions.StreamClosedError:
                    pass
            if self._to_drain:
                for c in self._to_drain.values():
                    self._drain_locked(c)
                self._to_drain.clear()
            self._flush_locked()
            if wake or self._notify:  # not when every message was answered by an intercept: no thread switch per REQ
                self._notify = False
                self._cond.notify_all()
        for call in inline:
            self._run(call)

    def _event_locked(self, ev: h2.events.Event, inline: list[Call]) -> bool:
        """Handle one event; whether waiting threads must be woken (False
        only for DATA whose messages were all answered by an intercept)."""
        if isinstance(ev, h2.events.RequestReceived):
            headers: dict[str, list[str]] = {}
            for k, v in ev.headers or []:
                headers.setdefault(str(k).lower(), []).append(str(v))
            path = headers.get(":path", [""])[0]
            call = Call(self, ev.stream_id, path, {k: v for k, v in headers.items() if not k.startswith(":")})
            self._calls[ev.stream_id] = call
            method = self.methods.get(path)
            if method is None:
                # Released after this batch of events: trailers-only answer.
                self._unimplemented_locked(call)
                return True
            call._method = method  # type: ignore[attr-defined]
            if not method.inline:
                t = threading.Thread(target=self._run, args=(call,), name=f"ctxpack-session{path}", daemon=True)
                self._threads.append(t)
                t.start()
        elif isinstance(ev, h2.events.DataReceived):
            if ev.flow_controlled_length:
                self._unacked[ev.stream_id] = self._unacked.get(ev.stream_id, 0) + ev.flow_controlled_length
            fed = self._calls.get(ev.stream_id)
            if fed is None or fed.finished:
                return False
            return self._data_locked(fed, ev.data, inline)
        elif isinstance(ev, h2.events.StreamEnded):
            ended = self._calls.get(ev.stream_id)
            if ended is not None:
                ended._remote_ended = True
                ended._messages.append(_EOF)
        elif isinstance(ev, h2.events.StreamReset):
            reset = self._calls.pop(ev.stream_id, None)
            if reset is not None:
                reset.reset = True
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            for c in list(self._calls.values()):
                if c._pending or c._deferred is not None:
                    self._drain_locked(c)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True
            self.closed_at = time.monotonic()
            self.close_reason = f"the daemon ended the session (GOAWAY, error code {ev.error_code})"
        return True

    def _data_locked(self, call: Call, data: bytes, inline: list[Call]) -> bool:
        """A call's request bytes; whether a handler must be woken."""
        n = call._feed(data)
        method = getattr(call, "_method", None)
        if n and method is not None and method.inline and not getattr(call, "_dispatched", False):
            call._dispatched = True  # type: ignore[attr-defined]
            inline.append(call)
        return n > 0

    def _unimplemented_locked(self, call: Call) -> None:
        call.finished = True
        self._conn.send_headers(
            call.stream_id,
            [(":status", "200"), ("content-type", "application/grpc"),
             ("grpc-status", str(Status.UNIMPLEMENTED)),
             ("grpc-message", _percent(f"unknown method {call.method}"))],
            end_stream=True,
        )
        self._calls.pop(call.stream_id, None)

    def _run(self, call: Call) -> None:
        method: Method = call._method  # type: ignore[attr-defined]
        try:
            method.handler(call)
        except _Closed:
            call.finished = True
            return
        except h2.exceptions.ProtocolError:
            if self.closed or call.reset:
                call.finished = True  # the connection went away under the handler
                return
            raise
        except RpcError as e:
            call.finish(e.code, e.message)
        except Exception as e:  # noqa: BLE001 - reported to the daemon and to the session
            if self._on_error is not None:
                self._on_error(call.method, e)
            call.finish(Status.INTERNAL, f"{type(e).__name__}: {e}")
        else:
            call.finish(Status.OK)
