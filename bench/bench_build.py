"""``ctxpack build`` vs the docker CLI (classic) vs docker-py, to one engine.

    python bench/bench_build.py [--tree DIR] [--small-tree DIR] [--reps 3] [--out bench/results/build.md]

What it does (about 5-10 minutes; run it on a quiet machine):

* starts a private dockerd with tests/dockerd.py's harness (Debian's 20.10,
  vfs) and an sshd on 127.0.0.1 with tests/sshd.py whose sessions reach
  that dockerd through a byte-counting relay (so "bytes on the wire" and
  upload throughput are measured where the engine reads them);
* the main tree is bench/gen_tree.py's 100k-file tree with the ``typical``
  ``.dockerignore`` (its Dockerfile: ``FROM scratch``, ``COPY . /app``);
* **time to image** (spawn to exit, image ID printed) of
  ``ctxpack build --builder classic -q`` (with and without the ``ctxpack
  diff`` snapshot), ``DOCKER_BUILDKIT=0 docker build -q`` (the 28.x client
  on PATH) and docker-py's ``client.images.build(path=...)`` (a
  subprocess, interpreter start included), over the unix socket and over
  ``ssh://``: one warm-up each (it fills the build cache, so the COPY step
  is a cache hit in the timed rounds and the time is the context's: walk,
  tar, upload, the engine's unpacking and checksum), then ``--reps``
  interleaved rounds, medians;
* **upload throughput and bytes on the wire**: every run goes through the
  relay (unix socket: the tools connect to the relay; ssh: the remote
  ``dial-stdio`` connects to it): bytes and first-to-last-byte time of the
  client's direction of the ``/build`` connection;
* **compression over a throttled link**: the small tree (``gen_tree.py
  --small``, typical ignore) over ssh through bench/throttle.py as the ssh
  ``ProxyCommand`` at two rates, ``--compress none`` vs ``gzip`` (levels 1
  and 6); zstd cannot be sent to this 20.10 engine (it does not know
  zstd), so its line is an *estimate* from ``ctxpack pack --compress zstd``
  (compression time and output size) at the same rate, marked as such.

Standard library + docker-py; nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import benchutil  # noqa: E402
import dockerd as harness  # noqa: E402
import sshd as sshd_helper  # noqa: E402


# --------------------------------------------------------------------------
# a byte-counting relay in front of the engine's socket
# --------------------------------------------------------------------------


class Relay:
    """unix socket → engine socket; records, per connection, the bytes the
    client sent and the first/last time it sent any."""

    def __init__(self, path: str, target: str):
        self.path = path
        self.target = target
        self.conns: list[dict[str, float]] = []
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self) -> None:
        with self.lock:
            self.conns = []

    def biggest(self) -> dict[str, float]:
        with self.lock:
            return max(self.conns, key=lambda c: c["bytes"]) if self.conns else {"bytes": 0, "first": 0, "last": 0}

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.socket(socket.AF_UNIX)
            u.connect(self.target)
            rec = {"bytes": 0, "first": 0.0, "last": 0.0}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._pump, args=(c, u, rec), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, None), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rec: dict[str, float] | None) -> None:
        buf = bytearray(1 << 20)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                if rec is not None:
                    now = time.monotonic()
                    if not rec["first"]:
                        rec["first"] = now
                    rec["last"] = now
                    rec["bytes"] += n
                dst.sendall(memoryview(buf)[:n])
        except OSError:
            pass
        for s in (dst,):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass


# --------------------------------------------------------------------------
# the tools
# --------------------------------------------------------------------------

# docker-py over ssh: its paramiko transport (its use_ssh_client shell-out
# fails here with RemoteDisconnected on the first request), with the test
# key from an ssh-agent the benchmark starts, to root@127.0.0.1:PORT
# (the test sshd's fresh host key accepted).
DOCKERPY = """
import sys, docker, paramiko
# the benchmark's own sshd on 127.0.0.1 has a fresh host key: accept it
paramiko.client.RejectPolicy.missing_host_key = lambda *a: None
url, path = sys.argv[1], sys.argv[2]
c = docker.DockerClient(base_url=url, timeout=600)
img, _ = c.images.build(path=path, quiet=True, rm=True)
print(img.id)
"""


def commands(url: str, tree: str, dockerpy_url: str | None = None) -> dict[str, list[str]]:
    exe = benchutil.ctxpack_exe()
    return {
        "ctxpack build": [*exe, "build", tree, "-H", url, "--builder", "classic", "-q"],
        "ctxpack build --no-snapshot": [*exe, "build", tree, "-H", url, "--builder", "classic", "-q", "--no-snapshot"],
        "docker build (DOCKER_BUILDKIT=0)": ["docker", "-H", url, "build", "-q", tree],
        "docker-py images.build": [sys.executable, "-c", DOCKERPY, dockerpy_url or url, tree],
    }


def start_agent(directory: str, key: str) -> tuple[subprocess.Popen[bytes], str]:
    """An ssh-agent holding ``key`` (for docker-py's paramiko transport)."""
    sock = os.path.join(directory, "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["ssh-add", key], env=dict(os.environ, SSH_AUTH_SOCK=sock), check=True, capture_output=True)
    return agent, sock


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    took = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr[-1500:]}")
    return took, p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


def time_tools(cmds: dict[str, list[str]], env: dict[str, str], reps: int, relay: Relay) -> tuple[dict, dict]:
    """Warm-up, then ``reps`` interleaved rounds, every run through the
    relay: (times, wire figures), per tool."""
    out: dict[str, dict] = {}
    wire: dict[str, dict] = {}
    for name, cmd in cmds.items():
        benchutil.log(f"  warm-up: {name}")
        _, image = run(cmd, env)
        out[name] = {"runs": [], "image": image}
        wire[name] = {"bytes": [], "seconds": []}
    names = list(cmds)
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            relay.reset()
            took, _ = run(cmds[name], env)
            c = relay.biggest()
            out[name]["runs"].append(took)
            wire[name]["bytes"].append(c["bytes"])
            wire[name]["seconds"].append(max(c["last"] - c["first"], 1e-9))
            benchutil.log(f"  round {r + 1}: {name} {took:.2f}s, {c['bytes']:,} bytes in {c['last'] - c['first']:.2f}s")
    for name in names:
        out[name]["summary"] = benchutil.summary(out[name]["runs"])
        b, sec = statistics.median(wire[name]["bytes"]), statistics.median(wire[name]["seconds"])
        wire[name].update(bytes=b, seconds=sec, rate=b / sec)
    return out, wire


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def table(title: str, timed: dict[str, dict], wire: dict[str, dict], ref: str) -> list[str]:
    lines = [f"### {title}", "", "| tool | time to image, median (min–max) | ÷ docker CLI | bytes on the wire | upload throughput |",
             "|---|---:|---:|---:|---:|"]
    base = timed[ref]["summary"]["median"]
    for name, t in timed.items():
        s = t["summary"]
        w = wire.get(name, {})
        lines.append(f"| {name} | {s['median']:.2f} s ({s['min']:.2f}–{s['max']:.2f}) | {s['median'] / base:.2f}× | "
                     f"{fmt_mb(w.get('bytes', 0))} | {fmt_mb(w.get('rate', 0))}/s |")
    return lines + [""]


def throttled(sshd_env: dict[str, str], alias: str, tree: str, rate: str, reps: int) -> dict[str, dict]:
    exe = benchutil.ctxpack_exe()
    url = f"ssh://{alias}"
    variants = {
        "none": ["--compress", "none"],
        "gzip -1 (ctxpack's automatic choice)": ["--compress", "gzip", "--level", "1"],
        "gzip -6": ["--compress", "gzip"],
    }
    out: dict[str, dict] = {}
    for name, extra in variants.items():
        cmd = [*exe, "build", tree, "-H", url, "--builder", "classic", "--progress", "json", "--no-snapshot", *extra]
        runs, wire = [], 0
        for _ in range(reps):
            t = time.monotonic()
            p = subprocess.run(cmd, capture_output=True, text=True, env=sshd_env, timeout=900)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-1500:])
            runs.append(time.monotonic() - t)
            for line in p.stdout.splitlines():
                d = json.loads(line)
                if d.get("id") == "ctxpack.upload":
                    wire = d["aux"]["wire_bytes"]
        out[name] = {"summary": benchutil.summary(runs), "wire": wire}
        benchutil.log(f"  {rate}: {name} {statistics.median(runs):.2f}s, {wire:,} bytes")
    return out


def zstd_estimate(tree: str, rate_bps: float) -> dict[str, float]:
    exe = benchutil.ctxpack_exe()
    t = time.monotonic()
    p = subprocess.run([*exe, "pack", tree, "--dialect", "classic", "--compress", "zstd", "-o", "/tmp/ctxpack-bench-zstd.tar.zst"],
                       capture_output=True, timeout=600)
    took = time.monotonic() - t
    size = os.path.getsize("/tmp/ctxpack-bench-zstd.tar.zst") if p.returncode == 0 else 0
    os.unlink("/tmp/ctxpack-bench-zstd.tar.zst") if size else None
    return {"pack_seconds": took, "bytes": size, "upload_seconds": max(took, size / rate_bps)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default="/tmp/ctxpack-bench/tree-full")
    ap.add_argument("--small-tree", default="/tmp/ctxpack-bench/tree-small")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rates", default="10M,50M")
    ap.add_argument("--ssh-reps", type=int, default=1)
    ap.add_argument("--only", choices=["all", "throttled"], default="all", help="throttled: only the compression part (a quick check)")
    ap.add_argument("--out", default=str(HERE / "results" / "build.md"))
    args = ap.parse_args()
    benchutil.compile_ctxpack()
    for tree, extra in ((args.tree, []), (args.small_tree, ["--small"])):
        if not os.path.exists(os.path.join(tree, ".bench-tree.json")):
            subprocess.run([sys.executable, str(HERE / "gen_tree.py"), tree, *extra], check=True)
        subprocess.run([sys.executable, str(HERE / "set_ignore.py"), tree, "typical"], check=True, capture_output=True)
    # SIGTERM (a time limit) ends the run through the finally below, so the
    # engine and the sshds are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # A private index for the snapshot `ctxpack build` records: the user's
    # may be rewritten by other ctxpack versions on a shared machine.
    cache = tempfile.mkdtemp(prefix="ctxpack-bench-cache-")
    load0 = benchutil.loadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    d = harness.Dockerd.start(tls=False)
    relay_path = os.path.join(d.base, "relay.sock")
    relay = Relay(relay_path, d.socket)
    ssh = sshd_helper.start_sshd(relay_path)
    slow: dict[str, sshd_helper.Sshd] = {}
    agent: subprocess.Popen[bytes] | None = None
    results: dict[str, object] = {}
    try:
        env = dict(os.environ, DOCKER_BUILDKIT="0", CTXPACK_CACHE_DIR=cache)
        env.pop("DOCKER_HOST", None)
        unix_t = unix_w = ssh_t = ssh_w = {}
        if args.only == "all":
            benchutil.log("unix socket")
            unix_t, unix_w = time_tools(commands(f"unix://{relay_path}", args.tree), env, args.reps, relay)
            benchutil.log("ssh")
            agent, agent_sock = start_agent(ssh.base, os.path.join(ssh.base, "id_client"))
            sshenv = ssh.env(dict(env, SSH_AUTH_SOCK=agent_sock))
            cmds = commands(ssh.url, args.tree, ssh.direct_url)
            cmds.pop("ctxpack build --no-snapshot")  # its cost is the unix table's; time is short
            exe = benchutil.ctxpack_exe()
            cmds = {"ctxpack build (auto: gzip -1)": cmds.pop("ctxpack build"),
                    "ctxpack build --compress none": [*exe, "build", args.tree, "-H", ssh.url, "--builder", "classic",
                                                      "-q", "--compress", "none"], **cmds}
            ssh_t, ssh_w = time_tools(cmds, sshenv, args.ssh_reps, relay)
        results.update(unix=unix_t, unix_wire=unix_w, ssh=ssh_t, ssh_wire=ssh_w)
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))  # kept if the rest fails
        rates = args.rates.split(",")
        thr: dict[str, dict] = {}
        results["throttled"] = thr
        try:
            for rate in rates:
                benchutil.log(f"ssh throttled to {rate}B/s")
                s = sshd_helper.start_sshd(relay_path, throttle=rate)
                slow[rate] = s
                thr[rate] = throttled(s.env(env), s.alias, args.small_tree, rate, args.reps)
                thr[rate]["zstd (estimate)"] = zstd_estimate(args.small_tree, float(rate.rstrip("M")) * 1e6)
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            results["throttled_error"] = str(e)[-500:]
            benchutil.log(f"throttled part failed: {e}")
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(5)
        for s in [ssh, *slow.values()]:
            s.stop()
        d.stop()
        shutil.rmtree(cache, ignore_errors=True)
    load1 = benchutil.loadavg()

    tree_info = json.load(open(os.path.join(args.tree, ".bench-tree.json")))
    commit = benchutil.command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    lines = [
        "# `ctxpack build` vs the docker CLI (classic) vs docker-py, one engine",
        "",
        f"- date: {started}; ctxpack commit {commit}; engine: Debian's dockerd {d.info.get('Version')} "
        f"(API {d.info.get('ApiVersion')}), vfs, private (tests/dockerd.py)",
        f"- machine: {benchutil.cpu_model()}, {os.cpu_count()} cores; load average {' '.join(load0)} at start, "
        f"{' '.join(load1)} at end (shared machine)",
        f"- clients: {benchutil.command_output(['docker', '--version'])} with DOCKER_BUILDKIT=0; docker-py "
        f"{benchutil.command_output([sys.executable, '-c', 'import docker; print(docker.__version__)'])}; "
        f"{benchutil.command_output(['sh', '-c', 'ssh -V 2>&1'])}",
        f"- tree `{args.tree}`: {tree_info.get('stats', {})} with the `typical` .dockerignore; Dockerfile "
        "`FROM scratch` + `COPY . /app`; all three send the same entries",
        f"- method: one warm-up per tool (fills the build cache: the COPY is a cache hit afterwards, so the time is "
        f"the context's: walk, tar, upload, and the engine unpacking and checksumming it), then {args.reps} "
        "interleaved rounds; medians; wall = spawn to exit with the image ID. Every run goes through a byte-counting "
        "relay in front of the engine's socket (for ssh: behind sshd, where `docker system dial-stdio` connects): "
        "bytes on the wire = what the client sent on the /build connection, throughput = those bytes over its "
        "first-to-last byte time",
        "",
        "## Time to image and upload",
        "",
        *(table("unix socket", unix_t, unix_w, "docker build (DOCKER_BUILDKIT=0)") if unix_t else []),
        *(table(f"ssh://127.0.0.1 (sshd + docker system dial-stdio; {args.ssh_reps} round(s) after the warm-up; "
                "docker-py through paramiko)", ssh_t, ssh_w, "docker build (DOCKER_BUILDKIT=0)") if ssh_t else []),
        "ctxpack's default compression: none on the unix socket, gzip level 1 over ssh (this 20.10 engine does not "
        "accept zstd). "
        "The docker CLI and docker-py send an uncompressed tar.",
        "",
        "## Compression over a throttled ssh link (small tree, ctxpack only)",
        "",
        "| link | compression | time to image, median | bytes on the wire |",
        "|---|---|---:|---:|",
    ]
    for rate, rows in results["throttled"].items():  # type: ignore[union-attr]
        for name, row in rows.items():
            if "summary" in row:
                lines.append(f"| {rate}B/s | {name} | {row['summary']['median']:.2f} s | {fmt_mb(row['wire'])} |")
            else:
                lines.append(f"| {rate}B/s | zstd -3 (estimate: not accepted by 20.10) | ≈{row['upload_seconds']:.2f} s upload "
                             f"(pack {row['pack_seconds']:.2f} s) | {fmt_mb(row['bytes'])} |")
    lines.append("")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
