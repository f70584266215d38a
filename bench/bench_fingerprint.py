"""`ctxpack fingerprint` / `snapshot` / `diff` / `size` against the commands
that bound them (issue 17), on generated trees.

Usage::

    python bench/gen_tree.py /tmp/t100k                       # once per tree
    python bench/bench_fingerprint.py /tmp/t10k:7 /tmp/t100k:5 /tmp/t1m:1

``TREE:ROUNDS`` (default 5 rounds).  Per tree, each round runs every
command once, in an order rotated from round to round (so that a burst of
load on this shared machine hits different commands), all as subprocesses
with the interpreter's start-up included, on a warm page cache:

* peers: GNU ``tar -cf - . | cat`` (reads every byte: the floor of a cold
  fingerprint), ``find DIR -printf '%s %T@ %i\\n'`` (a stat walk: the floor
  of a warm one), ``ctxpack ls --excluded`` (the walk ``size`` makes);
* ours: ``fingerprint`` cold (a fresh, empty index each round), and warm
  (nothing changed) ``fingerprint``, ``snapshot``, ``diff``; ``size``.

Ratios are medians of the per-round ratios (each command against its peer
in the same round), times are medians (min-max).  Peak RSS (GNU time's ``%M``: the largest
process of the command's tree) is the median too.
Writes a markdown table (``--out``) and the raw runs as JSON next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from benchutil import compile_ctxpack, cpu_model, log  # noqa: E402

CTXPACK = [sys.executable, "-m", "ctxpack.cli"]
# (name, peer): ratio targets from issue 17
TARGETS = {"cold": ("tar", 1.2), "warm": ("find", 1.5), "snapshot": ("find", 1.5), "diff": ("find", 1.5),
           "size": ("ls-excluded", 1.2)}


def timed(cmd: list[str] | str, env: dict[str, str], cwd: str | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KB) and stdout.  RSS comes from GNU time
    (``%M``: the largest process of the tree): ``ru_maxrss`` seen from here
    would count the copy of this interpreter that the fork made before exec."""
    out = tempfile.TemporaryFile()
    with tempfile.NamedTemporaryFile("r") as rss:
        argv = cmd if isinstance(cmd, list) else ["sh", "-c", cmd]
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], env=env, cwd=cwd, stdout=out,
                           stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        if p.returncode not in (0, 1):
            raise RuntimeError(f"{cmd} exited {p.returncode}")
        peak = int(rss.read().split()[-1])
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    return wall, peak, text


def bench_tree(tree: str, rounds: int, env: dict[str, str]) -> dict:
    warm_cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-warm-")
    wenv = dict(env, CTXPACK_CACHE_DIR=warm_cache)
    # page cache, and the warm index (a cold run, a second run that stores
    # a checkable state, a snapshot)
    subprocess.run("tar -cf - . | cat > /dev/null", shell=True, cwd=tree, check=True)
    _, _, first = timed(CTXPACK + ["fingerprint", "--json", tree], wenv)
    facts = json.loads(first)
    time.sleep(0.2)
    timed(CTXPACK + ["fingerprint", tree], wenv)
    timed(CTXPACK + ["snapshot", tree], wenv)
    runs: dict[str, list[tuple[float, int]]] = {}
    colds: list[str] = []

    def cold() -> tuple[float, int, str]:
        cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-cold-")
        colds.append(cache)
        try:
            return timed(CTXPACK + ["fingerprint", "--json", tree], dict(env, CTXPACK_CACHE_DIR=cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    commands = {
        "tar": lambda: timed("tar -cf - . | cat > /dev/null", env, cwd=tree),
        "cold": cold,
        "find": lambda: timed(["find", tree, "-printf", "%s %T@ %i\\n"], env),
        "warm": lambda: timed(CTXPACK + ["fingerprint", "--json", tree], wenv),
        "snapshot": lambda: timed(CTXPACK + ["snapshot", tree], wenv),
        "diff": lambda: timed(CTXPACK + ["diff", tree], wenv),
        "ls-excluded": lambda: timed(CTXPACK + ["ls", "--excluded", tree], env),
        "size": lambda: timed(CTXPACK + ["size", "--json", tree], env),
    }
    names = list(commands)
    per_round: list[dict[str, float]] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this: dict[str, float] = {}
        for name in order:
            wall, rss, out = commands[name]()
            if name in ("cold", "warm"):
                got = json.loads(out)
                assert got["fingerprint"] == facts["fingerprint"], (name, got)
                if name == "warm":
                    assert got["hashed"] == 0, got
            runs.setdefault(name, []).append((wall, rss))
            this[name] = wall
        per_round.append(this)
        log(f"{tree} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.2f}" for k, v in this.items()))
    index_bytes = sum(f.stat().st_size for f in Path(warm_cache).iterdir())
    shutil.rmtree(warm_cache, ignore_errors=True)
    ratios = {name: statistics.median(rd[name] / rd[peer] for rd in per_round) for name, (peer, _) in TARGETS.items()}
    return {
        "tree": tree, "rounds": rounds, "entries": facts["entries"], "files": facts["files"], "bytes": facts["bytes"],
        "index_bytes": index_bytes,
        "runs": {k: [list(x) for x in v] for k, v in runs.items()},
        "wall": {k: statistics.median(w for w, _ in v) for k, v in runs.items()},
        "rss_kb": {k: statistics.median(m for _, m in v) for k, v in runs.items()},
        "ratios": ratios,
    }


def table(results: list[dict]) -> str:
    lines = [
        f"# `ctxpack fingerprint` / `snapshot` / `diff` / `size` vs their peers "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores (shared with other sessions); Python "
        f"{platform.python_version()}; load average at the end {os.getloadavg()[0]:.1f}",
        "- each command a subprocess (interpreter start-up included), warm page cache; rounds alternate the order;",
        "  ratio = median over rounds of (command / its peer in the same round); times: median (min-max) seconds",
        "",
    ]
    for res in results:
        w, rss, ratios, runs = res["wall"], res["rss_kb"], res["ratios"], res["runs"]
        lines += [
            f"## {res['entries']:,} entries ({res['files']:,} files, {res['bytes'] / 1e9:.2f} GB), "
            f"{res['rounds']} rounds — `{res['tree']}`",
            "",
            "| command | wall | peak RSS | vs peer | target |",
            "|---|---:|---:|---:|---|",
        ]
        for name, label in (("tar", "GNU `tar -cf - . \\| cat`"), ("find", "`find -printf '%s %T@ %i\\n'`"),
                            ("ls-excluded", "`ctxpack ls --excluded`"), ("cold", "`fingerprint`, cold (empty index)"),
                            ("warm", "`fingerprint`, warm"), ("snapshot", "`snapshot`, warm"), ("diff", "`diff`, warm"),
                            ("size", "`size`")):
            walls = [x[0] for x in runs[name]]
            vs = target = ""
            if name in TARGETS:
                peer, limit = TARGETS[name]
                vs = f"{ratios[name]:.2f}x {peer}"
                target = f"<= {limit}x: {'met' if ratios[name] <= limit else 'NOT met'}"
            lines.append(f"| {label} | {w[name]:.2f} s ({min(walls):.2f}-{max(walls):.2f}) | {rss[name] / 1024:.0f} MB | {vs} | {target} |")
        lines += ["", f"Index: {res['index_bytes'] / 1e6:.1f} MB = {res['index_bytes'] / max(1, res['entries']):.0f} bytes per entry.", ""]
    if len(results) > 1:
        lines += ["## Peak RSS by entry count", "", "| entries | cold | warm | snapshot | diff |", "|---:|---:|---:|---:|---:|"]
        for res in results:
            r = res["rss_kb"]
            lines.append(f"| {res['entries']:,} | {r['cold'] / 1024:.0f} MB | {r['warm'] / 1024:.0f} MB | "
                         f"{r['snapshot'] / 1024:.0f} MB | {r['diff'] / 1024:.0f} MB |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="TREE or TREE:ROUNDS")
    ap.add_argument("--out", default=str(HERE / "results" / "fingerprint.md"))
    ap.add_argument("--with", dest="also", action="append", default=[],
                    help="results JSON of an earlier run to include in the table (a tree measured separately)")
    args = ap.parse_args()
    compile_ctxpack()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXPACK_")}
    env["PYTHONPATH"] = str(REPO)
    results = []
    for spec in args.trees:
        tree, _, n = spec.rpartition(":") if ":" in spec else (spec, "", "5")
        results.append(bench_tree(os.path.abspath(tree), int(n), env))
    for extra in args.also:
        results.extend(json.loads(Path(extra).read_text()))
    results.sort(key=lambda r: r["entries"])
    text = table(results)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
