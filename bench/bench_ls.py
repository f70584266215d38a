#!/usr/bin/env python3
"""Benchmark ``ctxpack ls`` against the docker CLI's build-context step.

    python bench/bench_ls.py --small          # quick: ~10k-file trees
    python bench/bench_ls.py                  # full: ~100k files, ~1.4 GB
    python bench/bench_ls.py --reps 7 --root /data/trees

In one run, on trees made by ``bench/gen_tree.py`` (generated on first use,
idempotent), with the ``.dockerignore`` variants of ``bench/set_ignore.py``:

1. For the main tree with ``none`` (full context), ``typical`` and
   ``node_modules`` (``**/node_modules`` only):

   * (a) ``ctxpack ls --dialect classic DIR > /dev/null`` -- subprocess wall
     time, Python start-up included;
   * (b) ``DOCKER_BUILDKIT=0 docker build DIR`` against a fake daemon on a
     unix socket (``bench/discard_server.py``) that reads and discards the
     upload: the docker CLI resolves the context, validates it (a walk that
     opens every file), walks it again to tar it and streams the tar: that
     whole "context step" is what is timed (the fake daemon replies at once,
     so nothing else is in it).

2. Pruning: the main tree and a twin whose node_modules holds 10x the files
   (``gen_tree.py --nm-scale 10``), timed together with ``**/node_modules``
   (ctxpack and docker) and with no ignore file (ctxpack; docker too with
   ``--docker-unpruned``): with pruning, the time should not depend on
   node_modules' size.

Each command gets one warm-up run (which doubles as a correctness check: the
names docker uploads, parsed from its tar stream, must equal ``ctxpack ls``'s
listing), then ``--reps`` timed runs, interleaved between the tools so that
machine noise hits both alike.  Medians are of warm-cache runs (dropping the
page cache needs root tricks; we don't).  The markdown table goes to stdout
and to ``bench/results/ls.md`` (``ls-small.md`` for ``--small``), raw
numbers to the matching ``.json``.

The ``.dockerignore`` of each tree is restored to what it was at the end.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from benchutil import command_output, compile_ctxpack, cpu_model, ctxpack_exe, loadavg, log, summary  # noqa: E402

import gen_tree  # noqa: E402
from discard_server import DiscardServer  # noqa: E402
from set_ignore import current_variant, set_ignore  # noqa: E402

DEFAULT_ROOT = os.environ.get("CTXPACK_BENCH_ROOT", "/tmp/ctxpack-bench")


# --------------------------------------------------------------------------
# Running and timing
# --------------------------------------------------------------------------


class Runner:
    def __init__(self, server: DiscardServer | None):
        self.server = server
        self.ctxpack = ctxpack_exe()
        self.docker = shutil.which("docker")
        self._cfg = tempfile.mkdtemp(prefix="ctxpack-bench-dockercfg-")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCKER_")}
        if server is not None:
            env.update(DOCKER_BUILDKIT="0", DOCKER_HOST=server.docker_host, DOCKER_CONFIG=self._cfg)
        self.docker_env = env

    def close(self) -> None:
        shutil.rmtree(self._cfg, ignore_errors=True)

    @staticmethod
    def _timed(argv: list[str], env=None, capture: bool = False):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        disk = (r1.ru_inblock - r0.ru_inblock) * 512  # bytes read from the block device
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {p.returncode}:\n{p.stderr.decode(errors='replace')}")
        return {"wall": wall, "cpu": cpu, "disk": disk}, p

    def run(self, tool: str, tree: str, check: bool = False) -> dict:
        """One timed run.  ``check``: also return the listing / uploaded names."""
        if tool == "ctxpack":
            r, p = self._timed(self.ctxpack + ["ls", "--dialect", "classic", tree], capture=check)
            if check:
                r["names"] = p.stdout.decode("utf-8", "surrogateescape").splitlines()
            return r
        assert self.server is not None and self.docker
        self.server.take_uploads()
        self.server.set_verify(check)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            r, _ = self._timed([self.docker, "build", tree], env=self.docker_env)
        finally:
            self.server.set_verify(False)
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        r["server_cpu"] = (s1.ru_utime - s0.ru_utime) + (s1.ru_stime - s0.ru_stime)
        ups = self.server.take_uploads()
        if len(ups) != 1:
            raise RuntimeError(f"expected one upload, got {len(ups)}")
        r["bytes"], names = ups[0]
        if check:
            r["names"] = names
        return r


def measure(runner: Runner, jobs: list[tuple[str, str, str]], reps: int, verify: bool) -> dict:
    """Time a group of jobs ``(key, tool, tree)`` together.

    Each job gets one warm-up run (with ``verify``: docker's uploaded names
    are compared with ctxpack's listing of the same tree), then ``reps``
    rounds run every job once, in an order that alternates between rounds,
    so that machine noise and page-cache state hit all jobs alike.
    """
    out: dict = {}
    listings: dict[str, list[str]] = {}
    for key, tool, tree in sorted(jobs, key=lambda j: j[1] != "ctxpack"):  # listings first
        r = runner.run(tool, tree, check=verify or tool == "ctxpack")
        o = out[key] = {"tool": tool, "tree": tree, "warmup": {k: r[k] for k in ("wall", "cpu", "disk")}}
        names = r.get("names")
        if tool == "ctxpack":
            listings[tree] = names
            o["entries"] = len(names)
        else:
            o["bytes"] = r["bytes"]
            if names is not None and tree in listings:
                o["entries"] = len(names)
                o["same_as_ctxpack"] = names == listings[tree]
                if not o["same_as_ctxpack"]:
                    a, b = set(listings[tree]), set(names)
                    o["diff"] = {"only_ctxpack": sorted(a - b)[:20], "only_docker": sorted(b - a)[:20]}
    runs: dict[str, dict[str, list[float]]] = {k: {} for k, _, _ in jobs}
    for i in range(reps):
        order = jobs if i % 2 == 0 else jobs[::-1]
        for key, tool, tree in order:
            r = runner.run(tool, tree)
            for m in ("wall", "cpu", "disk", "server_cpu"):
                if m in r:
                    runs[key].setdefault(m, []).append(r[m])
    for key in runs:
        for m, xs in runs[key].items():
            out[key][m] = summary(xs)
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def machine_info(tree: str) -> dict:
    cpu = cpu_model()
    head = command_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--", "ctxpack"])
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "docker": command_output(["docker", "--version"]),
        "fs": command_output(["df", "--output=fstype", tree]).splitlines()[-1:] or ["?"],
        "ctxpack_commit": head + (" + uncommitted changes in ctxpack/" if dirty else ""),
        "loadavg": loadavg(),
    }


def fmt_s(s: dict | None) -> str:
    if not s:
        return "–"
    return f"{s['median']:.3f} s ({s['min']:.3f}–{s['max']:.3f})"


def fmt_cpu(r: dict | None) -> str:
    return f"{r['cpu']['median']:.2f} s" if r and "cpu" in r else "–"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def fmt_disk(r: dict | None) -> str:
    return f"{r['disk']['median'] / 1e6:.1f}" if r and "disk" in r else "–"


def fmt_same(d: dict | None) -> str:
    if not d or "same_as_ctxpack" not in d:
        return "–"
    return "yes" if d["same_as_ctxpack"] else "**NO**"


def render(res: dict) -> str:
    m = res["machine"]
    L: list[str] = []
    add = L.append
    add(f"# `ctxpack ls` vs the docker CLI's context step ({res['variant']} tree)")
    add("")
    add(f"- date: {m['date']}; ctxpack commit {m['ctxpack_commit']}")
    add(f"- machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB RAM, Linux {m['kernel']}, "
        f"trees on {m['fs'][0]}; load average {' '.join(m['loadavg'])} at start, "
        f"{' '.join(m.get('loadavg_end', ['?']))} at end (shared, noisy machine)")
    add(f"- Python {m['python']}; {m['docker']}")
    add(f"- (a): `{' '.join(res['ctxpack_cmd'])} ls --dialect classic DIR > /dev/null` (wall time of the "
        "subprocess, interpreter start-up included; ctxpack's modules byte-compiled beforehand, as "
        "`pip install .` leaves them)")
    add("- (b): `DOCKER_BUILDKIT=0 docker build DIR` with `DOCKER_HOST` on a unix socket served by "
        "`bench/discard_server.py`, which reads the upload and discards it: the CLI's context step "
        "(validation walk + tar walk + upload of the tar; nothing is built)")
    add(f"- {res['reps']} timed runs per command after 1 warm-up run, commands of a group interleaved; "
        "**warm page cache** (no cache dropping); time cells are `median (min–max)` wall seconds; "
        "CPU = median user+sys seconds of the measured process; disk = median MB read from the block device "
        "by it (0 = warm cache)")
    add("- this VM runs DAMON `pageout` on page-cache pages idle for more than ~60 s, so the cache is only "
        "warm for what was touched recently: each group's warm-up runs directly precede its timed runs")
    sc = [r["docker"]["server_cpu"]["median"] for r in res["main"].values() if "server_cpu" in r.get("docker", {})]
    if sc:
        add(f"- the discard server (a Python thread of the benchmark process) used {min(sc):.2f}–{max(sc):.2f} s "
            "CPU per docker run (median per variant), competing with the CLI for the 2 cores")
    t = res["trees"]["main"]
    add(f"- main tree `{t['path']}`: {gen_tree.describe(t['marker'])}")
    if "nm10" in res["trees"]:
        t = res["trees"]["nm10"]
        add(f"- 10× node_modules tree `{t['path']}`: {gen_tree.describe(t['marker'])}")
    add("")
    b = res.get("baseline")
    if b:
        add("Fixed costs (tiny context, a Dockerfile only): "
            + ", ".join(f"{k} {fmt_s(v.get('wall'))}" for k, v in b.items()) + ".")
        add("")
    add("## Main tree, per `.dockerignore` variant")
    add("")
    add("| .dockerignore | entries sent | bytes uploaded | (a) ctxpack ls | (b) docker context step | "
        "b / a | CPU a | CPU b | disk MB a / b | listing = upload |")
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for name, r in res["main"].items():
        a, d = r.get("ctxpack"), r.get("docker")
        ratio = f"{d['wall']['median'] / a['wall']['median']:.1f}×" if a and d else "–"
        add(f"| {name} | {a['entries']:,} | {fmt_bytes(d.get('bytes') if d else None)} | {fmt_s(a['wall'])} | "
            f"{fmt_s(d['wall'] if d else None)} | {ratio} | {fmt_cpu(a)} | {fmt_cpu(d)} | "
            f"{fmt_disk(a)} / {fmt_disk(d)} | {fmt_same(d)} |")
    add("")
    if res.get("pruning"):
        p = res["pruning"]
        keys = [k for k in p.get("node_modules", {}) if k.startswith("ctxpack ")]
        add("## Pruning: node_modules 1× vs 10×")
        add("")
        add("Both trees in one interleaved group per ignore variant; `entries sent` counts what ctxpack lists.")
        add("")
        add("| .dockerignore | tree | entries sent | (a) ctxpack ls | CPU a | (b) docker context step | CPU b | "
            "listing = upload |")
        add("|---|---|---:|---:|---:|---:|---:|:---:|")
        for ign in ("node_modules", "none"):
            g = p.get(ign, {})
            for k in keys:
                scale = k.split(" ", 1)[1]
                a, d = g.get(k), g.get("docker " + scale)
                if not a:
                    continue
                label = "`**/node_modules`" if ign == "node_modules" else "none"
                add(f"| {label} | {scale} node_modules | {a['entries']:,} | {fmt_s(a['wall'])} | {fmt_cpu(a)} | "
                    f"{fmt_s(d['wall'] if d else None)} | {fmt_cpu(d)} | {fmt_same(d)} |")
        add("")
        g = p.get("node_modules", {})
        if len(keys) == 2 and all(k in g for k in keys):
            a1, a10 = g[keys[0]], g[keys[1]]
            line = (f"With `**/node_modules`, ctxpack ls on the {keys[1].split()[1]} tree / the 1× tree: "
                    f"wall {a10['wall']['median'] / a1['wall']['median']:.2f}×, "
                    f"CPU {a10['cpu']['median'] / a1['cpu']['median']:.2f}×")
            d1, d10 = g.get("docker 1×"), g.get("docker " + keys[1].split()[1])
            if d1 and d10:
                line += (f"; docker: wall {d10['wall']['median'] / d1['wall']['median']:.2f}×, "
                         f"CPU {d10['cpu']['median'] / d1['cpu']['median']:.2f}×")
            n = p.get("none", {})
            if all(k in n for k in keys):
                line += (f". Without an ignore file ctxpack lists {n[keys[0]]['entries']:,} vs "
                         f"{n[keys[1]]['entries']:,} entries: wall "
                         f"{n[keys[1]]['wall']['median'] / n[keys[0]]['wall']['median']:.1f}×")
            add(line + ".")
            add("")
    diffs = {f"{grp}/{k}": v["diff"] for grp, rs in list(res["main"].items()) + list(res.get("pruning", {}).items())
             for k, v in rs.items() if "diff" in v}
    if diffs:
        add("Listing differences (first 20 each way):")
        add("")
        add("```")
        add(json.dumps(diffs, indent=1))
        add("```")
        add("")
    return "\n".join(L)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="use the ~10k-file trees (quick)")
    ap.add_argument("--files", type=int, default=None, help="override the tree's file count")
    ap.add_argument("--root", default=DEFAULT_ROOT, help=f"where trees live (default {DEFAULT_ROOT}, "
                    "or $CTXPACK_BENCH_ROOT); never inside the repository")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per command (default 5)")
    ap.add_argument("--nm-scale", type=int, default=10, help="node_modules factor of the pruning tree")
    ap.add_argument("--no-docker", action="store_true", help="time ctxpack only")
    ap.add_argument("--no-pruning", action="store_true", help="skip the 1x-vs-10x node_modules part")
    ap.add_argument("--no-verify", action="store_true", help="do not compare docker's upload with the listing")
    ap.add_argument("--docker-unpruned", action="store_true",
                    help="also time docker on the 10x tree without .dockerignore (slow: minutes per run)")
    ap.add_argument("--out", default=None, help="markdown output (default bench/results/ls[-small].md)")
    args = ap.parse_args(argv)

    variant = "small" if args.small else "full"
    files = args.files or (gen_tree.SMALL_FILES if args.small else gen_tree.DEFAULT_FILES)
    big = gen_tree.SMALL_BIG_MIB if args.small else gen_tree.DEFAULT_BIG_MIB
    suffix = "" if args.files is None else f"-{files}"
    main_tree = os.path.join(args.root, f"tree-{variant}{suffix}")
    nm_tree = os.path.join(args.root, f"tree-{variant}{suffix}-nm{args.nm_scale}")
    out_md = args.out or os.path.join(HERE, "results", "ls-small.md" if args.small else "ls.md")
    if os.path.abspath(args.root).startswith(REPO + os.sep):
        ap.error("--root must not be inside the repository")

    compile_ctxpack()
    log(f"generating/checking {main_tree}")
    trees = {"main": {"path": main_tree, "marker": gen_tree.generate(main_tree, files=files, big_mib=big)}}
    if not args.no_pruning:
        log(f"generating/checking {nm_tree}")
        trees["nm10"] = {"path": nm_tree, "marker": gen_tree.generate(
            nm_tree, files=files, big_mib=big, nm_scale=args.nm_scale)}
    saved = {k: current_variant(v["path"]) for k, v in trees.items()}

    use_docker = not args.no_docker and shutil.which("docker") is not None
    if not args.no_docker and not use_docker:
        log("docker CLI not found: timing ctxpack only")
    server = DiscardServer().start() if use_docker else None
    runner = Runner(server)
    tools = ["ctxpack", "docker"] if use_docker else ["ctxpack"]
    verify = not args.no_verify
    res: dict = {"variant": variant, "reps": args.reps, "ctxpack_cmd": runner.ctxpack,
                 "machine": machine_info(main_tree),
                 "trees": trees, "main": {}, "pruning": {}}
    try:
        tiny = tempfile.mkdtemp(prefix="ctxpack-bench-tiny-")
        with open(os.path.join(tiny, "Dockerfile"), "w") as fh:
            fh.write("FROM scratch\n")
        log("baseline: tiny context")
        res["baseline"] = measure(runner, [(t, t, tiny) for t in tools], args.reps, verify=False)
        shutil.rmtree(tiny, ignore_errors=True)

        for ign in ("none", "typical", "node_modules"):
            log(f"main tree, .dockerignore = {ign}")
            set_ignore(main_tree, ign)
            res["main"][ign] = measure(runner, [(t, t, main_tree) for t in tools], args.reps, verify)
        if not args.no_pruning:
            nmk = f"{args.nm_scale}×"
            for ign in ("node_modules", "none"):
                log(f"pruning: 1× and {nmk} trees, .dockerignore = {ign}")
                set_ignore(main_tree, ign)
                set_ignore(nm_tree, ign)
                jobs = [("ctxpack 1×", "ctxpack", main_tree), (f"ctxpack {nmk}", "ctxpack", nm_tree)]
                if use_docker and (ign != "none" or args.docker_unpruned):
                    jobs += [("docker 1×", "docker", main_tree), (f"docker {nmk}", "docker", nm_tree)]
                res["pruning"][ign] = measure(runner, jobs, args.reps, verify)
        res["machine"]["loadavg_end"] = loadavg()
    finally:
        for k, v in trees.items():
            if saved[k] != "custom":
                set_ignore(v["path"], saved[k])
        runner.close()
        if server is not None:
            server.stop()

    md = render(res)
    print(md)
    os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
    with open(out_md, "w", encoding="utf-8") as fh:
        fh.write(md + "\n")
    with open(os.path.splitext(out_md)[0] + ".json", "w", encoding="utf-8") as fh:
        json.dump(res, fh, indent=1, default=str)
    log(f"wrote {out_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
