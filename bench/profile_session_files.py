"""CPU per served file of the session's FileSync sender (load-independent).

Builds a tree of ``--files`` small files (sizes like a source tree: 0.1-20
KiB, a few up to 100 KiB), lists it as a session would, and serves one
DiffCopy to a receiver that asks for every file, then FINs:

* ``--mode filesync``: the FileSync handler alone against an in-process fake
  call (no HTTP/2): the cost of STATs, opens, reads and packet framing;
* ``--mode stack``: the real gRPC server over a socket pair, the receiver an
  h2 client in a child process (its CPU is not counted): adds HTTP/2
  framing, flow control and the thread hand-offs.

Reports ``time.process_time`` of this process (all its threads) for the
listing alone and for the listing plus every file, and their difference per
file in microseconds; ``--profile N`` prints the top N functions
(cProfile, the serving thread).  Example::

    PYTHONPATH=$PWD python3 bench/profile_session_files.py --files 3000 --mode stack
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ctxpack import open_context
from ctxpack.engine.session import wire
from ctxpack.engine.session.filesync import FileSyncService, context_listing
from ctxpack.engine.session.grpcserver import Call

DIFF_COPY = "/moby.filesync.v1.FileSync/DiffCopy"


def make_tree(root: str, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    with open(os.path.join(root, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY . /\n")
    for i in range(n - 1):
        d = os.path.join(root, f"d{i % 50:02d}", f"s{i % 7}")
        os.makedirs(d, exist_ok=True)
        size = rnd.choice((100, 700, 1500, 3000, 6000, 20000)) if i % 100 else 100_000
        with open(os.path.join(d, f"f{i:05d}.txt"), "wb") as f:
            f.write(bytes([65 + i % 26]) * size)


class FakeCall:
    """A DiffCopy call whose receiver asks for ``reqs`` then FINs."""

    EMPTY = Call.EMPTY

    def __init__(self, reqs: list[int]):
        self.metadata = {"dir-name": ["context"]}
        self.msgs: collections.deque[bytes | None] = collections.deque(
            wire.encode_packet(wire.Packet(wire.PACKET_REQ, id=i)) for i in reqs)
        self.msgs.append(wire.encode_packet(wire.Packet(wire.PACKET_FIN)))
        self.sent = 0
        self.started = False

    def recv_nowait(self) -> object:
        if not self.started:
            return Call.EMPTY  # the receiver asks once the listing is out
        return self.msgs.popleft() if self.msgs else None

    def recv(self, timeout: float | None = None) -> bytes | None:
        self.started = True
        return self.msgs.popleft() if self.msgs else None  # type: ignore[return-value]

    def set_intercept(self, fn: object) -> None:
        pass  # no I/O thread here: every REQ goes through the handler

    def send(self, message: bytes) -> None:
        self.sent += len(message)

    def send_raw(self, framed: object, payload: int = 0) -> None:
        self.sent += len(framed)  # type: ignore[arg-type]


def file_ids(listing) -> list[int]:
    return [i for i, e in enumerate(listing.entries) if e.source is not None]


def run_filesync(root: str, with_reqs: bool, prof: cProfile.Profile | None) -> tuple[float, int]:
    listing = context_listing(open_context(root, dialect="buildkit"))
    ids = file_ids(listing) if with_reqs else []
    svc = FileSyncService({"context": listing})
    call = FakeCall(ids)
    t0 = time.process_time()
    if prof:
        prof.enable()
    svc.diff_copy(call)  # type: ignore[arg-type]
    if prof:
        prof.disable()
    return time.process_time() - t0, len(ids)


_CLIENT = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[2])
from session_client import H2Client
from ctxpack.engine.session import wire
s = socket.socket(fileno=int(sys.argv[1]))
c = H2Client(s, initial_window=int(sys.argv[4]))
sid = c.open("/moby.filesync.v1.FileSync/DiffCopy", [("dir-name", "context")])
ids = [int(x) for x in sys.argv[3].split(",") if x]
n = 1
while True:
    msgs = list(c.wait_messages(sid, n, timeout=60))
    if any(wire.decode_packet(m).type == 0 and wire.decode_packet(m).stat is None for m in msgs[n - 1:]):
        break
    n = len(msgs) + 1
inflight = int(sys.argv[5]) or len(ids) or 1
seen = len(msgs)
sent = done = 0
while done < len(ids):
    while sent < len(ids) and sent - done < inflight:
        c.send(sid, wire.encode_packet(wire.Packet(1, id=ids[sent])))
        sent += 1
    msgs = list(c.wait_messages(sid, seen + 1, timeout=60))
    for m in msgs[seen:]:
        p = wire.decode_packet(m)
        if p.type == 2 and not p.data:
            done += 1
    seen = len(msgs)
c.send(sid, wire.encode_packet(wire.Packet(3)))
assert c.calls[sid].ended.wait(120)
print(c.calls[sid].status, len(c.calls[sid].messages))
"""


stats_of: list[cProfile.Profile] = []


def run_stack(root: str, with_reqs: bool, prof: cProfile.Profile | None, window: int,
              inflight: int) -> tuple[float, int]:
    from ctxpack.engine.session.grpcserver import GrpcServer, Method

    listing = context_listing(open_context(root, dialect="buildkit"))
    ids = file_ids(listing) if with_reqs else []
    svc = FileSyncService({"context": listing})
    done = threading.Event()
    cpu = [0.0]

    def handler(call: Call) -> None:
        try:
            if prof:
                prof.enable()
            svc.diff_copy(call)
        finally:
            if prof:
                prof.disable()
            done.set()

    a, b = socket.socketpair()
    io_prof = cProfile.Profile(time.thread_time) if prof else None

    class Server(GrpcServer):
        def serve(self) -> None:
            if io_prof:
                io_prof.enable()
            try:
                super().serve()
            finally:
                if io_prof:
                    io_prof.disable()

    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    child = subprocess.Popen([sys.executable, "-c", _CLIENT, str(b.fileno()), tests, ",".join(map(str, ids)),
                              str(window), str(inflight)], pass_fds=[b.fileno()], stdout=subprocess.PIPE)
    b.close()
    t0 = time.process_time()
    srv = Server(a, {DIFF_COPY: Method(handler)})
    srv.start()
    out, _ = child.communicate(timeout=300)
    done.wait(10)
    cpu[0] = time.process_time() - t0
    srv.close()
    srv.join(5)
    if prof and io_prof:
        prof.create_stats()
        io_prof.create_stats()
        stats_of.append(io_prof)
    status = out.split()[0] if out else b"?"
    if status != b"0":
        raise SystemExit(f"the receiver saw status {out!r}")
    return cpu[0], len(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--mode", choices=("filesync", "stack"), default="stack")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=int, default=65535, help="the receiver's initial stream window (stack)")
    ap.add_argument("--inflight", type=int, default=0,
                    help="the receiver keeps this many REQs outstanding (0: asks for all at once) (stack)")
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions by own time")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_tree(root, args.files)
        run = (lambda r, p: run_filesync(root, r, p)) if args.mode == "filesync" else (
            lambda r, p: run_stack(root, r, p, args.window, args.inflight))
        run(True, None)  # warm the page cache
        base = sorted(run(False, None)[0] for _ in range(args.rounds))[args.rounds // 2]
        full = sorted(run(True, None) for _ in range(args.rounds))[args.rounds // 2]
        n = full[1]
        print(f"mode={args.mode} inflight={args.inflight} files={n} listing-only cpu={base * 1e3:.1f} ms  with every file "
              f"cpu={full[0] * 1e3:.1f} ms  per file {(full[0] - base) / n * 1e6:.1f} us "
              f"(all-in {full[0] / n * 1e6:.1f} us)")
        if args.profile:
            prof = cProfile.Profile(time.thread_time)  # CPU, not wall time
            run(True, prof)
            st = pstats.Stats(prof)
            for other in stats_of:
                st.add(other)
            st.sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
