"""``ctxpack build`` vs the docker CLI (classic) vs docker-py, to one engine.

    python bench/bench_build.py                      # the full run (~10-15 min on a quiet machine)
    python bench/bench_build.py --tree /tmp/ctxpack-bench/tree-small --rounds 1 --out /tmp/b.md   # a quick check

One command writes ``bench/results/build.md`` (and ``build.json`` beside it):

* a private dockerd (tests/dockerd.py: Debian's 20.10, vfs, ``bb:latest``)
  behind a byte-counting relay, and an sshd on 127.0.0.1 (tests/sshd.py)
  whose ``docker system dial-stdio`` reaches the engine through the same
  relay: "bytes on the wire" and upload times are measured where the engine
  reads them;
* the tree: bench/gen_tree.py's 100k-file tree with the ``typical``
  .dockerignore, and two Dockerfiles:

  - ``Dockerfile``: ``FROM scratch`` + ``COPY . /app`` — every tool must
    send the whole context, so the engine's intake bounds them all;
  - ``Dockerfile.app`` (:data:`APP_DOCKERFILE`, written outside the tree
    and given with ``-f``): what a
    project like this has — multi-stage, ``COPY package*.json``, ``RUN``,
    ``COPY src``, a final stage copying the build output.  ctxpack's default
    minimal context applies; the docker CLI and docker-py upload everything
    the .dockerignore lets through;

* **unix socket**: time to image (spawn to exit with the image ID) of
  ``ctxpack build`` (classic builder, default options: minimal where sure,
  the ``ctxpack diff`` snapshot recorded), ``DOCKER_BUILDKIT=0 docker build``
  (the 28.x CLI) and docker-py's ``images.build(path=...)``; one warm-up
  each (the CLI first: it fills the build cache, the others must hit it —
  the same image ID means the engine saw the same context checksums), then
  ``--rounds`` interleaved rounds; medians and per-round ratios to the CLI;
  ctxpack's own phases (start-up, plan, upload, engine, snapshot wait) from
  its ``--progress json`` record;
* **identical images**: image IDs and layer diff IDs per tool; for
  ``Dockerfile.app`` also one ``--no-cache`` build per tool and its final
  image's ``docker export`` listing (path, type, mode, owner, content
  digest) compared with the CLI's;
* **ssh** (``ssh://`` to 127.0.0.1, ``--ssh-rounds``; the cache is warm from
  the unix part): ``Dockerfile`` with ctxpack's automatic compression,
  ``--compress none`` and ``gzip -1``, the CLI and docker-py (paramiko);
  bytes on the wire and context throughput (the uncompressed tar's bytes
  per second of upload);
* **throttled ssh** (bench/throttle.py as the ssh ProxyCommand; the small
  tree, ``--rates``): none vs gzip -1 vs gzip -6 vs the CLI — where
  compression pays; the automatic rule is checked against it.

Standard library + docker-py; nothing here is imported by the package.
"""

from __future__ import annotations

import argparse
import hashlib
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
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import benchutil  # noqa: E402
import dockerd as harness  # noqa: E402
import sshd as sshd_helper  # noqa: E402

CLI = "docker build (DOCKER_BUILDKIT=0)"
CTX = "ctxpack build"
DPY = "docker-py images.build"

#: A real-world-shaped Dockerfile for bench/gen_tree.py's tree (a Node-style
#: monorepo): dependencies from the manifests, then the sources, then a
#: small final image with the build output.  Its RUN steps are
#: deterministic (sorted digests), so two tools' images can be compared
#: file by file.
APP_DOCKERFILE = """\
# bench/bench_build.py: a real-world-shaped build of this tree
FROM bb:latest AS deps
WORKDIR /app
COPY package*.json tsconfig.json ./
RUN mkdir -p node_modules && md5sum package.json tsconfig.json > node_modules/.installed
FROM deps AS build
COPY src ./src
COPY packages ./packages
RUN mkdir -p /out && find src packages -type f -exec md5sum {} + | sort > /out/manifest \\
 && md5sum /out/manifest > /out/bundle.md5
FROM bb:latest
COPY --from=deps /app/node_modules/.installed /app/
COPY --from=build /out /app/
CMD ["cat", "/app/bundle.md5"]
"""


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
url, path, dockerfile, nocache = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
c = docker.DockerClient(base_url=url, timeout=900)
img, _ = c.images.build(path=path, dockerfile=dockerfile, quiet=True, rm=True, nocache=nocache)
print(img.id)
"""


def commands(url: str, tree: str, dockerfile: str, *, dockerpy_url: str | None = None,
             no_cache: bool = False) -> dict[str, list[str]]:
    """The three tools, same engine, same Dockerfile (a path: in the tree
    or, for Dockerfile.app, outside it — the tree is shared with other
    benchmarks and stays as gen_tree.py made it)."""
    exe = benchutil.ctxpack_exe()
    dockerfile = os.path.abspath(os.path.join(tree, dockerfile))
    f = ["-f", dockerfile]
    nc = ["--no-cache"] if no_cache else []
    return {
        CLI: ["docker", "-H", url, "build", "-q", *f, *nc, tree],
        CTX: [*exe, "build", tree, "-H", url, "--builder", "classic", "--progress", "json", *f, *nc],
        DPY: [sys.executable, "-c", DOCKERPY, dockerpy_url or url, tree, dockerfile, "1" if no_cache else "0"],
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


def run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """One run: wall time, the image ID, and ctxpack's own records (json)."""
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    took = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({p.returncode}): {p.stderr[-1500:]}")
    out: dict[str, Any] = {"wall": took, "image": p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""}
    for line in p.stdout.splitlines():  # ctxpack --progress json: its upload and build records
        if line.startswith('{"id": "ctxpack.'):
            d = json.loads(line)
            out[d["id"]] = d["aux"]
    if "ctxpack.build" in out:
        out["image"] = out["ctxpack.build"]["image_id"]
    return out


def timed(cmds: dict[str, list[str]], env: dict[str, str], rounds: int, relay: Relay, *,
          warmup: bool = True) -> dict[str, dict[str, Any]]:
    """Warm-up (in the given order: the CLI first), then ``rounds``
    interleaved rounds, every run through the relay."""
    res: dict[str, dict[str, Any]] = {name: {"runs": [], "wire": [], "upload_s": [], "records": []} for name in cmds}
    if warmup:
        for name, cmd in cmds.items():
            benchutil.log(f"  warm-up: {name}")
            res[name]["warmup"] = run(cmd, env)
    names = list(cmds)
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            relay.reset()
            one = run(cmds[name], env)
            c = relay.biggest()
            res[name]["runs"].append(one["wall"])
            res[name]["wire"].append(c["bytes"])
            res[name]["upload_s"].append(max(c["last"] - c["first"], 1e-9))
            res[name]["records"].append(one)
            res[name]["image"] = one["image"]
            benchutil.log(f"  round {r + 1}: {name} {one['wall']:.2f}s, {c['bytes']:,} bytes in "
                          f"{c['last'] - c['first']:.2f}s")
    for name in names:
        x = res[name]
        x["summary"] = benchutil.summary(x["runs"])
        x["bytes"] = statistics.median(x["wire"])
        x["seconds"] = statistics.median(x["upload_s"])
    return res


def layers(d: harness.Dockerd, image: str) -> list[str]:
    return list((d.client.inspect_image(image).get("RootFS") or {}).get("Layers") or [])


def listing(d: harness.Dockerd, image: str) -> dict[str, tuple[Any, ...]]:
    """The final image's files (docker export): type, mode, owner, content digest."""
    out: dict[str, tuple[Any, ...]] = {}
    for path, e in d.export_fs(image).items():
        data = e.data if isinstance(e.data, bytes) else (e.data or "").encode()
        out[path] = (e.type, e.mode, e.uid, e.gid, hashlib.sha256(data).hexdigest())
    return out


# --------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------


def ctxpack_phases(records: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of ctxpack's own phases; start-up = wall - its internal elapsed."""
    rows: dict[str, list[float]] = {}
    for r in records:
        b = r.get("ctxpack.build")
        if not b:
            continue
        rows.setdefault("start-up + exit", []).append(r["wall"] - b["elapsed"])
        for k, v in b["phases"].items():
            rows.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in rows.items()}


def unix_part(d: harness.Dockerd, url: str, tree: str, dockerfile: str, env: dict[str, str], rounds: int,
              relay: Relay) -> dict[str, Any]:
    res = timed(commands(url, tree, dockerfile), env, rounds, relay)
    ref = res[CLI]["image"]
    ident = {name: {"image": x["image"], "same_image_as_cli": x["image"] == ref,
                    "same_layers_as_cli": layers(d, x["image"]) == layers(d, ref)} for name, x in res.items()}
    return {"timed": res, "identity": ident, "phases": ctxpack_phases(res[CTX]["records"])}


def no_cache_identity(d: harness.Dockerd, url: str, tree: str, dockerfile: str, env: dict[str, str]) -> dict[str, Any]:
    """One --no-cache build per tool; the final images' files compared with the CLI's."""
    out: dict[str, Any] = {}
    ref: dict[str, tuple[Any, ...]] | None = None
    for name, cmd in commands(url, tree, dockerfile, no_cache=True).items():
        benchutil.log(f"  --no-cache: {name}")
        one = run(cmd, env)
        files = listing(d, one["image"])
        if ref is None:
            ref = files
        diff = sorted(set(files) ^ set(ref)) + sorted(p for p in set(files) & set(ref) if files[p] != ref[p])
        out[name] = {"wall": one["wall"], "image": one["image"], "files": len(files), "differs": diff[:20],
                     "identical_to_cli": not diff}
    return out


def ssh_part(ssh: Any, env: dict[str, str], tree: str, rounds: int, relay: Relay) -> dict[str, Any]:
    base = commands(ssh.url, tree, "Dockerfile", dockerpy_url=ssh.direct_url)
    ctx = base[CTX]
    cmds: dict[str, list[str]] = {
        "ctxpack build (automatic compression)": ctx,
        "ctxpack build --compress none": [*ctx, "--compress", "none"],
        "ctxpack build --compress gzip --level 1": [*ctx, "--compress", "gzip", "--level", "1"],
        CLI: base[CLI],
        DPY: base[DPY],
    }
    res = timed(cmds, env, rounds, relay, warmup=False)  # the unix part left the cache warm
    tar_bytes = res["ctxpack build --compress none"]["bytes"]
    for x in res.values():
        x["context_rate"] = tar_bytes / x["seconds"]
        rec = x["records"][-1].get("ctxpack.upload") if x["records"] else None
        x["compression"] = rec["compression"] if rec else "none"
    return {"timed": res, "tar_bytes": tar_bytes}


def throttled_part(relay_path: str, env: dict[str, str], tree: str, rates: list[str], rounds: int,
                   relay: Relay) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rate in rates:
        benchutil.log(f"ssh throttled to {rate}B/s")
        s = sshd_helper.start_sshd(relay_path, throttle=rate)
        try:
            ctx = commands(s.url, tree, "Dockerfile")[CTX]
            cmds = {
                "ctxpack --compress none": [*ctx, "--compress", "none"],
                "ctxpack --compress gzip --level 1": [*ctx, "--compress", "gzip", "--level", "1"],
                "ctxpack --compress gzip --level 6": [*ctx, "--compress", "gzip", "--level", "6"],
                "ctxpack (automatic)": ctx,
                CLI: commands(s.url, tree, "Dockerfile")[CLI],
            }
            out[rate] = timed(cmds, s.env(env), rounds, relay, warmup=False)
        finally:
            s.stop()
    return out


def startup(env: dict[str, str]) -> dict[str, float]:
    """Process start-up alone: ``ctxpack build --print-endpoint`` and ``docker version --format``."""
    exe = benchutil.ctxpack_exe()
    res = {}
    for name, cmd in (("ctxpack build --print-endpoint", [*exe, "build", "--print-endpoint", "-H", "unix:///nonexistent"]),
                      ("python3 -c pass", [sys.executable, "-c", "pass"]),
                      ("docker --version", ["docker", "--version"])):
        xs = []
        for _ in range(5):
            t = time.monotonic()
            subprocess.run(cmd, capture_output=True, env=env, timeout=60)
            xs.append(time.monotonic() - t)
        res[name] = statistics.median(xs)
    return res


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def time_table(res: dict[str, dict[str, Any]], ref: str = CLI) -> list[str]:
    lines = ["| tool | time to image, median (rounds) | ÷ docker CLI (per round) | bytes on the wire | upload throughput |",
             "|---|---:|---:|---:|---:|"]
    base = res[ref]["runs"]
    for name, x in res.items():
        per = ", ".join(f"{a / b:.2f}" for a, b in zip(x["runs"], base))
        lines.append(f"| {name} | {x['summary']['median']:.2f} s ({', '.join(f'{v:.2f}' for v in x['runs'])}) | "
                     f"**{x['summary']['median'] / res[ref]['summary']['median']:.2f}×** ({per}) | {mb(x['bytes'])} | "
                     f"{mb(x['bytes'] / x['seconds'])}/s |")
    return lines + [""]


def report(args: argparse.Namespace, meta: dict[str, Any], results: dict[str, Any]) -> str:
    L: list[str] = ["# `ctxpack build` vs the docker CLI (classic) vs docker-py, one engine", "",
                    "Written by `python bench/bench_build.py " + " ".join(sys.argv[1:]) + "` (one command).", ""]
    L += [f"- date: {meta['started']}; ctxpack commit {meta['commit']}; engine: Debian's dockerd {meta['engine']}, vfs, "
          "private (tests/dockerd.py)",
          f"- machine: {meta['cpu']}, {os.cpu_count()} cores; load average {' '.join(meta['load0'])} at start, "
          f"{' '.join(meta['load1'])} at end",
          f"- clients: {meta['clients']}",
          f"- tree `{args.tree}`: {meta['tree']} with the `typical` .dockerignore; small tree `{args.small_tree}` for "
          "the throttled part",
          f"- method: one warm-up per tool (the CLI first), then {args.rounds} interleaved round(s); wall = spawn to "
          "exit with the image ID; bytes on the wire and upload time at a relay in front of the engine's socket "
          "(throughput = bytes / first-to-last byte)", ""]
    for key, title in (("unix_copy", "unix socket, `Dockerfile` = `FROM scratch` + `COPY . /app` (whole context)"),
                       ("unix_app", "unix socket, `Dockerfile.app` (real-world shaped; ctxpack's minimal context)")):
        part = results.get(key)
        if not part:
            continue
        L += [f"## {title}", "", *time_table(part["timed"])]
        L += ["Same image as the CLI's (image ID; layer diff IDs): " + "; ".join(
            f"{n}: {'yes' if i['same_image_as_cli'] else 'NO'} / {'yes' if i['same_layers_as_cli'] else 'NO'}"
            for n, i in part["identity"].items()), ""]
        ph = part["phases"]
        if ph:
            L += ["ctxpack's own time (medians): " + ", ".join(f"{k} {v:.2f} s" for k, v in ph.items()) +
                  " (plan = ping, context, Dockerfile analysis, base-image lookups; engine = last byte to the "
                  "image ID; snapshot = waiting for the `ctxpack diff` fingerprint taken beside the build)", ""]
    nc = results.get("no_cache_app")
    if nc:
        L += ["### `Dockerfile.app` with `--no-cache`: the final images compared file by file (docker export)", "",
              "| tool | time to image (1 run) | files | identical to the CLI's |", "|---|---:|---:|---|"]
        for n, x in nc.items():
            L.append(f"| {n} | {x['wall']:.2f} s | {x['files']:,} | {'yes' if x['identical_to_cli'] else 'NO: ' + ', '.join(x['differs'][:5])} |")
        L.append("")
    sp = results.get("ssh")
    if sp:
        L += [f"## ssh://127.0.0.1 (sshd + `docker system dial-stdio`), `Dockerfile` (whole context), {args.ssh_rounds} "
              "round(s), cache warm", "",
              "| tool | compression | time to image | bytes on the wire | context throughput (tar bytes/s) |",
              "|---|---|---:|---:|---:|"]
        for n, x in sp["timed"].items():
            L.append(f"| {n} | {x['compression']} | {x['summary']['median']:.2f} s | {mb(x['bytes'])} | "
                     f"{mb(x['context_rate'])}/s |")
        best_other = max(sp["timed"][CLI]["context_rate"], sp["timed"][DPY]["context_rate"])
        auto = sp["timed"]["ctxpack build (automatic compression)"]["context_rate"]
        L += ["", f"ctxpack (automatic) vs the best of the CLI and docker-py: {auto / best_other:.2f}× the context "
              f"throughput ({'higher' if auto > best_other else 'NOT higher'}).", ""]
    th = results.get("throttled")
    if th:
        L += ["## Compression over a throttled ssh link (small tree, `Dockerfile`)", "",
              "| link | tool | time to image | bytes on the wire |", "|---|---|---:|---:|"]
        for rate, res in th.items():
            for n, x in res.items():
                L.append(f"| {rate}B/s | {n} | {x['summary']['median']:.2f} s | {mb(x['bytes'])} |")
        L.append("")
        wins = {rate: min((n for n in res if n.startswith("ctxpack --compress")), key=lambda n: res[n]["summary"]["median"])
                for rate, res in th.items()}
        L += ["Fastest compression per link: " + "; ".join(f"{r}B/s: {w.replace('ctxpack --compress ', '')}"
                                                          for r, w in wins.items()), ""]
    st = results.get("startup")
    if st:
        L += ["Process start-up alone (median of 5): " + ", ".join(f"`{k}` {v:.3f} s" for k, v in st.items()), ""]
    L += ["The rule ctxpack applies (ctxpack/engine/builder.py `choose_compression`): none on a local socket "
          "(unix, tcp to loopback) and over ssh to this machine (`ssh -G` resolves the host to a loopback address, "
          "no ProxyCommand/ProxyJump: the same cores would compress, encrypt, decrypt and unpack); on a remote link "
          "zstd where the engine accepts it (classic builder, Engine ≥ 23, API ≥ 1.42), else gzip level 1 (the "
          "throttled rows: it pays on slow links).  `--compress` overrides it.  So the ssh table's automatic row is "
          "`none` (the sshd is on 127.0.0.1) and the throttled table's is gzip -1 (a ProxyCommand is a real link).", ""]
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default="/tmp/ctxpack-bench/tree-full")
    ap.add_argument("--small-tree", default="/tmp/ctxpack-bench/tree-small")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds after the warm-up (unix socket)")
    ap.add_argument("--ssh-rounds", type=int, default=1)
    ap.add_argument("--throttled-rounds", type=int, default=1)
    ap.add_argument("--rates", default="10M,50M", help="throttled ssh link rates, bytes/s")
    ap.add_argument("--parts", default="unix,app,nocache,ssh,throttled,startup",
                    help="comma-separated subset of unix,app,nocache,ssh,throttled,startup")
    ap.add_argument("--out", default=str(HERE / "results" / "build.md"))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    benchutil.compile_ctxpack()
    for tree, extra in ((args.tree, []), (args.small_tree, ["--small"])):
        if not os.path.exists(os.path.join(tree, ".bench-tree.json")):
            subprocess.run([sys.executable, str(HERE / "gen_tree.py"), tree, *extra], check=True)
        subprocess.run([sys.executable, str(HERE / "set_ignore.py"), tree, "typical"], check=True, capture_output=True)
    app = os.path.join(tempfile.mkdtemp(prefix="ctxpack-bench-app-"), "Dockerfile.app")
    Path(app).write_text(APP_DOCKERFILE)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit still stops the engine and sshds
    cache = tempfile.mkdtemp(prefix="ctxpack-bench-cache-")  # a private index for the snapshots builds record
    meta: dict[str, Any] = {"load0": benchutil.loadavg(), "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    d = harness.Dockerd.start(tls=False)
    relay_path = os.path.join(d.base, "relay.sock")
    relay = Relay(relay_path, d.socket)
    ssh = sshd_helper.start_sshd(relay_path)
    agent: subprocess.Popen[bytes] | None = None
    results: dict[str, Any] = {}
    out_json = Path(args.out).with_suffix(".json")
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every part: a run cut short keeps what it measured
        out_json.write_text(json.dumps(results, indent=1, default=str))

    try:
        env = dict(os.environ, DOCKER_BUILDKIT="0", CTXPACK_CACHE_DIR=cache)
        env.pop("DOCKER_HOST", None)
        url = f"unix://{relay_path}"
        if "startup" in parts:
            results["startup"] = startup(env)
        if "unix" in parts:
            benchutil.log("unix socket, Dockerfile (COPY .)")
            results["unix_copy"] = unix_part(d, url, args.tree, "Dockerfile", env, args.rounds, relay)
            save()
        if "app" in parts:
            benchutil.log("unix socket, Dockerfile.app")
            results["unix_app"] = unix_part(d, url, args.tree, app, env, args.rounds, relay)
            save()
        if "nocache" in parts:
            benchutil.log("unix socket, Dockerfile.app --no-cache")
            results["no_cache_app"] = no_cache_identity(d, url, args.tree, app, env)
            save()
        if "ssh" in parts:
            benchutil.log("ssh")
            agent, agent_sock = start_agent(ssh.base, os.path.join(ssh.base, "id_client"))
            sshenv = ssh.env(dict(env, SSH_AUTH_SOCK=agent_sock))
            if "unix" not in parts:  # the ssh rounds expect a warm cache
                run(commands(url, args.tree, "Dockerfile")[CLI], env)
            results["ssh"] = ssh_part(ssh, sshenv, args.tree, args.ssh_rounds, relay)
            save()
        if "throttled" in parts:
            run(commands(url, args.small_tree, "Dockerfile")[CLI], env)  # warm the small tree's cache
            results["throttled"] = throttled_part(relay_path, env, args.small_tree, args.rates.split(","),
                                                  args.throttled_rounds, relay)
            save()
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(5)
        ssh.stop()
        meta["engine"] = f"{d.info.get('Version')} (API {d.info.get('ApiVersion')})"
        d.stop()
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(os.path.dirname(app), ignore_errors=True)
    meta["load1"] = benchutil.loadavg()
    meta["commit"] = benchutil.command_output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    meta["cpu"] = benchutil.cpu_model()
    meta["clients"] = (f"{benchutil.command_output(['docker', '--version'])} with DOCKER_BUILDKIT=0; docker-py "
                       f"{benchutil.command_output([sys.executable, '-c', 'import docker; print(docker.__version__)'])}; "
                       f"{benchutil.command_output(['sh', '-c', 'ssh -V 2>&1'])}")
    meta["tree"] = json.load(open(os.path.join(args.tree, ".bench-tree.json"))).get("stats", {})
    results["meta"] = meta
    save()
    text = report(args, meta, results)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
