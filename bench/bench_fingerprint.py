"""`ctxpack fingerprint` / `snapshot` / `diff` / `size` against the commands
that bound them (issue 17), on generated trees.

Usage::

    python bench/gen_tree.py /tmp/ctxpack-bench/tree-small --small       # once per tree
    python bench/gen_tree.py /tmp/ctxpack-bench/tree-full
    python bench/gen_tree.py /tmp/ctxpack-bench/tree-1m --files 1000000 --no-big
    python bench/bench_fingerprint.py            # tree-small:7, tree-full:5, bare-1m:3 (make it with --bare once)
    python bench/bench_fingerprint.py /tmp/t10k:7 /tmp/t100k:5
    python bench/bench_fingerprint.py --rss-only # peak RSS curve only (load-independent)
    python bench/bench_fingerprint.py --rss-only --bare /tmp/b10k:10000 --bare /tmp/b1m:1000000

``TREE:ROUNDS`` (default 5 rounds).  Every ctxpack command gets
``--ignore-file`` of an empty file: the full context, whatever
``.dockerignore`` another benchmark left in a shared tree, the same bytes
tar reads.  Per tree, each round runs every
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
Writes a markdown table (``--out``) and the raw runs as JSON next to it,
ending with the peak RSS of each command by entry count (the curve issue 17
asks for: at most 64 MB at 100k entries, growing sub-linearly).

``--rss-only``: per tree, one cold and one warm ``fingerprint``, one
``snapshot`` and one ``diff``, no peers and no times; peak RSS does not
depend on the machine's load, so this can run any time
(``--out`` default then ``results/fingerprint-rss.md``).
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
# The 1M point: entries with empty files (--bare); the 9 GB tree-1m does not stay in the page cache here.
DEFAULT_TREES = ["/tmp/ctxpack-bench/tree-small:7", "/tmp/ctxpack-bench/tree-full:5", "/tmp/ctxpack-bench/bare-1m:3"]
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


def ours(command: str, tree: str, *args: str) -> list[str]:
    """A ctxpack command on the full context of ``tree``."""
    return CTXPACK + [command, "--ignore-file", EMPTY_IGNORE, *args, tree]


EMPTY_IGNORE = ""


def warm_up(tree: str, wenv: dict[str, str]) -> dict:
    """Page cache, and the warm index: a cold run, a second run that stores
    a checkable state, a snapshot.  The first run's JSON."""
    subprocess.run("tar -cf - . | cat > /dev/null", shell=True, cwd=tree, check=True)
    _, _, first = timed(ours("fingerprint", tree, "--json"), wenv)
    time.sleep(0.2)
    timed(ours("fingerprint", tree), wenv)
    timed(ours("snapshot", tree), wenv)
    return json.loads(first)


def bare_tree(root: str, entries: int) -> str:
    """A tree of about ``entries`` entries with empty files (made once; a
    ``.bare-tree`` marker holds the count): the shape of a package tree
    (``pkgN/libM/fileK.js``, 50 files a directory) with siblings that sort
    before a directory's contents (``libM.js``, ``libM-old/``), so that the
    fingerprint's reordering works as on a real tree.  For peak RSS, which
    depends on the entries, not their bytes: a 1M-entry tree of real
    content does not stay in this machine's page cache."""
    marker = os.path.join(root, ".bare-tree")
    try:
        with open(marker) as f:
            if int(f.read()) == entries:
                return root
    except (OSError, ValueError):
        pass
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    with open(os.path.join(root, "Dockerfile"), "w") as f:
        f.write("FROM scratch\nCOPY . /app\n")
    made, flags = 1, os.O_WRONLY | os.O_CREAT | os.O_EXCL
    pkg = 0
    while made < entries:
        p = os.path.join(root, f"pkg{pkg}")
        os.mkdir(p)
        made += 1
        for lib in range(20):
            d = os.path.join(p, f"lib{lib}")
            os.mkdir(d)
            os.close(os.open(d + ".js", flags))
            made += 2
            for k in range(50):
                os.close(os.open(os.path.join(d, f"file{k}.js"), flags))
            made += 50
            if lib % 5 == 0:
                os.mkdir(d + "-old")
                os.close(os.open(os.path.join(d + "-old", "index.js"), flags))
                made += 2
            if made >= entries:
                break
        pkg += 1
    with open(marker, "w") as f:
        f.write(str(entries))
    return root


def rss_tree(tree: str, env: dict[str, str]) -> dict:
    """Peak RSS only: cold (empty index), then warm fingerprint, snapshot, diff."""
    warm_cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-rss-")
    wenv = dict(env, CTXPACK_CACHE_DIR=warm_cache)
    try:
        rss: dict[str, int] = {}
        _, rss["cold"], out = timed(ours("fingerprint", tree, "--json"), wenv)
        facts = json.loads(out)
        time.sleep(0.2)
        timed(ours("fingerprint", tree), wenv)  # the state a warm run can trust
        _, rss["warm"], out = timed(ours("fingerprint", tree, "--json"), wenv)
        assert json.loads(out)["hashed"] == 0, out
        _, rss["snapshot"], _ = timed(ours("snapshot", tree), wenv)
        _, rss["diff"], _ = timed(ours("diff", tree), wenv)
        log(f"{tree}: {facts['entries']:,} entries, peak RSS " + ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in rss.items()))
        return {"tree": tree, "entries": facts["entries"], "files": facts["files"], "bytes": facts["bytes"],
                "rss_kb": rss}
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)


def bench_tree(tree: str, rounds: int, env: dict[str, str]) -> dict:
    warm_cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-warm-")
    wenv = dict(env, CTXPACK_CACHE_DIR=warm_cache)
    facts = warm_up(tree, wenv)
    runs: dict[str, list[tuple[float, int]]] = {}
    colds: list[str] = []

    def cold() -> tuple[float, int, str]:
        cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-cold-")
        colds.append(cache)
        try:
            return timed(ours("fingerprint", tree, "--json"), dict(env, CTXPACK_CACHE_DIR=cache))
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    commands = {
        "tar": lambda: timed("tar -cf - . | cat > /dev/null", env, cwd=tree),
        "cold": cold,
        "find": lambda: timed(["find", tree, "-printf", "%s %T@ %i\\n"], env),
        "warm": lambda: timed(ours("fingerprint", tree, "--json"), wenv),
        "snapshot": lambda: timed(ours("snapshot", tree), wenv),
        "diff": lambda: timed(ours("diff", tree), wenv),
        "ls-excluded": lambda: timed(ours("ls", tree, "--excluded"), env),
        "size": lambda: timed(ours("size", tree, "--json"), env),
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
    lines += rss_curve(results)
    return "\n".join(lines)


def rss_curve(results: list[dict]) -> list[str]:
    """Peak RSS by entry count, and how it grows between the sizes (issue 17:
    <= 64 MB at 100k entries, growing sub-linearly)."""
    lines = ["## Peak RSS by entry count", "",
             "| entries | cold | warm | snapshot | diff | cold: MB per 10x entries |", "|---:|---:|---:|---:|---:|---:|"]
    prev = None
    for res in results:
        r = res["rss_kb"]
        growth = ""
        if prev is not None:
            import math

            decades = math.log10(res["entries"] / prev["entries"])
            growth = f"+{(r['cold'] - prev['rss_kb']['cold']) / 1024 / decades:.1f}" if decades > 0 else ""
        lines.append(f"| {res['entries']:,} | {r['cold'] / 1024:.0f} MB | {r['warm'] / 1024:.0f} MB | "
                     f"{r['snapshot'] / 1024:.0f} MB | {r['diff'] / 1024:.0f} MB | {growth} |")
        prev = res
    hundred_k = [res for res in results if 50_000 <= res["entries"] <= 200_000]
    for res in hundred_k:
        worst = max(res["rss_kb"]["cold"], res["rss_kb"]["warm"]) / 1024
        lines.append("")
        lines.append(f"At {res['entries']:,} entries: cold and warm peak at most {worst:.0f} MB "
                     f"(target <= 64 MB: {'met' if worst <= 64 else 'NOT met'}).")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        factor = b["entries"] / a["entries"]
        grew = b["rss_kb"]["cold"] / a["rss_kb"]["cold"]
        lines.append("")
        lines.append(f"From {a['entries']:,} to {b['entries']:,} entries ({factor:.0f}x): cold peak RSS x{grew:.2f} "
                     f"({'sub-linear' if grew < factor ** 0.5 else 'NOT sub-linear'} by the test peak < entries^0.5).")
    lines.append("")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="*", help=f"TREE or TREE:ROUNDS (default: {' '.join(DEFAULT_TREES)})")
    ap.add_argument("--out", default=None, help="default results/fingerprint.md (--rss-only: results/fingerprint-rss.md)")
    ap.add_argument("--rss-only", action="store_true", help="peak RSS of one run of each command per tree, no times")
    ap.add_argument("--bare", metavar="DIR:ENTRIES", action="append", default=[],
                    help="also (--rss-only) a tree of ENTRIES entries with empty files, made in DIR once")
    ap.add_argument("--with", dest="also", action="append", default=[],
                    help="results JSON of an earlier run to include in the table (a tree measured separately)")
    args = ap.parse_args()
    compile_ctxpack()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXPACK_")}
    env["PYTHONPATH"] = str(REPO)
    global EMPTY_IGNORE
    scratch = tempfile.mkdtemp(prefix="ctxpack-fpbench-")
    EMPTY_IGNORE = os.path.join(scratch, "empty.dockerignore")
    Path(EMPTY_IGNORE).write_text("")
    results = []
    try:
        specs = list(args.trees or ([] if args.bare else DEFAULT_TREES))
        for bare in args.bare:
            where, _, count = bare.rpartition(":")
            log(f"making {where} ({int(count):,} entries) ...")
            specs.append(bare_tree(where, int(count)))
        for spec in specs:
            tree, _, n = spec.rpartition(":") if ":" in spec else (spec, "", "5")
            tree = os.path.abspath(tree)
            results.append(rss_tree(tree, env) if args.rss_only else bench_tree(tree, int(n), env))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for extra in args.also:
        results.extend(json.loads(Path(extra).read_text()))
    results.sort(key=lambda r: r["entries"])
    if args.rss_only:
        text = "\n".join([
            f"# Peak RSS of `ctxpack fingerprint` / `snapshot` / `diff` by entry count "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"- {cpu_model()}, Python {platform.python_version()}; GNU time's `%M` (the largest process of the "
            "command's tree: the forked walker counts if it is larger); full context (`--ignore-file` of an "
            "empty file); one run each; load average "
            f"{os.getloadavg()[0]:.1f} (peak RSS does not depend on it)", "",
            *(f"- `{res['tree']}`: {res['entries']:,} entries, {res['files']:,} files, {res['bytes'] / 1e9:.2f} GB"
              for res in results), "",
            *rss_curve(results)])
    else:
        text = table(results)
    print(text)
    out = Path(args.out or HERE / "results" / ("fingerprint-rss.md" if args.rss_only else "fingerprint.md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
