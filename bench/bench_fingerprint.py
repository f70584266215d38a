"""Cold vs warm `ctxpack fingerprint` on a generated tree, next to a bare walk.

Usage::

    python bench/gen_tree.py /tmp/ctxpack-bench/tree-full          # once
    python bench/bench_fingerprint.py /tmp/ctxpack-bench/tree-full [--runs 5]

For each run: a fresh, empty index (CTXPACK_CACHE_DIR in a temp dir), one
cold `fingerprint` (every file hashed; also once with CTXPACK_HASH_WORKERS=1
to show what the hashing threads save), then warm runs (nothing changed:
0 files hashed), and `ctxpack ls` (the walk alone: the floor of a warm run).
All are subprocesses (interpreter start-up included) on a warm page cache.
Reports medians, files/s and GB/s cold, warm/cold ratio and the index size
per entry; writes bench/results/fingerprint.md.
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
sys.path.insert(0, str(HERE))

from benchutil import cpu_model  # noqa: E402


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    return time.perf_counter() - t, p.stdout


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "fingerprint.md"))
    args = ap.parse_args()
    ctxpack = shutil.which("ctxpack") or "ctxpack"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CTXPACK_")}
    cold, cold1, warm, walk, hashed_warm = [], [], [], [], []
    stats: dict[str, int] = {}
    index_bytes = 0
    # warm the page cache
    subprocess.run([ctxpack, "ls", args.tree], stdout=subprocess.DEVNULL, check=True, env=base_env)
    for _ in range(args.runs):
        cache = tempfile.mkdtemp(prefix="ctxpack-fpbench-")
        env = dict(base_env, CTXPACK_CACHE_DIR=cache)
        t, out = run([ctxpack, "fingerprint", "--json", args.tree], env)
        cold.append(t)
        stats = json.loads(out)
        t, out = run([ctxpack, "fingerprint", "--json", args.tree], env)
        warm.append(t)
        w = json.loads(out)
        hashed_warm.append(w["hashed"])
        assert w["fingerprint"] == stats["fingerprint"]
        t, _ = run([ctxpack, "ls", args.tree], env)
        walk.append(t)
        single = tempfile.mkdtemp(prefix="ctxpack-fpbench-")
        t, _ = run([ctxpack, "fingerprint", args.tree], dict(base_env, CTXPACK_CACHE_DIR=single, CTXPACK_HASH_WORKERS="1"))
        cold1.append(t)
        shutil.rmtree(single, ignore_errors=True)
        index_bytes = sum(f.stat().st_size for f in Path(cache).iterdir())
        shutil.rmtree(cache, ignore_errors=True)
    c, w, lsw = statistics.median(cold), statistics.median(warm), statistics.median(walk)
    rows = [
        f"# `ctxpack fingerprint`: cold vs warm ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; load {os.getloadavg()}",
        f"- tree: `{args.tree}`: {stats['entries']:,} entries, {stats['files']:,} files, {stats['bytes'] / 1e9:.2f} GB",
        f"- {args.runs} runs, each with a fresh index; medians (min–max) of wall seconds, subprocesses, warm page cache",
        "",
        "| run | wall | files hashed | rate |",
        "|---|---:|---:|---|",
        f"| cold (empty index) | {c:.2f} s ({min(cold):.2f}–{max(cold):.2f}) | {stats['hashed']:,} | "
        f"{stats['hashed'] / c:,.0f} files/s, {stats['hashed_bytes'] / c / 1e9:.2f} GB/s |",
        f"| cold, hashing in one thread | {statistics.median(cold1):.2f} s ({min(cold1):.2f}–{max(cold1):.2f}) | {stats['hashed']:,} | "
        f"threads save {1 - c / statistics.median(cold1):.0%} |",
        f"| warm (nothing changed) | {w:.2f} s ({min(warm):.2f}–{max(warm):.2f}) | {max(hashed_warm)} | warm/cold = {w / c:.2f} |",
        f"| bare walk (`ctxpack ls`) | {lsw:.2f} s ({min(walk):.2f}–{max(walk):.2f}) | – | warm/walk = {w / lsw:.2f} |",
        "",
        f"Index size: {index_bytes / 1e6:.1f} MB for {stats['files']:,} files = {index_bytes / max(1, stats['files']):.0f} bytes per entry.",
        "",
    ]
    text = "\n".join(rows)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
