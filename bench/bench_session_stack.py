#!/usr/bin/env python3
"""Why the session's gRPC runs on ``h2`` with batched framing: cost per message.

    python bench/bench_session_stack.py [N]      # default 100000 messages

A FileSync listing is one gRPC message per context entry (fsutil's STAT
packets, ~60 bytes each), so per-message overhead decides how long the
listing of a 100k-file context takes.  Streams N such messages from a server
to a client in one process, three times, and prints the best wall time per
message for:

* ctxpack's server (``ctxpack.engine.session.grpcserver``) with the messages
  framed into 256 KiB batches, as the FileSync sender does;
* the same server with one ``Call.send`` per message;
* grpcio (if installed: ``pip install grpcio``): a generic stream handler
  yielding each message — what a byte pump into a private grpcio server
  would pay, since grpcio cannot batch messages a handler yields one by one.

The clients differ (tests/session_client.py on h2; grpcio's own), and both
run in the same process as the server, so the numbers are per message end to
end.  Standard library plus h2 (and grpcio when present).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

MSG = b"\x12\x3c" + b"x" * 60  # the size of a typical STAT packet
FRAMED = len(MSG).to_bytes(5, "big") + MSG


def bench_h2(n: int, batched: bool) -> list[float]:
    from ctxpack.engine.session.grpcserver import GrpcServer, Method
    from session_client import H2Client

    def handler(call):  # type: ignore[no-untyped-def]
        call.recv(5)
        if not batched:
            for _ in range(n):
                call.send(MSG)
            return
        buf = bytearray()
        for _ in range(n):
            buf += FRAMED
            if len(buf) >= 256 * 1024:
                call.send_raw(buf)
                buf = bytearray()
        call.send_raw(buf)

    times = []
    for _ in range(3):
        a, b = socket.socketpair()
        srv = GrpcServer(a, {"/t.S/M": Method(handler)})
        srv.start()
        cl = H2Client(b, initial_window=1 << 24)
        t0 = time.perf_counter()
        sid = cl.open("/t.S/M")
        cl.send(sid, b"go")
        assert cl.calls[sid].ended.wait(300)
        times.append(time.perf_counter() - t0)
        assert len(cl.calls[sid].messages) == n
        cl.close()
        srv.close()
    return times


def bench_grpcio(n: int) -> list[float] | None:
    try:
        from concurrent import futures

        import grpc
    except ImportError:
        return None

    def handler(request_iterator, context):  # type: ignore[no-untyped-def]
        next(request_iterator)
        for _ in range(n):
            yield MSG

    path = os.path.join(tempfile.mkdtemp(), "g.sock")
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.stream_stream_rpc_method_handler(handler)}),))
    server.add_insecure_port("unix:" + path)
    server.start()
    call = grpc.insecure_channel("unix:" + path).stream_stream("/t.S/M")
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        got = sum(1 for _ in call(iter([b"go"])))
        times.append(time.perf_counter() - t0)
        assert got == n
    server.stop(0)
    return times


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rows = [("ctxpack h2, batched framing", bench_h2(n, True)),
            ("ctxpack h2, one send per message", bench_h2(n, False)),
            ("grpcio stream handler", bench_grpcio(n))]
    print(f"| server | {n} messages, best of 3 | per message |")
    print("|---|---|---|")
    for name, t in rows:
        if t is None:
            print(f"| {name} | (grpcio not installed) | |")
        else:
            print(f"| {name} | {min(t):.2f} s | {min(t) / n * 1e6:.1f} µs |")
    with open("/proc/loadavg") as f:
        print(f"\nload average {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
