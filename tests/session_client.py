"""A tiny gRPC *client* over ``h2`` for testing ctxpack's session server.

This is a test helper (not a test module).  It plays the daemon's part on one
end of a socket pair: it sends the HTTP/2 preface, opens calls with
metadata, sends gRPC-framed messages and collects the answers.  Flow control
can be held back (``auto_window=False``) to prove that a stalled file
transfer does not delay health checks.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.events
import h2.settings


class CallResult:
    def __init__(self) -> None:
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.buf = bytearray()
        self.messages: list[bytes] = []
        self.ended = threading.Event()
        self.got_message = threading.Condition()

    @property
    def status(self) -> int | None:
        for k, v in self.trailers or self.headers:
            if k == "grpc-status":
                return int(v)
        return None

    @property
    def message(self) -> str:
        for k, v in self.trailers or self.headers:
            if k == "grpc-message":
                return v
        return ""


class H2Client:
    def __init__(self, sock: socket.socket, *, auto_window: bool = True, initial_window: int = 65535):
        self.sock = sock
        self.auto_window = auto_window
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window})
        self.lock = threading.RLock()
        self.calls: dict[int, CallResult] = {}
        self.pending_ack: dict[int, int] = {}
        self.closed = threading.Event()
        with self.lock:
            self.conn.initiate_connection()
            self._flush()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def _read(self) -> None:
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    for ev in self.conn.receive_data(data):
                        self._event(ev)
                    self._flush()
        except OSError:
            pass
        finally:
            self.closed.set()
            for c in list(self.calls.values()):
                c.ended.set()

    def _event(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.ResponseReceived):
            self.calls[ev.stream_id].headers = [(str(k), str(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.TrailersReceived):
            self.calls[ev.stream_id].trailers = [(str(k), str(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.DataReceived):
            c = self.calls[ev.stream_id]
            if self.auto_window:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            else:
                # like grpc-go: the connection window reopens as the transport
                # reads; the stream's only when the application reads.
                self.pending_ack[ev.stream_id] = self.pending_ack.get(ev.stream_id, 0) + ev.flow_controlled_length
                if ev.flow_controlled_length:
                    self.conn.increment_flow_control_window(ev.flow_controlled_length)
            c.buf += ev.data
            with c.got_message:
                while len(c.buf) >= 5:
                    n = int.from_bytes(c.buf[1:5], "big")
                    if len(c.buf) < 5 + n:
                        break
                    c.messages.append(bytes(c.buf[5:5 + n]))
                    del c.buf[:5 + n]
                c.got_message.notify_all()
        elif isinstance(ev, h2.events.StreamEnded):
            c = self.calls.get(ev.stream_id)
            if c is not None:
                c.ended.set()
                with c.got_message:
                    c.got_message.notify_all()
        elif isinstance(ev, h2.events.StreamReset):
            c = self.calls.get(ev.stream_id)
            if c is not None:
                c.ended.set()

    def open(self, method: str, metadata: Sequence[tuple[str, str]] = ()) -> int:
        with self.lock:
            sid = self.conn.get_next_available_stream_id()
            self.calls[sid] = CallResult()
            self.conn.send_headers(sid, [
                (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "localhost"),
                ("content-type", "application/grpc"), ("te", "trailers"), *metadata,
            ])
            self._flush()
            return sid

    def send(self, sid: int, message: bytes, end: bool = False) -> None:
        with self.lock:
            self.conn.send_data(sid, len(message).to_bytes(5, "big") + message, end_stream=end)
            self._flush()

    def end(self, sid: int) -> None:
        with self.lock:
            self.conn.end_stream(sid)
            self._flush()

    def release_window(self, sid: int) -> None:
        with self.lock:
            n = self.pending_ack.pop(sid, 0)
            if n:
                self.conn.increment_flow_control_window(n, stream_id=sid)
                self._flush()

    def unary(self, method: str, message: bytes, metadata: Sequence[tuple[str, str]] = (),
              timeout: float = 5.0) -> CallResult:
        sid = self.open(method, metadata)
        self.send(sid, message, end=True)
        c = self.calls[sid]
        if not c.ended.wait(timeout):
            raise TimeoutError(f"{method}: no answer within {timeout}s")
        return c

    def wait_messages(self, sid: int, n: int, timeout: float = 5.0) -> list[bytes]:
        c = self.calls[sid]
        end = time.monotonic() + timeout
        with c.got_message:
            while len(c.messages) < n and not c.ended.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"only {len(c.messages)} of {n} messages")
                c.got_message.wait(left)
        return c.messages

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
