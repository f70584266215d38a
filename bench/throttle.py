"""A rate-limited relay for benchmarks of slow links: stdin/stdout <-> TCP.

``python3 bench/throttle.py HOST PORT RATE`` (RATE in bytes/s, suffixes
k/M: ``20M``) connects to HOST:PORT and copies both directions, each
limited to RATE with a token bucket (bursts of 50 ms worth, at least 64 KiB,
so that a busy machine's sleep granularity does not lower the rate).  Used as an ssh
``ProxyCommand`` so that ssh itself, the docker CLI and ctxpack all see the
same slow link to 127.0.0.1.  It ends when either side closes.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time


def parse_rate(text: str) -> float:
    mult = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}
    if text and text[-1] in mult:
        return float(text[:-1]) * mult[text[-1]]
    return float(text)


class Bucket:
    def __init__(self, rate: float):
        self.rate = rate
        self.burst = max(65536, int(rate / 20))
        self.tokens = float(self.burst)
        self.t = time.monotonic()

    def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= n:
                self.tokens -= n
                return
            time.sleep((n - self.tokens) / self.rate)


def pump(read, write, bucket: Bucket, done) -> None:
    try:
        while True:
            data = read(65536)
            if not data:
                break
            bucket.take(len(data))
            write(data)
    except OSError:
        pass
    done()


def main() -> int:
    host, port, rate = sys.argv[1], int(sys.argv[2]), parse_rate(sys.argv[3])
    s = socket.create_connection((host, port))
    finished = threading.Event()

    def to_sock(data: bytes) -> None:
        s.sendall(data)

    def to_stdout(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]

    def up_done() -> None:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    threading.Thread(target=pump, args=(lambda n: os.read(0, n), to_sock, Bucket(rate), up_done), daemon=True).start()
    pump(s.recv, to_stdout, Bucket(rate), finished.set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
