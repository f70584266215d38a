#!/usr/bin/env python3
"""Session builds: ctxpack's BuildKit session vs ctxpack's tar vs the docker CLI 20.10.

    python bench/bench_session.py                      # 100k tree, typical .dockerignore, 3 rounds
    python bench/bench_session.py --small --rounds 1   # 10k tree, quick
    python bench/bench_session.py --out bench/results/session.md

For each client — ``ctxpack session`` (:func:`ctxpack.engine.session.session_build`),
``ctxpack tar`` (the BuildKit-dialect tar as the body of ``POST /build?version=2``)
and ``docker 20.10`` (``DOCKER_BUILDKIT=1 /usr/bin/docker build``, its own
session) — a *first build* (a fresh docker config, so a fresh session shared
key: the daemon has nothing to diff against) and a *rebuild* after one source
file changed.  The Dockerfile bind-mounts the whole context into a RUN
(``RUN --mount=type=bind,target=/ctx``), so BuildKit needs all of it, and
builds with ``--no-cache``.

Measured: time to image (wall clock, the client's call), and the bytes the
client sent to the daemon, counted by a byte-counting unix-socket proxy in
front of dockerd in a separate round (the proxy is a Python pump; timing
rounds talk to the daemon directly).  For ctxpack's session the session's own
counters (files requested, content bytes, upload seconds) are reported too,
and after each of its rebuilds one more by bench/floor_session.py: a rebuild
whose listing was made before the session opened, the floor of the upload.

The daemon is the test harness's (tests/dockerd.py: Debian's dockerd 20.10,
vfs storage, no bridge); the tree is bench/gen_tree.py's with
``--ignore typical``.  Medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)

import benchutil  # noqa: E402
import dockerd as harness  # noqa: E402
import gen_tree  # noqa: E402
import h2flow  # noqa: E402

CLI = "/usr/bin/docker"
DOCKERFILE = "Dockerfile.session"
DOCKERFILE_TEXT = "FROM bb:latest\nRUN --mount=type=bind,target=/ctx ls /ctx > /dev/null\n"
CHANGED = "src/bench-session-changed.txt"


# --------------------------------------------------------------------------
# a byte-counting, h2-reading relay
# --------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_PT = {0: "stat", 1: "req", 2: "data", 3: "fin", 4: "err"}


class StreamTrace:
    """One DiffCopy call as seen on the wire (times: ``time.monotonic()``)."""

    def __init__(self, sid: int, t: float, headers: dict[str, str]):
        self.sid = sid
        self.dir_name = headers.get("dir-name", "?")
        self.followpaths = "followpaths" in headers
        self.t_call = t
        #: up = client → daemon (STAT, DATA, FIN), down = daemon → client (REQ, FIN)
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.nbytes: dict[str, int] = {}
        self.t_end_listing: float | None = None  # the empty STAT
        self.t_trailers: float | None = None

    def packet(self, direction: str, kind: str, size: int, t: float) -> None:
        key = f"{direction}:{kind}"
        self.first.setdefault(key, t)
        self.last[key] = t
        self.count[key] = self.count.get(key, 0) + 1
        self.nbytes[key] = self.nbytes.get(key, 0) + size

    def summary(self, t0: float) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 4)

        return {
            "dir_name": self.dir_name, "followpaths": self.followpaths, "call": rel(self.t_call),
            "end_listing": rel(self.t_end_listing), "trailers": rel(self.t_trailers),
            **{f"first {k}": rel(v) for k, v in self.first.items()},
            **{f"last {k}": rel(v) for k, v in self.last.items()},
            **{f"n {k}": v for k, v in self.count.items()},
            **{f"bytes {k}": v for k, v in self.nbytes.items()},
        }


class _H2Reader:
    """Reads one direction of a session connection: HTTP/2 frames, and the
    gRPC messages of the DiffCopy streams in them (first byte of each fsutil
    Packet: field 1, the type; absent for a STAT)."""

    def __init__(self, conn: ConnTrace, direction: str):
        import hpack

        self.conn, self.direction = conn, direction
        self.buf = bytearray()
        self.need_preface = direction == "down"
        self.decoder = hpack.Decoder() if direction == "down" else None
        self.header_block: tuple[int, bytearray, int] | None = None  # sid, block, flags
        self.msgbuf: dict[int, bytearray] = {}

    def feed(self, data: bytes, t: float) -> None:
        buf = self.buf
        buf += data
        if self.need_preface:
            if len(buf) < len(PREFACE):
                return
            del buf[:len(PREFACE)]
            self.need_preface = False
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            sid = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            self._frame(ftype, flags, sid, payload, t)
        del buf[:pos]

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytearray, t: float) -> None:
        events = self.conn.events
        if ftype == 0 and self.direction == "up":
            events.append((t, "data", sid, len(payload)))  # flow control counts the padding too
        elif ftype == 4 and self.direction == "down" and not flags & 0x1:  # the daemon's SETTINGS
            for i in range(0, len(payload) - 5, 6):
                if int.from_bytes(payload[i:i + 2], "big") == 0x4:  # INITIAL_WINDOW_SIZE
                    events.append((t, "settings", 0, int.from_bytes(payload[i + 2:i + 6], "big")))
        elif ftype == 8 and self.direction == "down":  # the daemon's WINDOW_UPDATE
            events.append((t, "update", sid, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF))
        if ftype == 0:  # DATA
            if flags & 0x8:
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            st = self.conn.streams.get(sid)
            if st is not None:
                self._messages(st, sid, payload, t)
        elif ftype in (1, 9):  # HEADERS, CONTINUATION
            if ftype == 1:
                if flags & 0x8:
                    pad = payload[0]
                    payload = payload[1:len(payload) - pad]
                if flags & 0x20:
                    payload = payload[5:]
                self.header_block = (sid, bytearray(payload), flags)
            elif self.header_block is not None:
                self.header_block[1].extend(payload)
            if flags & 0x4 and self.header_block is not None:  # END_HEADERS
                hsid, block, hflags = self.header_block
                self.header_block = None
                self._headers(hsid, bytes(block), hflags, t)

    def _headers(self, sid: int, block: bytes, flags: int, t: float) -> None:
        if self.decoder is not None:
            hdrs: dict[str, str] = {}
            for k, v in self.decoder.decode(block):
                hdrs.setdefault(str(k), str(v))
            if hdrs.get(":path", "").endswith("/DiffCopy"):
                self.conn.streams[sid] = StreamTrace(sid, t, hdrs)
                self.conn.events.append((t, "open", sid, 0))
            elif ":path" in hdrs:
                self.conn.calls.append((round(t, 4), hdrs[":path"]))
        else:
            st = self.conn.streams.get(sid)
            if st is not None and flags & 0x1:  # trailers
                st.t_trailers = t

    def _messages(self, st: StreamTrace, sid: int, payload: bytearray, t: float) -> None:
        mb = self.msgbuf.setdefault(sid, bytearray())
        mb += payload
        pos = 0
        while len(mb) - pos >= 5:
            n = int.from_bytes(mb[pos + 1:pos + 5], "big")
            if len(mb) - pos < 5 + n:
                break
            first = mb[pos + 5] if n else -1
            kind = _PT.get(mb[pos + 6], "?") if first == 0x08 and n > 1 else "stat"
            if n == 0 and self.direction == "up":
                st.t_end_listing = t  # the empty STAT ends the listing
                kind = "stat-end"
                self.conn.events.append((t, "listing-end", sid, 0))
            elif kind in ("req", "fin") and self.direction == "down":
                self.conn.events.append((t, kind, sid, 0))
            elif kind == "data" and self.direction == "up" and _empty_data(mb[pos + 5:pos + 5 + n]):
                self.conn.events.append((t, "file-end", sid, 0))
            st.packet(self.direction, kind, n, t)
            pos += 5 + n
        del mb[:pos]


def _empty_data(msg: bytes | bytearray) -> bool:
    """An fsutil DATA Packet with no bytes (``type`` = 2, maybe ``ID``, no
    ``data`` field): the end of one requested file."""
    pos = 2  # 0x08 0x02: field 1, DATA
    if pos < len(msg) and msg[pos] == 0x18:  # field 3, ID (varint)
        pos += 1
        while pos < len(msg) and msg[pos] & 0x80:
            pos += 1
        pos += 1
    return pos >= len(msg) or msg[pos:pos + 2] == b"\x22\x00"


class ConnTrace:
    """One client connection through the relay."""

    def __init__(self, t: float):
        self.t_accept = t
        self.request = ""
        self.t_first = {"up": 0.0, "down": 0.0}
        self.t_last = {"up": 0.0, "down": 0.0}
        self.nbytes = {"up": 0, "down": 0}
        self.streams: dict[int, StreamTrace] = {}
        self.calls: list[tuple[float, str]] = []
        self.t_upgraded: float | None = None
        #: flow-control and DiffCopy events for bench/h2flow.py (both pump threads append)
        self.events: list[tuple[float, str, int, int]] = []


class TracingProxy:
    """Unix socket ``path`` → dockerd's socket.  Counts the bytes each way;
    with ``trace`` it also reads the session connection's HTTP/2 frames and
    timestamps each DiffCopy call's packets (STAT, REQ, DATA, FIN) as they
    pass, for any client."""

    def __init__(self, path: str, target: str, *, trace: bool = True):
        self.path, self.target, self.trace = path, target, trace
        self.conns: list[ConnTrace] = []
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(path)
        self._srv.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def up(self) -> int:
        return sum(c.nbytes["up"] for c in self.conns)

    def reset(self) -> None:
        with self._lock:
            self.conns = []

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            t = time.monotonic()
            d = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            d.connect(self.target)
            conn = ConnTrace(t)
            with self._lock:
                self.conns.append(conn)
            threading.Thread(target=self._pump, args=(c, d, conn, "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(d, c, conn, "down"), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, conn: ConnTrace, direction: str) -> None:
        head = bytearray()
        reader: _H2Reader | None = None
        try:
            while True:
                data = a.recv(1 << 17)
                t = time.monotonic()
                if not data:
                    break
                if not conn.nbytes[direction]:
                    conn.t_first[direction] = t
                conn.t_last[direction] = t
                conn.nbytes[direction] += len(data)
                if reader is not None:
                    # parse first: the client may answer a call before this
                    # thread would have registered it
                    reader.feed(data, t)
                    b.sendall(data)
                    continue
                if self.trace and len(head) < 65536:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end >= 0:
                        first_line = bytes(head[:head.find(b"\r\n")]).decode("latin-1")
                        if direction == "up" and not conn.request:
                            conn.request = first_line
                        rest = bytes(head[end + 4:])
                        parts = conn.request.split(" ")
                        is_session = len(parts) > 1 and parts[1].split("?")[0].endswith("/session")
                        if is_session and (direction == "down" and " 101 " in first_line + " " or direction == "up"):
                            if direction == "down":
                                conn.t_upgraded = t
                            reader = _H2Reader(conn, direction)
                            if rest:
                                reader.feed(rest, t)
                            b.sendall(data)
                            continue
                        head = bytearray(b"x" * 65536)  # not a session: stop looking
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def timeline(self, t0: float) -> dict[str, Any]:
        """What passed, relative to ``t0`` (the client's start)."""
        out: dict[str, Any] = {"connections": []}
        for c in self.conns:
            item: dict[str, Any] = {
                "request": c.request[:80], "accept": round(c.t_accept - t0, 4),
                "bytes up": c.nbytes["up"], "bytes down": c.nbytes["down"],
                "last up": round(c.t_last["up"] - t0, 4), "last down": round(c.t_last["down"] - t0, 4),
            }
            if c.t_upgraded is not None:
                item["upgraded"] = round(c.t_upgraded - t0, 4)
                events = list(c.events)
                item["diffcopy"] = [{**s.summary(t0), "split": h2flow.split_upload(events, s.sid, s.t_call)}
                                    for s in c.streams.values()]
            out["connections"].append(item)
        return out

    def close(self) -> None:
        self._srv.close()


# --------------------------------------------------------------------------
# the three clients
# --------------------------------------------------------------------------

REPO = os.path.dirname(HERE)


#: The daemon's directory (tests/dockerd.py's ``/tmp/ctxd-*``): its
#: processes (dockerd, containerd, shims) name it on their command lines.
DAEMON_DIR = ""
_HZ = os.sysconf("SC_CLK_TCK")


def _daemon_pids() -> list[int]:
    """The daemon's processes alive now: every one naming its directory (the harness's own search)."""
    return harness._procs_naming(DAEMON_DIR) if DAEMON_DIR else []


def daemon_cpu() -> float:
    """CPU seconds (user + system) used so far by the daemon's processes that
    are alive now (a build's CPU = the difference around it)."""
    return sum(_proc_ticks(p) for p in _daemon_pids()) / _HZ


def _proc_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


class CpuSampler:
    """CPU seconds of the client's process tree and of the daemon's processes,
    sampled every ``interval`` seconds while a traced build runs, so that the
    CPU each side used inside one DiffCopy window can be read off
    (:meth:`between`; the kernel counts in 1/CLK_TCK steps, 10 ms here)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # t, client, daemon
        self._pid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, pid: int) -> None:
        daemon = _daemon_pids()
        self._pid, self.samples = pid, []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(daemon,), daemon=True)
        self._thread.start()

    def _loop(self, daemon: list[int]) -> None:
        while not self._stop.is_set():
            client = sum(_proc_ticks(p) for p in _descendants(self._pid))
            self.samples.append((time.monotonic(), client / _HZ, sum(_proc_ticks(p) for p in daemon) / _HZ))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, t_a: float, t_b: float) -> dict[str, float]:
        """CPU used from the last sample at or before ``t_a`` to the first at or after ``t_b``."""
        before = [s for s in self.samples if s[0] <= t_a]
        after = [s for s in self.samples if s[0] >= t_b]
        if not before or not after:
            return {}
        a, b = before[-1], after[0]
        return {"client_cpu": round(b[1] - a[1], 3), "daemon_cpu": round(b[2] - a[2], 3),
                "cpu_window": round(b[0] - a[0], 3)}


#: Set while a traced round runs: the CPU of both sides, sampled.
SAMPLER: CpuSampler | None = None

#: The last _run's CPU: the client process (children's rusage) and the daemon's.
LAST_CPU: dict[str, float] = {}


def _run(argv: list[str], env: dict[str, str], what: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    before, d_before = os.times(), daemon_cpu()
    t0 = time.monotonic()
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        if SAMPLER is not None:
            SAMPLER.watch(p.pid)
        try:
            out, err = p.communicate(timeout=1200)
        except subprocess.TimeoutExpired:
            p.kill()  # as subprocess.run(timeout=) does: leaving the with-block would wait for it
            raise
        finally:
            if SAMPLER is not None:
                SAMPLER.stop()
    proc = subprocess.CompletedProcess(argv, p.returncode, out, err)
    took = time.monotonic() - t0
    after, d_after = os.times(), daemon_cpu()
    LAST_CPU.update(client_cpu=round(after.children_user + after.children_system
                                     - before.children_user - before.children_system, 3),
                    daemon_cpu=round(d_after - d_before, 3))
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return t0, took, proc


def _ctxpack(sock: str, root: str, cfg: str, cache: str, *extra: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": cfg, "DOCKER_CONFIG": cfg, "CTXPACK_CACHE_DIR": cache,
           "DOCKER_HOST": f"unix://{sock}", "PYTHONPATH": REPO}
    argv = [sys.executable, "-m", "ctxpack.cli", "build", "--builder", "buildkit", "--progress", "json", "--network", "none",
            "--no-cache",
            "-f", os.path.join(root, DOCKERFILE), *extra, root]
    t0, took, proc = _run(argv, env, "ctxpack build " + " ".join(extra))
    out: dict[str, Any] = {"t0": t0, "seconds": took, **LAST_CPU}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("id") == "ctxpack.upload":
            aux = msg["aux"]
            out["upload_seconds"] = aux.get("seconds")
            sess = aux.get("session") or {}
            out["files_requested"] = sess.get("files_requested", aux.get("files"))
            out["listing_from"] = sess.get("listing_from")
            out["data_bytes"] = sess.get("data_bytes", aux.get("bytes"))
    return out


def ctxpack_session(sock: str, root: str, cfg: str, cache: str) -> dict[str, Any]:
    return _ctxpack(sock, root, cfg, cache)


def ctxpack_tar(sock: str, root: str, cfg: str, cache: str) -> dict[str, Any]:
    return _ctxpack(sock, root, cfg, cache, "--no-session")


def docker_cli(sock: str, root: str, cfg: str, cache: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": cfg, "DOCKER_CONFIG": cfg, "DOCKER_BUILDKIT": "1",
           "DOCKER_HOST": f"unix://{sock}"}
    argv = [CLI, "build", "-q", "--network", "none", "--no-cache", "-f", os.path.join(root, DOCKERFILE), root]
    t0, took, _ = _run(argv, env, "docker 20.10 build")
    return {"t0": t0, "seconds": took, **LAST_CPU}


CLIENTS = {"ctxpack session": ctxpack_session, "ctxpack tar": ctxpack_tar, "docker 20.10 session": docker_cli}
SESSION_CLIENTS = ("ctxpack session", "docker 20.10 session")


def floor_lines(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """The floor row: bench/floor_session.py's rebuild upload after each of
    ctxpack's rebuilds, over ctxpack's first upload of the same round."""
    pairs = [(a["upload_seconds"], b["floor"]["upload_seconds"], b["upload_seconds"])
             for a, b in zip(results["ctxpack session"]["first"], results["ctxpack session"]["rebuild"])
             if a.get("upload_seconds") and b.get("floor")]
    if not pairs:
        return []
    fl = benchutil.summary([p[1] for p in pairs])["median"]
    own = benchutil.summary([p[2] for p in pairs])["median"]
    ratios = [p[1] / p[0] for p in pairs]
    return [f"The floor (bench/floor_session.py: a rebuild whose whole listing was walked and framed before the "
            f"session opened, so the daemon's own intake of it is all that is left): upload {fl:.3f} s median, "
            f"against ctxpack's {own:.3f} s; over ctxpack's first upload of the same round "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f" (median **{benchutil.summary(ratios)['median']:.3f}x**).  No client that must list this context "
            "to this daemon can do the rebuild's upload in less."]


def change_one_file(root: str, n: int) -> None:
    with open(os.path.join(root, CHANGED), "w") as f:
        f.write(f"change {n} {time.time_ns()}\n")


def forget_listings(cache: str) -> None:
    """A first build keeps nothing from an earlier build, on either side: the
    daemon gets a fresh session key (a fresh docker config), and ctxpack
    finds no listing kept by the build before (its index stays warm, as a
    user's is).  Otherwise every round's "first" build after the first would
    be served from the previous round's kept listing."""
    shutil.rmtree(os.path.join(cache, "session-listings"), ignore_errors=True)


def one_pair(name: str, sock: str, root: str, work: str, cache: str, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = tempfile.mkdtemp(prefix="cfg-", dir=work)  # fresh node id: nothing to diff against
    forget_listings(cache)
    change_one_file(root, n * 3)
    first = CLIENTS[name](sock, root, cfg, cache)
    change_one_file(root, n * 3 + 1)
    second = CLIENTS[name](sock, root, cfg, cache)
    if name == "ctxpack session":
        # The floor (bench/floor_session.py): one more rebuild, same docker
        # config (same shared key), its listing made before the session opens.
        change_one_file(root, n * 3 + 2)
        second["floor"] = floor_session(sock, root, cfg, cache)
    return first, second


def floor_session(sock: str, root: str, cfg: str, cache: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": cfg, "DOCKER_CONFIG": cfg, "CTXPACK_CACHE_DIR": cache,
           "PYTHONPATH": REPO}
    _, took, proc = _run([sys.executable, os.path.join(HERE, "floor_session.py"), sock, root,
                          os.path.join(root, DOCKERFILE)], env, "floor_session.py")
    aux = json.loads(proc.stdout.strip().splitlines()[-1])["aux"]
    return {"seconds": took, "upload_seconds": aux["seconds"], "files_requested": aux["files_requested"]}


def transfer(timeline: dict[str, Any]) -> dict[str, Any]:
    """The whole-context DiffCopy call of one traced build: when the daemon
    called, when the listing ended (the empty STAT passed), the first REQ,
    the receiver's FIN (the upload's end), relative to the client's start;
    and where the build and the client's first connection were."""
    out: dict[str, Any] = {}
    conns = timeline["connections"]
    if conns:
        out["first_connection"] = min(c["accept"] for c in conns)
    plain = [c for c in conns if "upgraded" not in c]
    if plain:  # the build's response is the last thing the daemon sends
        out["build_end"] = max(c["last down"] for c in plain)
    for c in conns:
        for s in c.get("diffcopy", []):
            if s["dir_name"] == "context" and not s["followpaths"]:
                out.update(call=s["call"], end_listing=s["end_listing"], first_req=s.get("first down:req"),
                           fin=s.get("first down:fin"), stats=s.get("n up:stat", 0),
                           stat_bytes=s.get("bytes up:stat", 0), reqs=s.get("n down:req", 0),
                           data_bytes=s.get("bytes up:data", 0), split=s.get("split") or {})
                if out["fin"] is not None and out["call"] is not None:
                    out["seconds"] = round(out["fin"] - out["call"], 4)
    return out


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


SECTION = "## Session builds: ctxpack session vs ctxpack tar vs docker CLI 20.10 (bench/bench_session.py)"


def write_section(path: str, text: str) -> None:
    """Replace this bench's section of ``path`` (the rest of the file, e.g.
    bench_session_stack.py's section, stays)."""
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = "# Session benchmarks\n\n"
    i = old.find(SECTION)
    if i < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        j = min((k for k in (old.find("\n## ", i + len(SECTION)), old.find("\n# ", i + len(SECTION))) if k >= 0),
                default=-1)  # the next heading of either level ends it
        new = old[:i] + text + ("\n" + old[j + 1:] if j >= 0 else "")
    with open(path, "w") as f:
        f.write(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench"))
    ap.add_argument("--small", action="store_true", help="the 10k-file tree")
    ap.add_argument("--files", type=int, help="a tree of this many files instead (smoke runs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write this bench's section of the markdown file here (and .json beside it)")
    args = ap.parse_args(argv)

    benchutil.compile_ctxpack()
    name = f"tree-session-{args.files}" if args.files else ("tree-session-small" if args.small else "tree-session")
    tree = os.path.join(args.root, name)
    benchutil.log(f"tree {tree}")
    gen_args = [tree, "--ignore", "typical", "--no-big"] + (["--small"] if args.small else [])
    if args.files:
        gen_args += ["--files", str(args.files)]
    if gen_tree.main(gen_args) != 0:
        return 1
    with open(os.path.join(tree, DOCKERFILE), "w") as f:
        f.write(DOCKERFILE_TEXT)
    os.makedirs(os.path.dirname(os.path.join(tree, CHANGED)), exist_ok=True)
    change_one_file(tree, 0)

    from ctxpack import open_context
    from ctxpack.walker import list_entries

    ctx = open_context(tree, dockerfile=os.path.join(tree, DOCKERFILE), dialect="buildkit")
    entries = list(list_entries(ctx))
    ctx_bytes = sum(e.stat.st_size for e in entries if e.kind == "file" and e.stat is not None)
    benchutil.log(f"context: {len(entries)} entries, {fmt_bytes(ctx_bytes)} of file content")

    benchutil.tmpfs_daemon()
    d = harness.Dockerd.start()
    global DAEMON_DIR
    DAEMON_DIR = os.path.dirname(d.socket)
    work = tempfile.mkdtemp(prefix="bench-session-")
    cache = tempfile.mkdtemp(prefix="cache-", dir=work)  # ctxpack's index, kept across builds as a user's is
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"first": [], "rebuild": []} for k in CLIENTS}
    traced: dict[str, dict[str, Any]] = {}
    try:
        # warm-up (not counted): the daemon's first build loads the frontend
        docker_cli(d.socket, tree, tempfile.mkdtemp(prefix="cfg-", dir=work), cache)
        proxy = TracingProxy(os.path.join(work, "p.sock"), d.socket)
        global SAMPLER
        SAMPLER = CpuSampler()
        # round 0: bytes and the wire timeline, through the relay
        for name in CLIENTS:
            cfg = tempfile.mkdtemp(prefix="cfg-", dir=work)
            traced[name] = {}
            forget_listings(cache)
            for kind, n in (("first", 1000), ("rebuild", 1001)):
                proxy.reset()
                change_one_file(tree, n)
                r = CLIENTS[name](proxy.path, tree, cfg, cache)
                time.sleep(0.2)  # the relay's last bytes
                tl = proxy.timeline(r["t0"])
                tr = transfer(tl)
                if tr.get("call") is not None and tr.get("fin") is not None:
                    tr["cpu"] = SAMPLER.between(r["t0"] + tr["call"], r["t0"] + tr["fin"])
                traced[name][kind] = {"seconds": r["seconds"], "bytes_up": proxy.up, "transfer": tr,
                                      "timeline": tl, **{k: v for k, v in r.items() if k not in ("t0", "seconds")}}
                benchutil.log(f"traced {name} {kind}: {r['seconds']:.2f}s, {proxy.up} bytes up, "
                              f"{traced[name][kind]['transfer']}")
        proxy.close()
        SAMPLER = None
        for rnd in range(args.rounds):
            # rotate the order so that drift on the shared machine spreads evenly
            names = list(CLIENTS)
            names = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in names:
                a, b = one_pair(name, d.socket, tree, work, cache, rnd + 1)
                results[name]["first"].append(a)
                results[name]["rebuild"].append(b)
                benchutil.log(f"round {rnd + 1} {name}: first {a['seconds']:.2f}s (cpu client {a['client_cpu']:.2f}s "
                              f"daemon {a['daemon_cpu']:.2f}s) rebuild {b['seconds']:.2f}s (cpu client "
                              f"{b['client_cpu']:.2f}s daemon {b['daemon_cpu']:.2f}s)")
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, kind: str, key: str = "seconds") -> float:
        xs = [r[key] for r in results[name][kind] if r.get(key) is not None]
        return benchutil.summary(xs)["median"] if xs else float("nan")

    cli = "docker 20.10 session"
    cli_first, cli_re = med(cli, "first"), med(cli, "rebuild")
    when = time.strftime("%H:%M UTC", time.gmtime())
    cmd = "python bench/bench_session.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        SECTION,
        "",
        f"Run: `{cmd}` at {when} (raw numbers in `session.json` beside --out).",
        "",
        f"Tree: bench/gen_tree.py {'--small ' if args.small else ''}--no-big --ignore typical: "
        f"{len(entries)} entries in the BuildKit context, {fmt_bytes(ctx_bytes)} of file content. "
        f"Dockerfile: `{DOCKERFILE_TEXT.strip().splitlines()[1]}` (the whole context), `--no-cache`, "
        "`networkmode=none`. Rebuild: one file changed. Daemon: Debian dockerd 20.10.24 (tests/dockerd.py, vfs, " + benchutil.daemon_storage() + "). "
        "Clients, each a process as a user runs it: `ctxpack build --progress json` (session; the snapshot for "
        "`ctxpack diff` recorded, as by default), `ctxpack build --no-session` (tar), `DOCKER_BUILDKIT=1 "
        "/usr/bin/docker build -q`; a fresh docker config per first build (a fresh session shared key) and no listing kept by ctxpack from an "
        "earlier build (ctxpack's index stays warm, as a user's is).",
        f"Machine: {benchutil.cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average at the end {' '.join(benchutil.loadavg())}. "
        f"Median of {args.rounds} rounds straight to the daemon; bytes and transfer times from one more round "
        "through a relay that reads the session's HTTP/2 frames.",
        "",
        "| client | first build | vs CLI | rebuild | vs CLI | bytes sent, first | bytes sent, rebuild |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        f, r = med(name, "first"), med(name, "rebuild")
        b = traced.get(name, {})
        lines.append(f"| {name} | {f:.2f} s | {f / cli_first:.2f}x | {r:.2f} s | {r / cli_re:.2f}x | "
                     f"{fmt_bytes(b.get('first', {}).get('bytes_up', 0))} | "
                     f"{fmt_bytes(b.get('rebuild', {}).get('bytes_up', 0))} |")
    lines += [
        "",
        "CPU seconds per build (medians of the direct rounds; user + system): the client process (with its "
        "children), and the daemon's processes (dockerd, containerd, shims: everything naming the daemon's "
        f"directory). {os.cpu_count()} CPUs: a build cannot take less wall time than (client + daemon) / "
        f"{os.cpu_count()} when both need the CPU at once.",
        "",
        "| client | first: client CPU | daemon CPU | (sum) / CPUs | wall | rebuild: client CPU | daemon CPU | "
        "(sum) / CPUs | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ncpu = os.cpu_count() or 1
    for name in CLIENTS:
        row = [name]
        for kind in ("first", "rebuild"):
            c, dm = med(name, kind, "client_cpu"), med(name, kind, "daemon_cpu")
            row += [f"{c:.2f} s", f"{dm:.2f} s", f"{(c + dm) / ncpu:.2f} s", f"{med(name, kind):.2f} s"]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The context's transfer on the wire (the relayed round), seconds from the client process's start: its "
        "first request to the daemon (start-up), the daemon's DiffCopy call for the whole context, the empty STAT "
        "that ends the listing, the first REQ, the receiver's FIN, the build's last byte; *transfer* = call to FIN "
        "(the upload; for the docker CLI this is its only measure of it).",
        "",
        "| client | build | first request | DiffCopy called | listing ended | first REQ | FIN | build ended | "
        "transfer | STATs | REQs | second / first transfer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(v: Any) -> str:
        return "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))

    for name in SESSION_CLIENTS:
        tr = traced.get(name, {})
        first_s = tr.get("first", {}).get("transfer", {}).get("seconds")
        for kind in ("first", "rebuild"):
            t = tr.get(kind, {}).get("transfer", {})
            ratio = ""
            if kind == "rebuild" and first_s and t.get("seconds") is not None:
                ratio = f"{t['seconds'] / first_s:.3f}x"
            lines.append(f"| {name} | {kind} | {cell(t.get('first_connection'))} | {cell(t.get('call'))} | "
                         f"{cell(t.get('end_listing'))} | {cell(t.get('first_req'))} | {cell(t.get('fin'))} | "
                         f"{cell(t.get('build_end'))} | {cell(t.get('seconds'))} s | "
                         f"{cell(t.get('stats'))} | {cell(t.get('reqs'))} | {ratio} |")
    lines += [
        "",
        "Who each upload waited on (the relayed round; bench/h2flow.py): from the DiffCopy call to the FIN, the "
        "*sender's* time (it had something to send, the listing or a requested file, and the daemon's HTTP/2 "
        "flow-control windows were open) and the *daemon's* (its windows shut, or everything asked for was sent "
        "and it had not asked for more or said FIN); *shut* = how often the windows shut on a sender with more "
        "to send; CPU used by each side in the same window (sampled every 5 ms; the kernel counts in 10 ms "
        "steps).  A diagnostic: the relay's own delays fall on both sides; the floor is measured straight to "
        "the daemon (below).",
        "",
        "| client | build | transfer | sender's | daemon's | shut | client CPU | daemon CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SESSION_CLIENTS:
        for kind in ("first", "rebuild"):
            t = traced.get(name, {}).get(kind, {}).get("transfer", {})
            sp, cpu = t.get("split") or {}, t.get("cpu") or {}
            lines.append(f"| {name} | {kind} | {cell(t.get('seconds'))} s | {cell(sp.get('sender_seconds'))} s | "
                         f"{cell(sp.get('daemon_seconds'))} s | {cell(sp.get('window_shut_spells'))} | "
                         f"{cell(cpu.get('client_cpu'))} s | {cell(cpu.get('daemon_cpu'))} s |")
    lines += ["", "(The relay is a Python pump between client and daemon: it slows every upload, the "
              "rebuild's most, so the ratios above are not the direct rounds'.)"]
    lines += [
        "",
        "ctxpack session's own counters (medians of the direct rounds): first build "
        f"{med('ctxpack session', 'first', 'files_requested'):.0f} files requested, "
        f"{fmt_bytes(med('ctxpack session', 'first', 'data_bytes'))} of content, upload "
        f"{med('ctxpack session', 'first', 'upload_seconds'):.2f} s; rebuild "
        f"{med('ctxpack session', 'rebuild', 'files_requested'):.0f} file(s), "
        f"{med('ctxpack session', 'rebuild', 'data_bytes'):.0f} B of content, upload "
        f"{med('ctxpack session', 'rebuild', 'upload_seconds'):.2f} s "
        f"({med('ctxpack session', 'rebuild', 'upload_seconds') / max(1e-9, med('ctxpack session', 'first', 'upload_seconds')):.3f}x the first upload).",
        *floor_lines(results),
        "Where the listing came from (kept listing: ctxpack/engine/session/listcache.py), first builds: "
        + ", ".join(str(r.get("listing_from")) for r in results["ctxpack session"]["first"])
        + "; rebuilds: " + ", ".join(str(r.get("listing_from")) for r in results["ctxpack session"]["rebuild"])
        + ".  Per-round second/first upload (ctxpack's counters): "
        + ", ".join(f"{b['upload_seconds'] / a['upload_seconds']:.3f}"
                    for a, b in zip(results["ctxpack session"]["first"], results["ctxpack session"]["rebuild"])
                    if a.get("upload_seconds") and b.get("upload_seconds") is not None) + ".",
        "",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_section(args.out, text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"results": results, "traced": traced, "entries": len(entries), "content_bytes": ctx_bytes},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
