"""A/B rounds of ``ctxpack build`` variants over ssh://127.0.0.1, with the peers.

    python bench/bench_ssh_ab.py --rounds 5                       # the default variants
    python bench/bench_ssh_ab.py --variant "chacha=ssh -o Ciphers=chacha20-poly1305@openssh.com" \\
                                 --variant "auto=" --rounds 5

The same pipe as bench_build.py's ssh part (its relay, its CPU sampler,
tests/dockerd.py and tests/sshd.py; ``Dockerfile`` = ``COPY . /app`` on the
typical tree, cache warm), but with several ctxpack variants in the same
alternated rounds as the docker CLI (DOCKER_BUILDKIT=0) and docker-py, so a
variant's effect is compared within rounds instead of across runs on a
machine whose load moves.  A variant is ``NAME=CTXPACK_SSH`` (empty: ssh as
ctxpack picks it): ``CTXPACK_SSH`` is ctxpack's seam for the ssh command,
and ssh keeps the first value it obtains for an option, so an ``-o`` given
there wins over anything ctxpack adds after it.

Prints, per tool, context throughput per round (the tar's bytes / the
upload's time at the relay) and the CPU of every pipe process inside the
upload window, and each ctxpack variant's per-round ratio to the better
peer.  Writes the raw numbers as JSON (``--out``).  Nothing is written into
bench/results: the by-hand tables there quote these outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_build as bb  # noqa: E402  (also puts tests/ and the repo on sys.path)
import benchutil  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default="/tmp/ctxpack-bench/tree-full")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=CTXPACK_SSH (empty value: ctxpack's own choice); repeatable")
    ap.add_argument("--no-peers", action="store_true", help="only the ctxpack variants")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ctxpack-ssh-ab.json"))
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variant] or [["auto", ""]]
    benchutil.compile_ctxpack()
    if not os.path.exists(os.path.join(args.tree, ".bench-tree.json")):
        subprocess.run([sys.executable, str(HERE / "gen_tree.py"), args.tree], check=True)
    subprocess.run([sys.executable, str(HERE / "set_ignore.py"), args.tree, "typical"], check=True, capture_output=True)
    cache = tempfile.mkdtemp(prefix="ctxpack-bench-cache-")
    load0 = benchutil.loadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    benchutil.tmpfs_daemon()
    d = bb.harness.Dockerd.start(tls=False)
    relay_path = os.path.join(d.base, "relay.sock")
    relay = bb.Relay(relay_path, d.socket)
    ssh = bb.sshd_helper.start_sshd(relay_path)
    agent = None
    try:
        env = dict(os.environ, DOCKER_BUILDKIT="0", CTXPACK_CACHE_DIR=cache)
        env.pop("DOCKER_HOST", None)
        agent, agent_sock = bb.start_agent(ssh.base, os.path.join(ssh.base, "id_client"))
        sshenv = ssh.env(dict(env, SSH_AUTH_SOCK=agent_sock))
        bb.run(bb.commands(f"unix://{relay_path}", args.tree, "Dockerfile")[bb.CLI], env)  # a warm cache
        base = bb.commands(ssh.url, args.tree, "Dockerfile", dockerpy_url=ssh.direct_url)
        cmds: dict[str, list[str]] = {}
        for name, seam in variants:
            # env(1) execs the tool: wait4 and the sampler still see it and its ssh.
            cmds[f"ctxpack [{name}]"] = ["env", f"CTXPACK_SSH={seam}", *base[bb.CTX]] if seam else base[bb.CTX]
        if not args.no_peers:
            cmds[bb.CLI] = base[bb.CLI]
            cmds[bb.DPY] = base[bb.DPY]
        sampler = bb.CpuSampler({"engine": d.proc.pid, "sshd": ssh.proc.pid, "client": os.getpid()})
        res = bb.timed(cmds, sshenv, args.rounds, relay, warmup=False, sampler=sampler)
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(5)
        ssh.stop()
        d.stop()
        shutil.rmtree(cache, ignore_errors=True)
    load1 = benchutil.loadavg()
    tar_bytes = statistics.median(b for name in res if name.startswith("ctxpack") for b in res[name]["body_bytes"])
    print(f"{started}, {args.rounds} rounds, load {load0} -> {load1}; tar {tar_bytes / 1e6:.1f} MB")
    peers = [n for n in res if not n.startswith("ctxpack")]
    for name, x in res.items():
        x["context_rates"] = [tar_bytes / 1e6 / u for u in x["upload_s"]]  # MB/s
        w = x.get("window_cpu") or []

        def med(key: str, w: list[dict[str, float]] = w) -> float:
            return statistics.median(sum(v for k, v in c.items() if k == key or k.startswith(key + "/")) for c in w)

        print(f"{name}: {statistics.median(x['context_rates']):.1f} MB/s ("
              + ", ".join(f"{r:.1f}" for r in x["context_rates"]) + "); window CPU medians: "
              + ", ".join(f"{k} {med(k):.2f}" for k in ("client", "sshd", "engine", "relay"))
              + f"; cores {statistics.median(c.get('cores', 0) for c in w):.2f}")
        clients = sorted({k for c in w for k in c if k.startswith("client/")})
        print("    client parts: " + ", ".join(f"{k[7:]} {med(k):.2f}" for k in clients))
    for name in res:
        if name.startswith("ctxpack") and peers:
            per = [a / max(res[p]["context_rates"][i] for p in peers) for i, a in enumerate(res[name]["context_rates"])]
            print(f"{name} / better peer per round: " + ", ".join(f"{r:.2f}" for r in per)
                  + f"; median {statistics.median(per):.2f}")
    ours = [n for n in res if n.startswith("ctxpack")]
    for other in ours[1:]:  # each variant against the first, round by round
        per = [a / b for a, b in zip(res[ours[0]]["context_rates"], res[other]["context_rates"])]
        print(f"{ours[0]} / {other} per round: " + ", ".join(f"{r:.2f}" for r in per)
              + f"; median {statistics.median(per):.2f}")
    Path(args.out).write_text(json.dumps({"started": started, "load": [load0, load1], "tar_bytes": tar_bytes,
                                          "results": res}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
