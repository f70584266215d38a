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
counters (files requested, content bytes, upload seconds) are reported too.

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

CLI = "/usr/bin/docker"
DOCKERFILE = "Dockerfile.session"
DOCKERFILE_TEXT = "FROM bb:latest\nRUN --mount=type=bind,target=/ctx ls /ctx > /dev/null\n"
CHANGED = "src/bench-session-changed.txt"


# --------------------------------------------------------------------------
# a byte-counting proxy
# --------------------------------------------------------------------------


class CountingProxy:
    """Unix socket ``path`` → dockerd's socket; counts client → daemon bytes."""

    def __init__(self, path: str, target: str):
        self.path, self.target = path, target
        self.up = 0
        self.down = 0
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(path)
        self._srv.listen(64)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.up = self.down = 0

    def _accept(self) -> None:
        while not self._stop:
            try:
                c, _ = self._srv.accept()
            except OSError:
                return
            d = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            d.connect(self.target)
            threading.Thread(target=self._pump, args=(c, d, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(d, c, False), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket, up: bool) -> None:
        try:
            while True:
                data = a.recv(1 << 17)
                if not data:
                    break
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            try:
                b.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self._srv.close()


# --------------------------------------------------------------------------
# the three clients
# --------------------------------------------------------------------------


def ctxpack_session(sock: str, root: str, cfg: str) -> dict[str, Any]:
    from ctxpack import open_context
    from ctxpack.engine.session import Session, session_build

    os.environ["DOCKER_CONFIG"] = cfg  # the session's node id (shared key) lives there
    t0 = time.monotonic()
    ctx = open_context(root, dockerfile=os.path.join(root, DOCKERFILE), dialect="buildkit")
    sess = Session(ctx, config_dir=cfg)
    r = session_build(ctx, sock, session=sess, network_mode="none", no_cache=True, timeout=1200)
    took = time.monotonic() - t0
    if not r.ok:
        raise SystemExit(f"ctxpack session build failed: {r.error}")
    st = r.stats
    return {"seconds": took, "files_requested": st.files_requested, "data_bytes": st.data_bytes,
            "session_bytes_out": st.bytes_out, "upload_seconds": st.upload_seconds}


def ctxpack_tar(sock: str, root: str, cfg: str) -> dict[str, Any]:
    from ctxpack import open_context
    from ctxpack.tar.writer import PackOptions, iter_tar

    t0 = time.monotonic()
    ctx = open_context(root, dockerfile=os.path.join(root, DOCKERFILE), dialect="buildkit")
    client = harness.EngineClient(sock)
    r = client.build(iter_tar(ctx, PackOptions()), dockerfile=DOCKERFILE, version="2",
                     extra_query={"networkmode": "none", "nocache": "1"}, timeout=1200)
    took = time.monotonic() - t0
    if not r.ok:
        raise SystemExit(f"ctxpack tar build failed: {r.describe()}")
    return {"seconds": took}


def docker_cli(sock: str, root: str, cfg: str) -> dict[str, Any]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": cfg, "DOCKER_CONFIG": cfg, "DOCKER_BUILDKIT": "1",
           "DOCKER_HOST": f"unix://{sock}"}
    t0 = time.monotonic()
    proc = subprocess.run([CLI, "build", "-q", "--network", "none", "--no-cache", "-f",
                           os.path.join(root, DOCKERFILE), root], capture_output=True, text=True, timeout=1200, env=env)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"docker 20.10 build failed: {proc.stderr[-2000:]}")
    return {"seconds": took}


CLIENTS = {"ctxpack session": ctxpack_session, "ctxpack tar": ctxpack_tar, "docker 20.10 session": docker_cli}


def change_one_file(root: str, n: int) -> None:
    with open(os.path.join(root, CHANGED), "w") as f:
        f.write(f"change {n} {time.time_ns()}\n")


def one_pair(name: str, sock: str, root: str, work: str, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = tempfile.mkdtemp(prefix="cfg-", dir=work)  # fresh node id: nothing to diff against
    change_one_file(root, n * 2)
    first = CLIENTS[name](sock, root, cfg)
    change_one_file(root, n * 2 + 1)
    second = CLIENTS[name](sock, root, cfg)
    return first, second


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench"))
    ap.add_argument("--small", action="store_true", help="the 10k-file tree")
    ap.add_argument("--files", type=int, help="a tree of this many files instead (smoke runs)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the markdown table here (and .json beside it)")
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

    d = harness.Dockerd.start()
    work = tempfile.mkdtemp(prefix="bench-session-")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {k: {"first": [], "rebuild": []} for k in CLIENTS}
    bytes_sent: dict[str, dict[str, int]] = {}
    try:
        # warm-up (not counted): the daemon's first build loads the frontend
        docker_cli(d.socket, tree, tempfile.mkdtemp(prefix="cfg-", dir=work))
        proxy = CountingProxy(os.path.join(work, "p.sock"), d.socket)
        # round 0: bytes through the proxy
        for name in CLIENTS:
            cfg = tempfile.mkdtemp(prefix="cfg-", dir=work)
            proxy.reset()
            change_one_file(tree, 1000)
            CLIENTS[name](proxy.path, tree, cfg)
            first = proxy.up
            proxy.reset()
            change_one_file(tree, 1001)
            r2 = CLIENTS[name](proxy.path, tree, cfg)
            bytes_sent[name] = {"first": first, "rebuild": proxy.up}
            if name == "ctxpack session":
                bytes_sent[name]["rebuild_files_requested"] = r2["files_requested"]
            benchutil.log(f"bytes {name}: {bytes_sent[name]}")
        proxy.close()
        for rnd in range(args.rounds):
            # rotate the order so that drift on the shared machine spreads evenly
            names = list(CLIENTS)
            names = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in names:
                a, b = one_pair(name, d.socket, tree, work, rnd + 1)
                results[name]["first"].append(a)
                results[name]["rebuild"].append(b)
                benchutil.log(f"round {rnd + 1} {name}: first {a['seconds']:.2f}s rebuild {b['seconds']:.2f}s")
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, kind: str, key: str = "seconds") -> float:
        return benchutil.summary([r[key] for r in results[name][kind]])["median"]

    cli_first, cli_re = med("docker 20.10 session", "first"), med("docker 20.10 session", "rebuild")
    lines = [
        "# Session builds: ctxpack session vs ctxpack tar vs docker CLI 20.10",
        "",
        f"Tree: bench/gen_tree.py {'--small ' if args.small else ''}--no-big --ignore typical: "
        f"{len(entries)} entries in the BuildKit context, {fmt_bytes(ctx_bytes)} of file content. "
        f"Dockerfile: `{DOCKERFILE_TEXT.strip().splitlines()[1]}` (the whole context), `--no-cache`, "
        "`networkmode=none`. Rebuild: one file changed. Daemon: Debian dockerd 20.10.24 (tests/dockerd.py, vfs).",
        f"Machine: {benchutil.cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"load average at the end {' '.join(benchutil.loadavg())} (the machine is shared). "
        f"Median of {args.rounds} rounds; bytes from one proxied round.",
        "",
        "| client | first build | vs CLI | rebuild | vs CLI | bytes sent, first | bytes sent, rebuild |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CLIENTS:
        f, r = med(name, "first"), med(name, "rebuild")
        b = bytes_sent.get(name, {})
        lines.append(f"| {name} | {f:.2f} s | {f / cli_first:.2f}x | {r:.2f} s | {r / cli_re:.2f}x | "
                     f"{fmt_bytes(b.get('first', 0))} | {fmt_bytes(b.get('rebuild', 0))} |")
    s_first = results["ctxpack session"]["first"]
    s_re = results["ctxpack session"]["rebuild"]
    lines += [
        "",
        "ctxpack session's own counters (medians): first build "
        f"{med('ctxpack session', 'first', 'files_requested'):.0f} files requested, "
        f"{fmt_bytes(med('ctxpack session', 'first', 'data_bytes'))} of content, upload "
        f"{med('ctxpack session', 'first', 'upload_seconds'):.2f} s; rebuild "
        f"{med('ctxpack session', 'rebuild', 'files_requested'):.0f} file(s), "
        f"{med('ctxpack session', 'rebuild', 'data_bytes'):.0f} B of content, upload "
        f"{med('ctxpack session', 'rebuild', 'upload_seconds'):.2f} s "
        f"({med('ctxpack session', 'rebuild', 'upload_seconds') / max(1e-9, med('ctxpack session', 'first', 'upload_seconds')):.3f}x the first upload).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"results": results, "bytes": bytes_sent, "entries": len(entries), "content_bytes": ctx_bytes,
                       "session_first": s_first, "session_rebuild": s_re}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
